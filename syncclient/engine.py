"""One round of the sync, and rounds until quiet: pull the change feed, scan the folder, filter,
plan, rewrite, guard, execute.

``Engine.sync_once`` is one complete two-way sync (``drive-sync run --once``); the daemon calls
it whenever the watcher or the long poll says something changed. Each stage is its own module,
named along the pipeline:

    pull (feed -> remote tree)  ->  localtree (scan)  ->  filters (what is left alone)
    ->  planner (the pure decisions)  ->  filters.outside_shares (the mount rewrite)
    ->  guards (missing folder, mass deletion)  ->  executor (up / down)  ->  state

This module only gathers the three trees and runs the rounds; every decision is in a stage,
and every effect is written to the state database *after* it is durable.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import executor, filters, guards
from .config import MARKER, Config
from .context import RoundResult, SyncContext
from .guards import Paused
from .ignore import Ignore
from .localfs import ignored_only
from .localtree import Scan, scan, stat_trusted
from .planner import DOWN_KINDS, TO_SERVER, Node, Op, plan
from .pull import pull
from .remote_api import RemoteApi
from .state import State, SyncedEntry

__all__ = ["MAX_ROUNDS", "Engine", "Paused", "RoundResult", "SyncResult"]

log = logging.getLogger(__name__)

MAX_ROUNDS = 12


@dataclass
class SyncResult:
    rounds: int = 0
    done: list[Op] = field(default_factory=list)
    pending: list[Op] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def in_sync(self) -> bool:
        return not self.pending and not self.errors


def _counts(ops: list[Op]) -> dict[str, int]:
    return {"pending": len(ops), "uploads": sum(op.kind in TO_SERVER for op in ops),
            "downloads": sum(op.kind in DOWN_KINDS for op in ops)}


class Engine:
    """Owns one folder's sync. Built from its parts (``remote``, ``state``) so tests can too."""

    def __init__(self, config: Config, state: State, remote: RemoteApi,
                 on_status: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config, self.state, self.remote = config, state, remote
        self.root = config.root
        self.lock = asyncio.Lock()
        self.on_status = on_status
        self.ctx = SyncContext(config, state, remote, self._status)
        self.scanned_folders: list[tuple[Path, int]] = []  # what the last scan saw
        self._clock_failed = False  # said once in the log
        self._links_said: dict[str, str] = {}  # symlinks left alone, as last logged

    def is_own_write(self, rel: str) -> bool:
        """Is the item at ``rel`` exactly as this engine left it moments ago? The watcher asks
        (from its own thread) so that files a sync downloads do not wake the next round."""
        return self.ctx.own.is_own_write(rel)

    def check_folder(self) -> None:
        guards.check_folder(self.root)

    async def pull(self, wait_seconds: float = 0) -> int:
        """Apply the change feed to the remote tree cache (``pull.pull``)."""
        return await pull(self.state, self.remote, wait_seconds)

    # --- planning -------------------------------------------------------------------------------

    async def gather(self, read_clock: bool = False
                     ) -> tuple[Scan, dict[str, Node], dict[str, Node], dict[str, SyncedEntry]]:
        """The three trees (and the synced records), filtered. ``read_clock`` when the round
        will act on them: it writes to the folder (``_fs_clock``), which a dry run must not."""
        self.check_folder()
        ignore = await asyncio.to_thread(Ignore, self.root)
        synced_entries = self.state.synced_entries()
        started = await asyncio.to_thread(self._fs_clock) if read_clock else None
        self.ctx.scan_started_ns = started
        local = await asyncio.to_thread(scan, self.root, synced_entries, ignore, started,
                                        self.config.sync_symlinks)
        remote_all = self.state.remote_tree()
        for p in await asyncio.to_thread(ignored_only, self.root, local, synced_entries,
                                         remote_all, ignore):
            for q in [q for q in local.items if q == p or q.startswith(p + "/")]:
                del local.items[q]
        # The daemon checks that the watcher watches every one of these.
        self.scanned_folders = [(self.root, self.root.stat().st_ino),
                                *((self.ctx.os_path(p, local), f.inode)
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
        kept = filters.filter_trees(local.items, remote, synced, local.problems,
                                    filters.local_uncreatable(), synced_entries)
        for p in kept.dropped_local:
            del local.items[p]
        self.state.replace_notices("not_here", kept.not_here)
        self.state.replace_notices("not_on_windows", filters.not_on_windows(local.items))
        return local, kept.remote, kept.synced, synced_entries

    async def _keep_name_twins(self, local: Scan) -> bool:
        """Two items in one folder whose names the server takes for one (``Index.html`` beside
        ``index.html``, or a name in NFC beside it in NFD) are both kept, as Dropbox does: the
        one the scan left out is renamed on disk (``localtree.rename_twins``) and syncs under
        its new name, with a notice that lasts while it is there. True if anything was renamed:
        the caller scans again."""
        from .localtree import rename_twins

        renamed = await asyncio.to_thread(rename_twins, self.root, local.twins) \
            if local.twins else []
        twins = self.state.notices_of("twin")
        self.state.replace_notices("twin", {**{p: m for p, m in twins.items()
                                               if p in local.items},
                                            **{r.path: r.notice for r in renamed}})
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
        ops, notices = filters.outside_shares(ops, remote, synced)
        for path, message in notices.items():
            self.ctx.notice(path, message)
        if to_execute:
            self._refresh_stats(local, entries, ops)
        return ops, local

    def notice(self, path: str, message: str) -> None:
        """Something ``drive-sync status`` should tell the user (not an error)."""
        self.ctx.notice(path, message)

    def check_deletions(self, ops: list[Op]) -> None:
        """The mass-deletion guard (``guards.check_deletions``)."""
        guards.check_deletions(self.state, self.config, ops)

    # --- one sync -------------------------------------------------------------------------------

    async def sync_once(self, dry_run: bool = False, pull: bool = True) -> SyncResult:
        """Rounds of pull → scan → plan → execute until the plan is empty (or only failing
        operations are left). ``dry_run`` plans once and changes nothing."""
        result = SyncResult()
        async with self.lock:
            self.ctx.own.forget_old()
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
                self._status("syncing", **_counts(ops))
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
        self._status("idle" if result.in_sync else "error", **_counts(result.pending),
                     errors=result.errors, progress=None)
        return result

    async def execute(self, ops: list[Op], local: Scan) -> RoundResult:
        """Carry out one round's operations (``executor.execute``)."""
        return await executor.execute(self.ctx, ops, local)

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

    def _refresh_stats(self, local: Scan, synced: Mapping[str, SyncedEntry],
                       ops: list[Op]) -> None:
        """Files the scan found with their synced content but could not trust on their stat
        (touched, saved unchanged, or last read within a tick of their mtime): record what the
        scan saw, so the next scan need not hash them again. Paths this round operates on are
        left to it."""
        now = self.ctx.scan_started_ns
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
                    self.ctx.put_synced(entry)
