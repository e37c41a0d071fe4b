"""The sync engine: pull the change feed, scan the folder, plan, execute, repeat until quiet.

``Engine.sync_once`` is one complete two-way sync (``drive-sync run --once``); the daemon calls
it whenever the watcher or the long poll says something changed. The decisions are made by the
pure :func:`syncclient.planner.plan`; this module only gathers the three trees and carries out
the operations, writing the state database *after* each effect is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import json
import logging
import os
import posixpath
import stat
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from driveproto.blocks import content_checksum
from driveproto.names import name_key

from . import names
from .config import MARKER, Config
from .errors import ApiError, AuthError, FolderMissing
from .ignore import Ignore, is_litter
from .links import TARGET_MAX, link_content, resolves_inside, symlink_stays_inside
from .localtree import LocalFile, Scan, hash_local, rename_no_replace, scan, stat_trusted
from .planner import Node, Op, conflict_name, plan, same
from .state import State, SyncedEntry
from .transfer import (
    BATCH_DOWNLOAD_MAX_FILE_BYTES,
    SMALL_FILE_BYTES,
    BatchItem,
    FileChanged,
    Uploaded,
    download_small,
    download_to_temp,
    read_local_block,
    temp_path_for,
    upload_batch,
    upload_file,
    verified_small,
    write_from_local,
)

log = logging.getLogger(__name__)

MAX_ROUNDS = 12
# Files per upload batch. The batch's upload grant names every file and travels in the block
# URL's query string, which the server's HTTP parser limits to 8190 bytes: 100 ids fit.
BATCH_FILES = 100
PARALLEL_FILES = 8  # downloads in flight at once
PARALLEL_BATCHES = 3  # upload batches in flight at once
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
PROGRESS_LOG_SECONDS = 2.0  # how often progress reaches the log and `drive-sync status`
PROGRESS_FLOOR_SECONDS = 0.05  # the shortest period any setting can give a progress reporter
NOT_HERE = "not synced to this computer"
NOT_ON_WINDOWS = "Windows computers will not get it"
OWN_WRITE_SECONDS = 60.0  # how long the watcher may take to report one of our own writes
UP_KINDS = frozenset({"upload", "mkdir_remote", "delete_remote", "move_remote"})
DOWN_KINDS = frozenset({"download", "mkdir_local", "delete_local", "move_local", "conflict"})


def progress_period() -> float:
    """The reporters' period, never below the floor: a reporter wakes on a timer, and a zero
    period would turn it into a loop that logs as fast as it can and starves every transfer."""
    return max(PROGRESS_LOG_SECONDS, PROGRESS_FLOOR_SECONDS)


class _Progress:
    """Progress of one long transfer: a bar on a terminal, otherwise a log line every 2 s; and
    ``drive-sync status`` (read from another terminal) every 2 s either way."""

    def __init__(self, engine: Engine, verb: str, path: str, total: int) -> None:
        self.engine, self.verb, self.path, self.total = engine, verb, path, total
        self.done = 0
        self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.verb == "uploading":
            self.engine.bytes_sent += n
        else:
            self.engine.bytes_fetched += n
        if self.total < PROGRESS_MIN_BYTES:
            return
        if self.tty:
            share = min(1.0, self.done / self.total)
            bar = "#" * int(share * 30)
            end = "\n" if self.done >= self.total else ""
            sys.stderr.write(f"\r{self.verb} {self.path} [{bar:<30}] {share:4.0%}{end}")
            sys.stderr.flush()
        now = time.monotonic()
        if now - self.last >= progress_period():
            self.last = now
            text = (f"{self.verb} {self.path}: {self.done / 2**20:.1f} of "
                    f"{self.total / 2**20:.1f} MiB transferred")
            if not self.tty:
                log.info("%s", text)
            self.engine._status("syncing", progress=text)


class Paused(Exception):
    """The deletion guard stopped the sync; ``drive-sync resume`` lets it go on."""


@dataclass
class RoundResult:
    """What one round executed (or deferred to the next round) and what failed."""

    ops: list[Op] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class SyncResult:
    rounds: int = 0
    done: list[Op] = field(default_factory=list)
    pending: list[Op] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def in_sync(self) -> bool:
        return not self.pending and not self.errors


class Engine:
    """Owns one folder's sync. Built from its parts (``remote``, ``state``) so tests can too."""

    def __init__(self, config: Config, state: State, remote: Any,
                 on_status: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config, self.state, self.remote = config, state, remote
        self.root = config.root
        self.lock = asyncio.Lock()
        self.on_status = on_status
        self.bytes_sent = 0
        self.bytes_fetched = 0
        self._sources: dict[str, tuple[Path, int]] | None = None
        self._single: dict[str, str] = {}  # checksum of a one-block file -> its block hash
        self._prefetched: dict[str, bytes] = {}  # file id -> content, from a batch download
        # What this engine last did to a path below the root (spelled as the OS spells it):
        # when, and the resulting (size, mtime, inode) — or ("dir", inode), or None if removed.
        self._own: dict[str, tuple[float, tuple[Any, ...] | None]] = {}
        self.scanned_folders: list[tuple[Path, int]] = []  # the folders the last scan saw
        self._clock_failed = False  # said once in the log
        self._links_said: dict[str, str] = {}  # symlinks left alone, as last logged
        self._modes: dict[str, int] = {}  # path -> mode of the file a conflict renamed away
        # When the current round's scan began, on the folder's file system clock (the one that
        # stamps mtimes); every content recorded in a round was read after it. None: unknown.
        self._scan_started_ns: int | None = None

    # --- the daemon's own writes ------------------------------------------------------------------

    def is_own_write(self, rel: str) -> bool:
        """Is the item at ``rel`` exactly as this engine left it moments ago? The watcher asks
        (from its own thread) so that files a sync downloads do not wake the next round. A user's
        edit since changes size, mtime or inode, so it is never mistaken for ours."""
        mark = self._own.get(rel)
        if mark is None or time.monotonic() - mark[0] > OWN_WRITE_SECONDS:
            return False
        try:
            st = os.lstat(self.root / rel.lstrip("/"))
        except FileNotFoundError:
            return mark[1] is None
        except OSError:
            return False
        return mark[1] == _own_key(st)

    def _wrote(self, target: Path, st: os.stat_result | None) -> None:
        self._own[str(target)[len(str(self.root)):]] = (
            time.monotonic(), None if st is None else _own_key(st))

    def _forget_old_writes(self) -> None:
        cutoff = time.monotonic() - OWN_WRITE_SECONDS
        # A new dict, swapped in whole: the watcher's thread may be reading the old one.
        self._own = {k: v for k, v in self._own.items() if v[0] >= cutoff}

    # --- guards ---------------------------------------------------------------------------------

    def check_folder(self) -> None:
        """Stop with a clear error if the folder or its marker is gone (an unmounted disk, a
        wrong path): an empty folder must never look like "the user deleted everything"."""
        if not self.root.is_dir():
            raise FolderMissing(f"the sync folder {self.root} does not exist; not syncing "
                                "(nothing was deleted on the server)")
        if not (self.root / MARKER).is_dir():
            raise FolderMissing(f"the sync folder {self.root} has no {MARKER} marker; it may be "
                                "a different or unmounted folder, so nothing is synced. If it "
                                f"is right, create the folder {self.root / MARKER} to go on")

    # --- the remote tree from the change feed ---------------------------------------------------

    async def pull(self, wait_seconds: float = 0) -> int:
        """Apply the change feed to the remote tree cache until it is current; the number of
        changes applied. With ``wait_seconds`` the first request is a long poll."""
        applied = 0
        while True:
            cursor = self.state.get("cursor") or "0"
            answer = await self.remote.changes(cursor, wait_seconds)
            wait_seconds = 0
            if self.state.get("cursor") not in (cursor, None) and cursor != "0":
                continue  # someone else advanced the cursor meanwhile: this answer is stale
            with self.state.transaction():
                if answer.get("reset"):
                    self.state.clear_remote()
                    self.state.set("cursor", "0")
                    continue
                if cursor == "0":
                    self.state.clear_remote()  # a full listing starts from nothing
                for change in answer["changes"]:
                    self._apply_change(change)
                    applied += 1
                self.state.set("cursor", answer["next_cursor"])
            if not answer.get("has_more"):
                return applied

    def _apply_change(self, c: dict[str, Any]) -> None:
        st = self.state
        known = st.remote_path_of(c["file_id"])
        if c["action"] == "delete":
            where = known or c.get("old_path") or c["path"]
            st.db.execute("DELETE FROM remote WHERE file_id = ?", (c["file_id"],))
            st.drop_remote(where)
            return
        if known is not None and known != c["path"]:
            st.move_remote(known, c["path"])
        current = st.remote_by_path(c["path"])
        if current is not None and current.file_id == c["file_id"] and \
                current.version > c["version"]:
            return  # an older state than one we recorded ourselves
        st.put_remote(c["path"], Node(bool(c["is_directory"]), c.get("checksum"), c["file_id"],
                                      c["version"], None, c.get("size") or 0,
                                      bool(c.get("executable")), bool(c.get("symlink"))))

    # --- planning -------------------------------------------------------------------------------

    async def gather(self, read_clock: bool = False
                     ) -> tuple[Scan, dict[str, Node], dict[str, Node], dict[str, SyncedEntry]]:
        """The three trees (and the synced records). ``read_clock`` when the round will act on
        them: it writes to the folder (``_fs_clock``), which a dry run must not."""
        self.check_folder()
        ignore = await asyncio.to_thread(Ignore, self.root)
        synced_entries = self.state.synced_entries()
        self._scan_started_ns = await asyncio.to_thread(self._fs_clock) if read_clock else None
        local = await asyncio.to_thread(scan, self.root, synced_entries, ignore,
                                        self._scan_started_ns, self.config.sync_symlinks)
        remote_all = self.state.remote_tree()
        for p in await asyncio.to_thread(self._ignored_only, local, synced_entries, remote_all,
                                         ignore):
            for q in [q for q in local.items if q == p or q.startswith(p + "/")]:
                del local.items[q]
        # The daemon checks that the watcher watches every one of these.
        self.scanned_folders = [(self.root, self.root.stat().st_ino),
                                *((self._os_path(p, local), f.inode)
                                  for p, f in local.items.items() if f.is_dir)]
        remote = {p: n for p, n in remote_all.items() if not ignore(p, is_dir=n.is_dir)}
        synced = {p: e.node() for p, e in synced_entries.items()
                  if not ignore(p, is_dir=e.is_dir)}
        if read_clock and len(synced) < len(synced_entries):
            # An ignored path is no longer synced at all: had its record stayed, deleting it
            # here (or there) while ignored and then removing the pattern would read as "deleted
            # on this side" and delete it on the other. Without it, un-ignoring finds two items
            # with no common past: the same content is recorded, different content kept twice.
            with self.state.transaction():
                for p in synced_entries.keys() - synced.keys():
                    self.state.drop_synced(p)
        # A path we could not read is left alone on both sides until it can be read, and so is
        # everything below it: a folder we cannot list must not look like emptied.
        if local.problems:
            def troubled(path: str) -> bool:
                while path:
                    if path in local.problems:
                        return True
                    path = path.rpartition("/")[0]
                return "/" in local.problems  # the root itself could not be listed
            synced = {p: n for p, n in synced.items() if not troubled(p)}
            remote = {p: n for p, n in remote.items() if not troubled(p)}
        # Names this computer cannot create stay on the server, alone (never deleted there).
        if names.LOCAL_RULES is not names.posix_problem:
            here = {p: why for p in remote if (why := names.uncreatable_here(p)) is not None}
            # An item renamed on the server to such a name keeps its copy here, as it is, no
            # longer synced: it must not be deleted as if it were gone, nor sent back.
            # (Unless the server has another item at the old path now: that one comes here.)
            renamed = {remote[p].file_id: p for p in here if remote[p].file_id}
            kept = {e.path: renamed[e.file_id] for e in synced_entries.values()
                    if e.file_id in renamed and renamed[e.file_id] != e.path
                    and e.path not in remote}
            for old, new in kept.items():
                here[old] = (f"renamed on the server to {new}, a name this computer cannot "
                             f"create: the copy here is kept as it was and is {NOT_HERE}")
            def left_alone(path: str) -> bool:
                while path:
                    if path in here:
                        return True
                    path = path.rpartition("/")[0]
                return False
            remote = {p: n for p, n in remote.items() if not left_alone(p)}
            synced = {p: n for p, n in synced.items() if not left_alone(p)}
            for p in [p for p in local.items if left_alone(p)]:
                del local.items[p]
        else:
            here = {}
        self._name_notices(here, NOT_HERE)
        elsewhere = {p: f"{why}: Windows computers will not get it" for p in local.items
                     if (why := names.windows_problem(p.rpartition("/")[2])) is not None}
        self._name_notices(elsewhere, NOT_ON_WINDOWS)
        return local, remote, synced, synced_entries

    def _ignored_only(self, local: Scan, synced: Mapping[str, SyncedEntry],
                      remote: Mapping[str, Node], ignore: Ignore) -> list[str]:
        """New folders here, on neither the server nor the synced tree, that hold no file the
        scan syncs but something ignored: left alone, not created on the server (blocking).
        Such a folder is what stays of a folder deleted elsewhere that held ignored files
        (``_remove_synced_part``); creating it again would undo that deletion everywhere."""
        with_files: set[str] = set()
        for p, item in local.items.items():
            if not item.is_dir:
                while p:
                    p = p.rpartition("/")[0]
                    with_files.add(p)
        out: list[str] = []
        for p, item in local.items.items():
            if not item.is_dir or p in with_files or p in synced or p in remote:
                continue
            if any(p.startswith(q + "/") for q in out):
                continue
            if _holds_ignored(self._os_path(p, local), p, ignore):
                out.append(p)
        return out

    def _name_notices(self, current: dict[str, str], suffix: str) -> None:
        """Keep the notices that end in ``suffix`` equal to ``current`` (a renamed or deleted
        item's notice goes away)."""
        notices = json.loads(self.state.get("notices") or "{}")
        kept = {p: m for p, m in notices.items() if not m.endswith(suffix)}
        if {**kept, **current} != notices:
            self.state.set("notices", json.dumps({**kept, **current}))

    async def _keep_name_twins(self, local: Scan) -> bool:
        """Two items in one folder whose names the server takes for one (``Index.html`` beside
        ``index.html``, or a name in NFC beside it in NFD) are both kept, as Dropbox does: the
        one the scan left out is renamed on disk (``localtree.rename_twins``) and syncs under
        its new name, with a notice that lasts while it is there. True if anything was renamed:
        the caller scans again."""
        from .localtree import TWIN_NOTICE, rename_twins

        renamed = await asyncio.to_thread(rename_twins, self.root, local.twins) \
            if local.twins else []
        notices = json.loads(self.state.get("notices") or "{}")
        self._name_notices({**{p: m for p, m in notices.items()
                               if m.endswith(TWIN_NOTICE) and p in local.items},
                            **{r.path: r.notice for r in renamed}}, TWIN_NOTICE)
        return bool(renamed)

    async def plan(self, to_execute: bool = False) -> tuple[list[Op], Scan]:
        """This round's operations and the scan they were planned on. ``to_execute``: the
        round goes on to carry them out (not a dry run); the scan then reads the file system
        clock, and the new stat of files found unchanged in content is recorded."""
        local, remote, synced, entries = await self.gather(read_clock=to_execute)
        if to_execute and await self._keep_name_twins(local):
            local, remote, synced, entries = await self.gather(read_clock=True)  # new names
        day = datetime.date.today().isoformat()
        ops = plan(local.tree(), remote, synced, self.config.device_name, day)
        ops = self._outside_shares(ops, remote, synced)
        if to_execute:
            self._refresh_stats(local, entries, ops)
        return ops, local

    def _outside_shares(self, ops: list[Op], remote: Mapping[str, Node],
                        synced: Mapping[str, Node]) -> list[Op]:
        """Keep local what can no longer go to the server: items under ``/Shared with me/X``
        when X is not (or no longer) shared with this user. The owner took the folder back;
        whatever the user changed there stays on this computer, unsynced, and nothing tries to
        upload it again and again."""
        kept: list[Op] = []
        for op in ops:
            mount = _mount_of(op.path)
            if op.kind in TO_SERVER and mount is not None and mount not in remote:
                self.notice(op.path, "kept on this computer only: the folder is no longer"
                            " shared with you")
                if op.path in synced:
                    kept.append(Op("forget", op.path, "no longer shared; kept locally"))
                continue
            kept.append(op)
        return kept

    def notice(self, path: str, message: str) -> None:
        """Something ``drive-sync status`` should tell the user (not an error)."""
        notices = json.loads(self.state.get("notices") or "{}")
        if notices.get(path) != message:
            notices[path] = message
            self.state.set("notices", json.dumps(notices))

    def check_deletions(self, ops: list[Op]) -> None:
        """The mass-deletion guard: pause when one round would delete too much on the server."""
        synced = self.state.synced_entries()
        files = [p for p, e in synced.items() if not e.is_dir]
        if len(files) < self.config.delete_guard_min_files:
            return
        doomed: set[str] = set()
        for op in ops:
            if op.kind == "delete_remote":
                doomed.update(p for p in files if p == op.path or p.startswith(op.path + "/"))
        if len(doomed) <= self.config.delete_guard_share * len(files):
            return
        if self.state.get("resume") == "1":
            self.state.set("resume", None)
            self.state.set("paused", None)
            return
        reason = (f"{len(doomed)} of {len(files)} synced files were deleted in the folder; "
                  "run `drive-sync resume` to delete them on the server too")
        self.state.set("paused", reason)
        raise Paused(reason)

    # --- one sync -------------------------------------------------------------------------------

    async def sync_once(self, dry_run: bool = False, pull: bool = True) -> SyncResult:
        """Rounds of pull → scan → plan → execute until the plan is empty (or only failing
        operations are left). ``dry_run`` plans once and changes nothing."""
        result = SyncResult()
        async with self.lock:
            self._forget_old_writes()
            for _ in range(MAX_ROUNDS):
                if pull:
                    await self.pull()
                ops, local = await self.plan(to_execute=not dry_run)
                if result.rounds == 0 and local.temp_files and not dry_run:
                    # Left by a download that was killed: never visible under a real name,
                    # and no download of ours is running (we hold the lock).
                    for tmp in local.temp_files:
                        await asyncio.to_thread(tmp.unlink, missing_ok=True)
                result.rounds += 1
                self.state.clear_errors(keep=[*local.problems, *result.errors])
                for p, why in local.problems.items():
                    self.state.set_error(p, why)
                    if not why.startswith("symlink"):
                        result.errors[p] = why
                    elif self._links_said.get(p) != why:  # not an error: said once, in status
                        self._links_said[p] = why
                        log.info("%s: %s", p, why)
                if not ops and not dry_run:
                    # Nothing left to do: an operation that failed in an earlier round was
                    # resolved since (else it would be planned again); only what this scan
                    # found wrong is still wrong.
                    result.errors = {p: why for p, why in result.errors.items()
                                     if p in local.problems}
                if not ops or dry_run:
                    result.pending = ops
                    break
                self.check_deletions(ops)
                self._status("syncing", pending=len(ops),
                             uploads=sum(op.kind in UP_KINDS for op in ops),
                             downloads=sum(op.kind in DOWN_KINDS for op in ops))
                done = await self.execute(ops, local)
                result.done += done.ops
                for op in done.ops:
                    result.errors.pop(op.path, None)
                result.errors.update(done.errors)
                if not done.ops:
                    result.pending = ops  # only failures left: report them
                    break
            else:
                result.pending = (await self.plan())[0]
        self._status("idle" if result.in_sync else "error", pending=len(result.pending),
                     uploads=sum(op.kind in UP_KINDS for op in result.pending),
                     downloads=sum(op.kind in DOWN_KINDS for op in result.pending),
                     errors=result.errors, progress=None)
        return result

    def _status(self, state: str, **extra: Any) -> None:
        if self.on_status is not None:
            self.on_status({"state": state, **extra})

    def _fs_clock(self) -> int | None:
        """Now, as the folder's file system stamps mtimes: a network file system may use its
        server's clock, and Linux its coarse clock. Read by touching a file of ours (as git
        compares with its index file's mtime). None if it cannot be: nothing recorded then is
        trusted on its mtime later."""
        clock = self.root / MARKER / "clock"
        try:
            try:
                os.utime(clock)
            except FileNotFoundError:
                clock.touch()
            return clock.stat().st_mtime_ns
        except OSError as exc:
            if not self._clock_failed:
                self._clock_failed = True
                log.warning("cannot write %s (%s): files will be hashed more often", clock,
                            exc.strerror or exc)
            return None

    def _put_synced(self, entry: SyncedEntry) -> None:
        """Record a synced entry; a file's content as read in this round, so after this round's
        scan began (what lets a later scan trust its unchanged mtime, see ``stat_trusted``)."""
        if not entry.is_dir:
            entry = replace(entry, verified_ns=self._scan_started_ns or 0)
        self.state.put_synced(entry)

    def _refresh_stats(self, local: Scan, synced: Mapping[str, SyncedEntry],
                       ops: list[Op]) -> None:
        """Files the scan found with their synced content but could not trust on their stat
        (touched, saved unchanged, or last read within a tick of their mtime): record what the
        scan saw, so the next scan need not hash them again. Paths this round operates on are
        left to it."""
        now = self._scan_started_ns
        if now is None:
            return
        busy = {p for op in ops for p in (op.path, op.src) if p}
        fresh = []
        for path, item in local.items.items():
            entry = synced.get(path)
            if entry is None or entry.is_dir or item.is_dir or path in busy or \
                    item.checksum != entry.checksum:
                continue
            if (item.size, item.mtime_ns, item.inode) == (entry.size, entry.mtime_ns, entry.inode) \
                    and (stat_trusted(entry.mtime_ns, entry.verified_ns, now) or
                         not stat_trusted(item.mtime_ns, now, now)):
                continue  # trusted already, or would still not be: nothing to write
            fresh.append(replace(entry, size=item.size, mtime_ns=item.mtime_ns,
                                 inode=item.inode))
        if fresh:
            with self.state.transaction():
                for entry in fresh:
                    self._put_synced(entry)

    # --- execution ------------------------------------------------------------------------------

    async def execute(self, ops: list[Op], local: Scan) -> RoundResult:
        """Carry out one round's operations in plan order. Small uploads are grouped into
        batches and downloads run several at a time (each touches its own path; parents are
        created as needed); anything else first waits for those groups to finish. A round
        that takes a while reports how far it got every 2 s (log and ``status``)."""
        out = RoundResult()
        reporter = asyncio.create_task(self._report_round(out, len(ops)))
        try:
            await self._execute_round(ops, local, out)
        finally:
            reporter.cancel()
        return out

    async def _report_round(self, out: RoundResult, total: int) -> None:
        """Wakes on a timer and reports only a count that moved: a round that waits on one
        big file says so once, not every period (the file's own progress says how it goes)."""
        reported = -1
        while True:
            await asyncio.sleep(progress_period())
            done = len(out.ops)
            if done == reported:
                continue
            reported = done
            text = f"{done} of {total} operation(s) done"
            log.info("%s", text)
            self._status("syncing", progress=text)

    async def _execute_round(self, ops: list[Op], local: Scan, out: RoundResult) -> None:
        self._sources = None
        uploads: list[Op] = []
        downloads: list[Op] = []
        in_flight: set[asyncio.Task[None]] = set()

        async def upload_group(group: list[Op]) -> None:
            try:
                await self._upload_many(group, local, out)
            except ApiError as exc:
                for op in group:
                    out.errors[op.path] = str(exc)

        async def start_uploads() -> None:
            # A few batches in flight at once: the server spends most of a batch storing
            # blocks and committing, so overlapping them keeps it busy.
            if uploads:
                in_flight.add(asyncio.create_task(upload_group(list(uploads))))
                uploads.clear()
            while len(in_flight) >= PARALLEL_BATCHES:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                in_flight.difference_update(done)
                for t in done:
                    t.result()

        async def flush() -> None:
            await start_uploads()
            while in_flight:
                done, _ = await asyncio.wait(in_flight)
                in_flight.difference_update(done)
                for t in done:
                    t.result()
            if downloads:
                group = list(downloads)
                downloads.clear()
                await self._prefetch_small(group)
                sem = asyncio.Semaphore(PARALLEL_FILES)

                async def one(op: Op) -> None:
                    async with sem:
                        await self._guarded(op, local, out)

                await asyncio.gather(*(one(op) for op in group))
                self._prefetched = {}

        for op in ops:
            if op.kind == "upload" and self._batchable(op, local):
                uploads.append(op)
                if len(uploads) >= BATCH_FILES:
                    await start_uploads()
            elif op.kind == "download":
                downloads.append(op)
                if len(downloads) >= BATCH_FILES:
                    await flush()
            else:
                if op.kind not in ("upload", "mkdir_remote", "mkdir_local"):
                    await flush()
                await self._guarded(op, local, out)
        await flush()

    async def _guarded(self, op: Op, local: Scan, out: RoundResult) -> None:
        """Run one operation; a per-file failure is recorded, not raised (``Offline`` and
        other fatal errors still end the round)."""
        try:
            await self._execute_one(op, local, out)
        except ApiError as exc:
            if exc.status == 403 and op.kind in ("delete_remote", "move_remote"):
                # A view-only shared item: the server keeps it, so it comes back here.
                gone = op.src if op.kind == "move_remote" else op.path
                assert gone is not None
                self.state.drop_synced(gone)
                self.notice(gone, "shared with you to view only: restored from the server")
                out.ops.append(op)
                return
            log.warning("%s %s failed: %s", op.kind, op.path, exc)
            out.errors[op.path] = str(exc)
            self.state.set_error(op.path, str(exc))
        except (FileChanged, FileNotFoundError, PermissionError, IsADirectoryError,
                NotADirectoryError, FileExistsError) as exc:
            log.info("%s %s deferred: %s", op.kind, op.path, exc)
            out.ops.append(op)  # the next round sees the new state

    def _batchable(self, op: Op, local: Scan) -> bool:
        item = local.items.get(op.path)
        return item is not None and item.size <= self.config.batch_max_file_bytes

    def _os_path(self, path: str, local: Scan | None = None) -> Path:
        """Where ``path`` is on disk: as the scan found it spelled, or, for a path it did not
        see (about to be created), below the nearest folder it saw, as that one is spelled (a
        folder named in NFD on disk must not get an NFC twin beside it)."""
        if local is None:
            return self.root / path.lstrip("/")
        rel = local.os_paths.get(path)
        if rel is None:
            head, tail = path, ""
            while head and head not in local.os_paths:
                head, _, name = head.rpartition("/")
                tail = f"/{name}{tail}"
            rel = (local.os_paths[head] if head else "") + tail
        return self.root / rel.lstrip("/")

    async def _execute_one(self, op: Op, local: Scan, out: RoundResult) -> None:
        handler = getattr(self, "_op_" + op.kind)
        await handler(op, local)
        out.ops.append(op)
        self.state.clear_error(op.path)

    # --- operations on the server ---------------------------------------------------------------

    def _remember(self, path: str, up: Uploaded) -> None:
        node = Node(False, up.checksum, up.file_id, up.version, None, up.size, up.executable,
                    up.symlink)
        self.state.put_remote(path, node)
        self._put_synced(SyncedEntry(path, False, up.file_id, up.version, up.size,
                                     up.mtime_ns, up.inode, up.checksum, up.blocks,
                                     executable=up.executable, symlink=up.symlink))

    def _upload_target(self, op: Op) -> tuple[str | None, int | None]:
        base = op.base
        current = self.state.remote_by_path(op.path)
        if base is not None and base.file_id and current is not None and \
                current.file_id == base.file_id:
            # The server may be at a later version with the very content we synced (a restore
            # of it, a chmod undone): the edit goes on top of that one, which loses nothing
            # (both stay in the history). Any other newer version is a real race: the stale
            # base gets a 409 and the plan is made again.
            if same(current, base):
                return current.file_id, current.version
            return base.file_id, base.version
        if current is not None and not current.is_dir:
            return current.file_id, current.version
        # A new file: base version 0 means "only if nobody created it meanwhile", so a race
        # with another device becomes a 409 and then a conflicted copy, never an overwrite.
        return None, 0

    async def _op_upload(self, op: Op, local: Scan) -> None:
        file_id, base_version = self._upload_target(op)
        for attempt in range(2):
            try:
                up = await upload_file(self.remote, self._os_path(op.path, local), op.path,
                                       file_id, base_version, self.config.parallel_transfers,
                                       on_bytes=_Progress(self, "uploading", op.path,
                                                          local.items[op.path].size),
                                       receipts=self.state)
                break
            except ApiError as exc:
                if exc.status == 409 and exc.code == "version_conflict":
                    await self._lost_race(op.path)
                    return
                if exc.code == GRANT_REVOKED and attempt == 0:
                    # The grant, not the permission, ended (a share re-made, a server
                    # upgrade): a new upload-init decides, once more, right away.
                    log.info("%s: upload grant ended (%s); asking for a new one", op.path, exc)
                    continue
                if _view_only_refusal(exc):
                    await self._view_only(op.path, local)
                    return
                raise
        self._remember(op.path, up)

    async def _view_only(self, path: str, local: Scan) -> None:
        """The server refused an upload: the file is in a folder shared with us for viewing.
        The edit is kept as a conflicted copy in our own space (the root of the folder, which
        the next round uploads as our own file) and the owner's version comes back under the
        original name."""
        day = datetime.date.today().isoformat()
        copy = conflict_name("/" + posixpath.basename(path), self.config.device_name, day,
                             taken=[*local.items, *self.state.remote_tree()])
        await self._op_conflict(Op("conflict", path, "view-only shared file", copy=copy), local)
        self.notice(copy, f"your edit of {path} (shared with you to view only) was kept here")

    async def _upload_many(self, ops: list[Op], local: Scan, out: RoundResult) -> None:
        if len(ops) == 1:
            await self._guarded(ops[0], local, out)
            return
        items = []
        for op in ops:
            file_id, base_version = self._upload_target(op)
            items.append(BatchItem(op.path, self._os_path(op.path, local), file_id, base_version))
        results = await upload_batch(self.remote, items)
        for op, res in zip(ops, results, strict=True):
            if isinstance(res, Uploaded):
                self._remember(op.path, res)
                out.ops.append(op)
            elif isinstance(res, ApiError) and res.status == 409 and \
                    res.code == "version_conflict":
                await self._lost_race(op.path)
                out.ops.append(op)
            elif isinstance(res, ApiError) and _view_only_refusal(res):
                await self._view_only(op.path, local)
                out.ops.append(op)
            elif isinstance(res, ApiError):
                out.errors[op.path] = str(res)
                self.state.set_error(op.path, str(res))
            else:
                out.ops.append(op)  # changed meanwhile: next round

    async def _lost_race(self, path: str) -> None:
        """The server moved on while we uploaded (409 ``version_conflict``). Our bytes stay in
        the folder; learn the server's state and let the next round's plan decide: the same
        content is just recorded, different content becomes a conflicted copy."""
        log.info("%s changed on the server during the upload; replanning", path)
        before = self.state.remote_by_path(path)
        await self.pull()
        if self.state.remote_by_path(path) == before:
            await self._learn_own_version(path, before)

    async def _learn_own_version(self, path: str, known: Node | None) -> None:
        """The server is ahead of us and the feed said nothing: the newer version is this
        device's own (the feed leaves those out), committed by an upload whose answer never
        came back (a dropped connection, a kill). Ask the server for it. If this device
        uploaded it, its content came from this folder, so it becomes the synced record too
        (the next round sends whatever changed since on top of it, no conflicted copy of
        ourselves); anything else (a restore run from this device) is left to the plan."""
        if known is not None and known.file_id:
            file_id: str | None = known.file_id
        else:
            entry = await self._find_remote(path)
            if entry is None:
                await self._beside_server_twin(path)
                return
            file_id = entry["file_id"] if not entry["is_directory"] else None
        if file_id is None:
            return
        try:
            meta = await self.remote.metadata(file_id)
        except ApiError as exc:
            if exc.status in (403, 404):
                return
            raise
        if meta.get("path") != path or meta.get("trashed") or meta["is_directory"] or \
                meta["version"] <= (known.version if known is not None else 0):
            return
        node = Node(False, meta["checksum"], file_id, meta["version"], None, meta["size"],
                    bool(meta.get("executable")), bool(meta.get("symlink")))
        newest = (meta.get("versions") or [{}])[0]
        with self.state.transaction():
            self.state.put_remote(path, node)
            mine = self.config.device_id is not None and \
                newest.get("device_id") == self.config.device_id and \
                newest.get("version") == meta["version"] and newest.get("restored_from") is None
            if mine:
                old = self.state.synced_entries().get(path)
                # No stat: the file is hashed again next round, and its content decides.
                self.state.put_synced(SyncedEntry(path, False, file_id, meta["version"],
                                                  meta["size"], 0, old.inode if old else None,
                                                  meta["checksum"], (),
                                                  executable=node.executable,
                                                  symlink=node.symlink))
        log.info("%s: learned version %d from the server%s", path, meta["version"],
                 " (made by this device)" if mine else "")

    async def _op_mkdir_remote(self, op: Op, local: Scan) -> None:
        try:
            entry = await self.remote.mkdir(op.path)
        except ApiError as exc:
            if exc.status != 409:
                raise
            entry = await self._find_remote(op.path)
            if entry is None or not entry["is_directory"]:
                raise
        node = Node(True, None, entry["file_id"], entry["version"], None, 0)
        self.state.put_remote(op.path, node)
        item = local.items.get(op.path)
        self._put_synced(SyncedEntry(op.path, True, entry["file_id"], entry["version"], 0,
                                          item.mtime_ns if item else 0,
                                          item.inode if item else None, None, ()))

    async def _beside_server_twin(self, path: str) -> None:
        """A new file the server refuses because it has an item whose name it takes for this
        one's (``F2.TXT`` here, ``f2.txt`` there) that this computer leaves alone (a link
        leading out of the folder, say), so the scan never saw the pair: keep both, as for
        twins in one folder, by renaming this one."""
        from .localtree import CASE_CONFLICT, NameTwin, rename_twins

        parent, _, name = path.rpartition("/")
        twins = [e for e in await self.remote.list_folder(parent or "/")
                 if name_key(e["name"]) == name_key(name) and e["name"] != name]
        target = self._os_path(path)
        try:
            st = await asyncio.to_thread(target.lstat)
        except FileNotFoundError:
            return
        if not twins:
            return
        kept = str(target.parent / twins[0]["name"])[len(str(self.root)):]
        twin = NameTwin(path, str(target)[len(str(self.root)):], kept, st.st_ino,
                        stat.S_ISDIR(st.st_mode), CASE_CONFLICT)
        for renamed in await asyncio.to_thread(rename_twins, self.root, [twin]):
            self.notice(renamed.path, renamed.notice)

    async def _find_remote(self, path: str) -> dict[str, Any] | None:
        parent, _, name = path.rpartition("/")
        for e in await self.remote.list_folder(parent or "/"):
            if e["name"] == name:
                return e
        return None

    async def _op_delete_remote(self, op: Op, local: Scan) -> None:
        node = self.state.remote_by_path(op.path)
        if node is not None and node.file_id:
            try:
                await self.remote.delete(node.file_id)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        self.state.drop_remote(op.path)
        self.state.drop_synced(op.path)

    async def _links_leaving(self, src: str, dst: str, on_disk_at: str, local: Scan
                             ) -> list[tuple[str, str]]:
        """Synced symlinks at or below ``src`` whose target would lead out of the folder once
        at or below ``dst`` (a link's ``..`` means more or less from another depth): (their
        path under ``src``, their target). Their targets are read where they are on disk now,
        under ``on_disk_at``, as the scan found them spelled (an NFD name on disk). Nothing
        there, or no longer a link: nothing to carry; a link that cannot be read counts as
        leaving. Most moves carry no link: one index query, no thread."""
        links = self.state.synced_links_below(src)
        if not links:
            return []
        return await asyncio.to_thread(self._read_links_leaving, links, src, dst, on_disk_at,
                                       local)

    def _read_links_leaving(self, links: list[str], src: str, dst: str, on_disk_at: str,
                            local: Scan) -> list[tuple[str, str]]:
        out = []
        for p in links:
            try:
                target = os.readlink(self._os_path(on_disk_at + p[len(src):], local))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # not a link (any more)
                    continue
                out.append((p, "(unreadable)"))
                continue
            if not symlink_stays_inside(dst + p[len(src):], target):
                out.append((p, target))
        return out

    async def _op_move_remote(self, op: Op, local: Scan) -> None:
        assert op.src is not None
        node = self.state.remote_by_path(op.src)
        assert node is not None and node.file_id
        # A link that the move would make lead out of the folder stays here only (as the scan
        # already treats it): it leaves the server first, to the trash, so that no other
        # computer gets a link to outside its folder.
        for p, target in await self._links_leaving(op.src, op.path, op.path, local):
            gone = self.state.remote_by_path(p)
            if gone is not None and gone.file_id:
                try:
                    await self.remote.delete(gone.file_id)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
            self.state.drop_remote(p)
            self.state.drop_synced(p)
            self.notice(op.path + p[len(op.src):], f"a symbolic link to {target!r}, which "
                        "leads out of the folder from here: kept on this computer only")
        entry = await self.remote.move(node.file_id, op.path)
        self.state.move_remote(op.src, op.path)
        self.state.move_synced(op.src, op.path)
        synced = self.state.synced_entries().get(op.path)
        item = local.items.get(op.path)
        if synced is not None and item is not None:
            self._put_synced(SyncedEntry(op.path, synced.is_dir, synced.file_id,
                                              entry.get("version", synced.version), synced.size,
                                              item.mtime_ns, item.inode, synced.checksum,
                                              synced.blocks, executable=synced.executable,
                                              symlink=synced.symlink))

    # --- operations on the folder ---------------------------------------------------------------

    async def _still_as_scanned(self, path: str, local: Scan) -> bool:
        """Is the local item at ``path`` still what the scan saw (absent if it saw nothing)?
        Checked just before a download replaces it or a deletion removes it. A file modified
        within a tick of this round could be saved again, same size, without its stat showing
        it: that one is hashed again."""
        target = self._os_path(path, local)
        seen = local.items.get(path)
        try:
            st = target.lstat()
        except FileNotFoundError:
            return seen is None
        if seen is None:
            return False
        # A folder on the way, renamed away since and replaced by a symlink to it, would make
        # us delete or overwrite outside the sync folder.
        if not await asyncio.to_thread(_inside_root_unlinked, self.root, target, seen.symlink):
            return False
        if seen.is_dir:
            return stat.S_ISDIR(st.st_mode)
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (seen.size, seen.mtime_ns, seen.inode):
            return False
        now = self._scan_started_ns
        if now is not None and stat_trusted(seen.mtime_ns, now, now):
            return True
        checksum, _ = await asyncio.to_thread(hash_local, target)
        return checksum == seen.checksum

    async def _op_download(self, op: Op, local: Scan) -> None:
        node = self.state.remote_by_path(op.path)
        assert node is not None and node.file_id
        target = self._os_path(op.path, local)
        tmp, info = await self._fetch(op.path, node, target)
        try:
            if not await self._still_as_scanned(op.path, local):
                raise FileChanged(f"{op.path} changed locally during the download")
            if local.items.get(op.path) is not None and local.items[op.path].is_dir:
                raise IsADirectoryError(op.path)
            if info["symlink"]:
                tmp = await asyncio.to_thread(self._as_symlink, tmp, target, op.path)
            else:
                await asyncio.to_thread(_take_mode, tmp, target, info["executable"],
                                        self._modes.pop(op.path, None))
            await asyncio.to_thread(os.replace, tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        st = await asyncio.to_thread(target.lstat)
        self._wrote(target, st)
        hashes = info["hashes"]
        with self.state.transaction():  # one commit, not two: thousands of files arrive at once
            self.state.put_remote(op.path, Node(False, info["checksum"], node.file_id,
                                                info["version"], None, info["size"],
                                                info["executable"], info["symlink"]))
            self._put_synced(SyncedEntry(op.path, False, node.file_id, info["version"],
                                         info["size"], st.st_mtime_ns, st.st_ino,
                                         info["checksum"], hashes,
                                         executable=info["executable"],
                                         symlink=info["symlink"]))

    def _as_symlink(self, tmp: Path, target: Path, path: str) -> Path:
        """The downloaded content of a symlink (its target) made a link, under a temp name
        beside ``target``, ready to be renamed into place. A target that is absolute or leads
        out of the folder is not created (it would let whoever can write to a shared folder
        point this computer's programs anywhere): a per-file problem, retried with back-off."""
        with open(tmp, "rb") as f:
            raw = f.read(TARGET_MAX + 1)
        tmp.unlink()
        if len(raw) > TARGET_MAX:
            raise ApiError(422, "unsafe_symlink", f"{path}: a symbolic link's target is at "
                           f"most {TARGET_MAX} bytes: not created here")
        link_target = os.fsdecode(raw)
        if not symlink_stays_inside(path, link_target) or \
                not resolves_inside(self.root, target, link_target):
            raise ApiError(422, "unsafe_symlink", f"{path} is a symbolic link to "
                           f"{link_target!r}, outside the sync folder: not created here")
        link = temp_path_for(target)
        os.symlink(link_target, link)
        return link

    def _local_sources(self) -> dict[str, tuple[Path, int]]:
        if self._sources is None:
            # Built once a round, not per file: the index spans every synced file.
            self._sources = {h: (self.root / p.lstrip("/"), off)
                             for h, (p, off) in self.state.block_sources().items()}
            self._single = {content_checksum([h]): h for h in self._sources}
        return self._sources

    async def _prefetch_small(self, ops: list[Op]) -> None:
        """Fetch the content of the group's small files with one request per ``BATCH_FILES``
        (instead of one each); :meth:`_fetch` takes them from memory. Files the folder already
        holds a block of are left to the local copy."""
        self._local_sources()
        self._prefetched = {}
        wanted: list[Node] = []
        for op in ops:
            node = self.state.remote_by_path(op.path)
            if node is not None and node.file_id and node.checksum and \
                    0 < node.size <= BATCH_DOWNLOAD_MAX_FILE_BYTES and \
                    node.checksum not in self._single:
                wanted.append(node)
        for i in range(0, len(wanted), BATCH_FILES):
            chunk = wanted[i:i + BATCH_FILES]
            try:
                got = await self.remote.content_batch([n.file_id for n in chunk if n.file_id])
            except AuthError:
                raise
            except ApiError as exc:
                # An older server without the route, or a failure of the batch as a whole: these
                # files come one by one instead (each reporting its own error, if any).
                log.warning("batch download failed (%s); fetching files one by one", exc)
                continue
            for n in chunk:
                if n.file_id in got:
                    self._prefetched[n.file_id] = got[n.file_id][1]

    async def _fetch(self, path: str, node: Node, target: Path
                     ) -> tuple[Path, dict[str, Any]]:
        """Assemble the remote file in a temp file beside ``target``: from local blocks when
        possible, from a batch fetched beforehand or in one request for a small file, else
        block by block."""
        assert node.file_id is not None
        if node.symlink and node.size > TARGET_MAX:
            raise ApiError(422, "unsafe_symlink", f"{path} is a symbolic link with a target of "
                           f"{node.size} bytes: not created here")
        sources = self._local_sources()
        small = {"version": node.version, "checksum": node.checksum, "size": node.size,
                 "executable": node.executable, "symlink": node.symlink}
        if node.size == 0 and node.checksum == content_checksum([]):
            return await write_from_local(b"", target), {**small, "hashes": ()}
        if node.checksum and node.size <= SMALL_FILE_BYTES:
            h = self._single.get(node.checksum)
            if h is not None:
                src, offset = sources[h]
                data = await asyncio.to_thread(read_local_block, src, offset, node.size, h)
                if data is not None:
                    return await write_from_local(data, target), {**small, "hashes": (h,)}
            data = self._prefetched.pop(node.file_id, None)
            hashes = verified_small(data, node.checksum) if data is not None else None
            if data is not None and hashes is not None:
                return await write_from_local(data, target), {**small, "hashes": hashes}
            got = await download_small(self.remote, node.file_id, node.checksum, target)
            if got is not None:
                return got[0], {**small, "hashes": got[1]}
        tmp, info = await download_to_temp(self.remote, node.file_id, target, self._sources,
                                           self.config.parallel_transfers,
                                           on_fetch=_Progress(self, "downloading", path,
                                                              node.size))
        return tmp, {"version": info["version"], "checksum": info["checksum"],
                     "size": info["size"], "hashes": tuple(b["hash"] for b in info["blocks"]),
                     "executable": bool(info.get("executable", node.executable)),
                     "symlink": bool(info.get("symlink", node.symlink))}

    async def _op_mkdir_local(self, op: Op, local: Scan) -> None:
        node = self.state.remote_by_path(op.path)
        target = self._os_path(op.path, local)
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        st = await asyncio.to_thread(target.stat)
        self._wrote(target, st)
        self._put_synced(SyncedEntry(op.path, True, node.file_id if node else None,
                                          node.version if node else 0, 0, st.st_mtime_ns,
                                          st.st_ino, None, ()))

    async def _op_delete_local(self, op: Op, local: Scan) -> None:
        target = self._os_path(op.path, local)
        if not await self._still_as_scanned(op.path, local):
            raise FileChanged(f"{op.path} changed locally; not deleting it")
        item = local.items.get(op.path)
        if item is not None and item.is_dir:
            ignore = await asyncio.to_thread(Ignore, self.root)
            changed = await asyncio.to_thread(self._changed_below, target, op.path, local, ignore)
            if changed is not None:
                raise FileChanged(f"{changed} changed locally; not deleting {op.path}")
            await asyncio.to_thread(_remove_synced_part, target, op.path, ignore)
        elif item is not None:
            await asyncio.to_thread(target.unlink, missing_ok=True)
        self._wrote(target, None)
        self.state.drop_synced(op.path)

    def _changed_below(self, folder: Path, path: str, local: Scan, ignore: Ignore) -> str | None:
        """Before a folder deleted on the server is removed here (blocking: run in a thread):
        the first item below it that is not as the scan saw it, if any. A round may run for
        minutes after its scan; a file saved or created there meanwhile must not go with the
        folder. The next round plans again from what is there now. Ignored items, symlinks
        (removed, never followed), fifos and sockets go with the folder; anything else the scan
        did not sync (a file being saved while it was read, a name that is not UTF-8, a folder
        it could not list) keeps the folder, reported, rather than be deleted unseen."""
        now = self._scan_started_ns
        stack = [(folder, path)]
        while stack:
            os_dir, tree_dir = stack.pop()
            try:
                entries = list(os.scandir(os_dir))
            except FileNotFoundError:
                continue
            for e in entries:
                p = f"{tree_dir}/{unicodedata.normalize('NFC', e.name)}"
                if ignore(p, is_dir=e.is_dir(follow_symlinks=False)):
                    continue  # not synced: see _remove_synced_part
                if not (e.is_dir(follow_symlinks=False) or e.is_symlink() or
                        e.is_file(follow_symlinks=False)):
                    continue  # sockets, fifos, devices: never synced (as the scan skips them)
                seen = local.items.get(p)
                if seen is None:
                    if e.is_symlink() and not (self.config.sync_symlinks and
                                               symlink_stays_inside(p, os.readlink(e.path))):
                        continue  # never synced; it is removed, not what it points at
                    if e.is_dir(follow_symlinks=False) and _only_ignored(Path(e.path), p, ignore):
                        continue  # holds only ignored items, which stay (_remove_synced_part)
                    return p  # created since, or something the scan could not sync: kept
                st = e.stat(follow_symlinks=False)
                if seen.is_dir:
                    if not stat.S_ISDIR(st.st_mode) or st.st_ino != seen.inode:
                        return p
                    stack.append((Path(e.path), p))
                    continue
                if stat.S_ISLNK(st.st_mode):
                    if not (seen.symlink and link_content(Path(e.path))[0] == seen.checksum):
                        return p  # a synced link changed since: the folder is kept
                    continue
                if not stat.S_ISREG(st.st_mode):
                    return p
                same_stat = (st.st_size, st.st_mtime_ns, st.st_ino) == \
                    (seen.size, seen.mtime_ns, seen.inode)
                if same_stat and now is not None and stat_trusted(seen.mtime_ns, now, now):
                    continue
                # Touched, or within a tick of this round: the content decides.
                if hash_local(Path(e.path))[0] != seen.checksum:
                    return p
        return None

    async def _op_move_local(self, op: Op, local: Scan) -> None:
        assert op.src is not None
        leaving = await self._links_leaving(op.src, op.path, op.src, local)
        synced = self.state.synced_entries() if leaving else {}
        for p, target in leaving:
            link = self._os_path(p, local)
            try:
                here = (await asyncio.to_thread(link_content, link))[0]
            except OSError:
                here = None
            if self.state.remote_by_path(p) is None and synced[p].checksum == here:
                # Gone from the server (the device that moved the folder took it out, as
                # _op_move_remote does): it goes here too, before the folder moves.
                await asyncio.to_thread(link.unlink)
                self._wrote(link, None)
                self.state.drop_synced(p)
                continue
            raise ApiError(422, "unsafe_symlink", f"moved on the server to {op.path}, where "
                           f"the symbolic link {p} (to {target!r}) would lead out of the "
                           "folder: not moved here")
        src, dst = self._os_path(op.src, local), self._os_path(op.path, local)
        await asyncio.to_thread(_rename_no_replace, src, dst)
        self._wrote(src, None)
        self._wrote(dst, await asyncio.to_thread(dst.lstat))
        self.state.move_synced(op.src, op.path)

    async def _op_conflict(self, op: Op, local: Scan) -> None:
        assert op.copy is not None
        here = self._os_path(op.path, local)
        try:  # the server's version, which takes the name, keeps the mode it had here
            st = await asyncio.to_thread(here.lstat)
            if stat.S_ISREG(st.st_mode):
                self._modes[op.path] = stat.S_IMODE(st.st_mode)
        except FileNotFoundError:
            pass
        await asyncio.to_thread(_rename_no_replace, here, self._os_path(op.copy, local))
        self.state.drop_synced(op.path)
        log.warning("conflict: kept the local version of %s as %s", op.path, op.copy)
        node = self.state.remote_by_path(op.path)
        # Nothing is at op.path now; the folders above it are where the scan found them.
        moved = Scan(os_paths={k: v for k, v in local.os_paths.items()
                               if k != op.path and not k.startswith(op.path + "/")}, items={})
        try:
            if node is not None and node.is_dir:
                await self._op_mkdir_local(op, moved)
            elif node is not None:
                await self._op_download(op, moved)
        finally:
            self._modes.pop(op.path, None)  # for this download only, never a later file

    async def _op_record(self, op: Op, local: Scan) -> None:
        node = self.state.remote_by_path(op.path)
        item: LocalFile | None = local.items.get(op.path)
        assert node is not None and item is not None
        self._put_synced(SyncedEntry(op.path, node.is_dir, node.file_id, node.version,
                                     item.size, item.mtime_ns, item.inode, item.checksum,
                                     item.blocks, executable=item.executable,
                                     symlink=item.symlink))

    async def _op_forget(self, op: Op, local: Scan) -> None:
        self.state.drop_synced(op.path)


SHARED_ROOT = "Shared with me"  # where the server mounts folders shared with this user
TO_SERVER = frozenset({"upload", "mkdir_remote", "delete_remote", "move_remote"})


def _inside_root_unlinked(root: Path, target: Path, link_at_end: bool = False) -> bool:
    """Is ``target`` reached from ``root`` without any symlink on the way (or at the end,
    unless ``link_at_end``: a synced symlink, replaced or removed itself, never followed)?"""
    if link_at_end:
        return target.is_symlink() and _inside_root_unlinked(root, target.parent) \
            if target.parent != root else target.is_symlink()
    rel = os.path.relpath(target, root)
    return os.path.realpath(target) == os.path.join(os.path.realpath(root), rel)


def _entries_below(folder: Path, path: str, ignore: Ignore
                   ) -> Iterator[tuple[str, bool, bool]]:
    """(name, is a folder, is ignored) of everything below ``folder``, not descending into
    what is ignored nor into links (blocking). Raises OSError if a folder cannot be listed."""
    for e in list(os.scandir(folder)):
        p = f"{path}/{unicodedata.normalize('NFC', e.name)}"
        is_dir = e.is_dir(follow_symlinks=False)
        ignored = ignore(p, is_dir=is_dir)
        yield e.name, is_dir, ignored
        if is_dir and not ignored:
            yield from _entries_below(Path(e.path), p, ignore)


def _only_ignored(folder: Path, path: str, ignore: Ignore) -> bool:
    """Does ``folder`` hold nothing but ignored items (and folders of them), at any depth?"""
    try:
        return all(ignored or is_dir for _, is_dir, ignored in
                   _entries_below(folder, path, ignore))
    except OSError:
        return False


def _holds_ignored(folder: Path, path: str, ignore: Ignore) -> bool:
    """Is something ignored (not litter) at any depth below ``folder``?"""
    try:
        return any(ignored and not is_litter(name) for name, _, ignored in
                   _entries_below(folder, path, ignore))
    except OSError:
        return False


def _remove_synced_part(folder: Path, path: str, ignore: Ignore) -> None:
    """Remove a folder deleted on the server (checked unchanged by ``_changed_below``), except
    what is ignored: that was never sent, so it is in no trash nor history on the server, and
    it stays here with the folders that hold it (which the next rounds leave alone, see
    ``Engine._ignored_only``). Only litter (.DS_Store, our temp files) goes with the folder;
    an editor's swap file may hold unsaved work. Links are removed, never followed."""
    def keep(os_dir: Path, tree_dir: str) -> bool:
        kept = False
        for e in list(os.scandir(os_dir)):
            p = f"{tree_dir}/{unicodedata.normalize('NFC', e.name)}"
            is_dir = e.is_dir(follow_symlinks=False)
            if ignore(p, is_dir=is_dir) and not is_litter(e.name):
                kept = True
            elif is_dir:
                kept = keep(Path(e.path), p) or kept
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
        if not kept:
            try:
                os.rmdir(os_dir)
            except FileNotFoundError:
                pass
            except OSError:  # something arrived meanwhile: it stays, for the next round
                return True
        return kept

    keep(folder, path)


def _take_mode(tmp: Path, target: Path, executable: bool, was: int | None = None) -> None:
    """Give a downloaded file its mode before it is renamed into place. A download never widens
    who may read a file: a replaced file keeps its mode (a 0600 tax return stays 0600), a new
    one has the umask's (as the temp file was created), and one that takes the name of a file
    just renamed away (a conflict) has that file's mode, ``was``. Only the exec bit comes from
    the server: set for whoever may read, or cleared for all."""
    try:
        st = target.lstat()
        mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        mode = None
    if mode is None:
        mode = was if was is not None else stat.S_IMODE(tmp.stat().st_mode)
    mode = mode | (mode & 0o444) >> 2 if executable else mode & ~0o111
    os.chmod(tmp, mode)


def _own_key(st: os.stat_result) -> tuple[Any, ...]:
    # A folder's mtime moves whenever a download lands in it: only its identity counts.
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_ino)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _mount_of(path: str) -> str | None:
    """``/Shared with me/X`` for a path at or below it, else None."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] == SHARED_ROOT:
        return "/".join(parts[:3])
    return None


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Rename without ever replacing what is at ``dst`` (a user's file, or a dangling link,
    which ``exists()`` would not see): atomically where the system can."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    rename_no_replace(src, dst)


GRANT_REVOKED = "grant_revoked"


def _view_only_refusal(exc: ApiError) -> bool:
    """A 403 that means "you may not write here" (a folder shared to view only), as opposed to
    an upload grant that ended (``grant_revoked``: ask again, nothing is wrong with the file)."""
    return exc.status == 403 and exc.code != GRANT_REVOKED
