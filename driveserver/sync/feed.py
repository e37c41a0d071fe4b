"""The change feed: journal reads, compaction, full listings (snapshots) and journal pruning.

What a device missed is the journal after its cursor. Reading it is a range scan per workspace;
what makes a backlog cheap to apply is compaction (:func:`compact`), which rewrites one page of
journal entries into the shortest list of entries that brings a device from the page's start to
its end. The rules, and why they are safe, are in ``docs/sync.md``; in short:

* an item's entries collapse into one entry carrying its latest state, placed at the position of
  its latest change, so journal order is kept otherwise;
* an item created (or restored) and deleted within the page vanishes;
* a folder delete implies the delete of everything below it, including items created or moved
  there within the page, which therefore vanish too;
* collapsing never moves a change of an item's *path* (create, move, delete, restore) past an
  entry that involves one of the paths it had (a child created in a folder before the folder was
  renamed, a file created where another was moved away), and never collapses a delete into a
  later restore: such entries are kept apart, so applying the answer in order never needs a
  folder that does not exist yet or a name that is still taken.

``tests/test_changes.py`` checks these claims by replaying compacted pages of random histories
on a strict client model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driveproto.names import name_key

from ..meta.db import Database, Row
from ..meta.mounts import Mount
from .cursor import SnapshotMark

# Actions that change where (or whether) an item is, as opposed to what it holds.
PATH_ACTIONS = frozenset({"create", "restore", "move", "delete"})
# Compaction compares an item's path changes against the entries between them. It gives up
# (keeps the entries apart: never unsafe, only less compact) past this many entries between two,
# and past this many comparisons in one page, so a pathological page costs milliseconds, not
# seconds, of the event loop.
MAX_HAZARD_SCAN = 2000
MAX_HAZARD_WORK = 100_000
PRUNE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry; ``implied`` marks a delete implied by the delete of a folder above."""

    workspace_id: str
    seq: int
    file_id: str
    action: str
    path: str
    old_path: str | None
    is_directory: bool
    version: int
    size: int
    checksum: str | None
    user_id: str
    device_id: str | None
    created_at: float
    implied: bool = False
    executable: bool = False
    symlink: bool = False

    @classmethod
    def from_row(cls, row: Row) -> Entry:
        return cls(row["workspace_id"], row["seq"], row["file_id"], row["action"], row["path"],
                   row["old_path"], bool(row["is_directory"]), row["version"], row["size"],
                   row["checksum"], row["user_id"], row["device_id"], row["created_at"],
                   executable=bool(row["executable"]), symlink=bool(row["symlink"]))


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of an answer. ``devices`` are the devices whose changes it stands for (not sent):
    an entry standing only for the asking device's own changes is left out of its answer."""

    seq: int | None
    workspace_id: str
    file_id: str
    path: str
    old_path: str | None
    action: str
    version: int
    size: int
    checksum: str | None
    is_directory: bool
    device_id: str | None
    user_id: str | None
    modified_at: float
    devices: frozenset[str | None] = frozenset()
    executable: bool = False
    symlink: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "workspace_id": self.workspace_id, "file_id": self.file_id,
                "path": self.path, "old_path": self.old_path, "action": self.action,
                "version": self.version, "size": self.size, "checksum": self.checksum,
                "executable": self.executable, "symlink": self.symlink,
                "is_directory": self.is_directory, "device_id": self.device_id,
                "user_id": self.user_id, "modified_at": self.modified_at}

    def only_from(self, device_id: str | None) -> bool:
        return device_id is not None and self.devices == {device_id}


# --- compaction -------------------------------------------------------------------------------

def _key(path: str) -> str:
    return name_key(path)  # case-folded NFC: '/' is kept, so prefixes stay component-wise


def _related(path: str, others: Iterable[str]) -> bool:
    """True if ``path`` equals, contains or lies inside one of ``others`` (all keys)."""
    return any(path == q or path.startswith(q + "/") or q.startswith(path + "/") for q in others)


def _rebase(path: str, old_prefix: str, new_prefix: str) -> str:
    depth = old_prefix.count("/")
    return new_prefix + "/" + "/".join(path.split("/")[depth + 1:])


def _with_implied_deletes(entries: Sequence[Entry]) -> list[Entry]:
    """The page with a delete added for every item the page saw that a folder delete removed.

    The journal records only the folder's delete; its contents go with it. Spelling those out
    (deepest first, just before the folder's delete) lets compaction see that a file created in
    a folder that was then deleted never needs to reach the device.
    """
    out: list[Entry] = []
    where: dict[str, tuple[str, str]] = {}  # file id -> (path, key) of live items seen so far
    last: dict[str, Entry] = {}
    work = 0
    for e in entries:
        if work > MAX_HAZARD_WORK:
            # Many folder moves over many items: stop spelling out deletes for the rest of the
            # page (what was spelled out so far is right; the rest is only less compact).
            out.append(e)
            continue
        if e.is_directory and e.action in ("delete", "move"):
            work += len(where)
        if e.action == "delete" and e.is_directory:
            prefix = _key(e.path) + "/"
            inside = [f for f, (_, k) in where.items() if f != e.file_id and k.startswith(prefix)]
            inside.sort(key=lambda f: -where[f][0].count("/"))
            for f in inside:
                out.append(dataclasses.replace(
                    last[f], seq=e.seq, action="delete", path=where.pop(f)[0], old_path=None,
                    user_id=e.user_id, device_id=e.device_id, created_at=e.created_at,
                    implied=True))
        out.append(e)
        last[e.file_id] = e
        if e.action == "delete":
            where.pop(e.file_id, None)
        else:
            where[e.file_id] = (e.path, _key(e.path))
        if e.is_directory and e.action == "move" and e.old_path:
            prefix = _key(e.old_path) + "/"
            for f, (p, k) in list(where.items()):
                if f != e.file_id and k.startswith(prefix):
                    moved = _rebase(p, e.old_path, e.path)
                    where[f] = (moved, _key(moved))
    return out


class _Compactor:
    """Splits each item's entries into runs that may be collapsed, and collapses them."""

    def __init__(self, timeline: list[Entry]) -> None:
        self.timeline = timeline
        self.keys = [(_key(e.path), _key(e.old_path) if e.old_path else None) for e in timeline]
        self.work = 0
        self.by_file: dict[str, list[int]] = {}
        for i, e in enumerate(timeline):
            self.by_file.setdefault(e.file_id, []).append(i)

    def _paths(self, i: int) -> set[str]:
        path, old = self.keys[i]
        return {path} if old is None else {path, old}

    def _hazard(self, start: int, end: int, file_id: str, paths: set[str],
                ignore: frozenset[int]) -> bool:
        """Does an entry strictly between ``start`` and ``end`` involve one of ``paths``?"""
        if end - start > MAX_HAZARD_SCAN or self.work > MAX_HAZARD_WORK:
            return True
        self.work += end - start
        for j in range(start + 1, end):
            if j in ignore or self.timeline[j].file_id == file_id:
                continue
            path, old = self.keys[j]
            if _related(path, paths) or (old is not None and _related(old, paths)):
                return True
        return False

    def plan(self, ignore: frozenset[int]) -> tuple[list[tuple[int, Change]], frozenset[int]]:
        """Collapsed entries as (position, change), and the positions of entries that vanish.

        Entries at positions in ``ignore`` are assumed to vanish and so cannot stand in the way
        of collapsing; :func:`compact` only accepts a plan in which they really do.
        """
        runs: list[list[int]] = []
        self.work = 0
        for file_id, positions in self.by_file.items():
            run = [positions[0]]
            paths = self._paths(positions[0])
            moves_path = self.timeline[positions[0]].action in PATH_ACTIONS
            for i in positions[1:]:
                changes_path = self.timeline[i].action in PATH_ACTIONS
                if self.timeline[run[-1]].action == "delete":
                    # Never collapse a delete into a later restore: the restores of what was
                    # inside the folder come after, and they need the delete to have happened.
                    runs.append(run)
                    run, paths, moves_path = [i], self._paths(i), changes_path
                    continue
                if moves_path or changes_path:
                    wider = paths | self._paths(i)
                    if self._hazard(run[0], i, file_id, wider, ignore):
                        runs.append(run)
                        run, paths, moves_path = [i], self._paths(i), changes_path
                        continue
                    paths = wider
                run.append(i)
                moves_path = moves_path or changes_path
            runs.append(run)
        kept: list[tuple[int, Change]] = []
        vanished: set[int] = set()
        for run in runs:
            if len(run) == 1 and self.timeline[run[0]].implied:
                # Nothing to collapse it with: the device has the item inside the folder, so
                # the folder's own delete says it all.
                continue
            change = self._collapse(run)
            if change is None:
                vanished.update(run)
            else:
                kept.append((run[-1], change))
        kept.sort(key=lambda pc: pc[0])
        return kept, frozenset(vanished)

    def _collapse(self, run: list[int]) -> Change | None:
        first, last = self.timeline[run[0]], self.timeline[run[-1]]
        new = first.action in ("create", "restore")  # the device did not have it before the run
        if new and last.action == "delete":
            return None
        old_path = None
        if new:
            action = first.action
        else:
            action = last.action
            before = (first.old_path or first.path) if first.action == "move" else first.path
            if before != last.path and any(self.timeline[i].action == "move" for i in run):
                old_path = before
        return Change(
            seq=last.seq, workspace_id=last.workspace_id, file_id=last.file_id, path=last.path,
            old_path=old_path, action=action, version=last.version, size=last.size,
            checksum=last.checksum, executable=last.executable, symlink=last.symlink,
            is_directory=last.is_directory, device_id=last.device_id,
            user_id=last.user_id, modified_at=last.created_at,
            devices=frozenset(self.timeline[i].device_id for i in run))


def compact(entries: Sequence[Entry]) -> list[Change]:
    """Compact one workspace's consecutive journal entries (ascending seq); see the module doc.

    Vanishing items make more collapsing possible (a folder created and deleted with a file
    created inside it), so the plan is refined a few times, each refinement assuming that what
    vanished before vanishes again. A refinement is used only if that assumption held, which
    keeps every accepted plan as safe as the first one, which assumes nothing.
    """
    compactor = _Compactor(_with_implied_deletes(entries))
    kept, vanished = compactor.plan(frozenset())
    for _ in range(3 if vanished else 0):
        more_kept, more_vanished = compactor.plan(vanished)
        if not vanished <= more_vanished:
            break
        kept, settled = more_kept, more_vanished == vanished
        vanished = more_vanished
        if settled:
            break
    return [change for _, change in kept]


# --- reading the feed -------------------------------------------------------------------------

def in_view(change: Change, mount: Mount) -> Change:
    """``change`` with its paths as the mount's viewer sees them."""
    if not mount.prefix:
        return change
    return dataclasses.replace(
        change, path=mount.prefix + change.path,
        old_path=None if change.old_path is None else mount.prefix + change.old_path)


async def current_positions(q: Any, workspace_ids: Iterable[str]) -> dict[str, int]:
    ids = sorted(workspace_ids)
    if not ids:
        return {}
    rows = await q.fetchall(
        f"SELECT id, seq FROM workspaces WHERE id IN ({','.join('?' * len(ids))})", ids)
    return {r["id"]: int(r["seq"]) for r in rows}


@dataclass(frozen=True)
class Page:
    """One read of the feed: compacted changes, where the next read starts, whether more is
    waiting, or ``reset`` when a position is older than what the journal still holds."""

    changes: list[Change]
    positions: dict[str, int]
    has_more: bool
    reset: bool = False
    # Answers built from this page, shared by the requests that share the page (a commit
    # that wakes thousands of polls serialises and signs one answer, not thousands).
    answers: dict[tuple[Any, ...], str] = dataclasses.field(default_factory=dict, compare=False,
                                                            repr=False)


class Feed:
    """Reads pages of the journal; concurrent identical reads share one database query.

    When a commit wakes thousands of long polls at the same position, they all want the same
    page. A read is shared only among requests that ask at the same hub generation, i.e. that
    know of the same commits, so a request woken by a commit never joins a read that started
    before that commit (see ``Hub.generation``).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._inflight: dict[tuple[Any, ...], asyncio.Future[Page]] = {}

    async def page(self, positions: Mapping[str, int], limit: int, generation: int) -> Page:
        key = (generation, tuple(sorted(positions.items())), limit)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._read(dict(positions), limit))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._done(key, f))
        # Shielded: one client disconnecting must not cancel a read others are waiting for.
        return await asyncio.shield(future)

    def _done(self, key: tuple[Any, ...], future: asyncio.Future[Page]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved here, raised in every waiter

    async def _read(self, positions: dict[str, int], limit: int) -> Page:
        ids = sorted(positions)
        if not ids:
            return Page([], {}, False)
        marks = ",".join("?" * len(ids))
        info = {r["id"]: r for r in await self.db.fetchall(
            "SELECT w.id, w.seq, COALESCE(f.pruned_through, 0) AS floor FROM workspaces w"
            f" LEFT JOIN journal_floors f ON f.workspace_id = w.id WHERE w.id IN ({marks})", ids)}
        for ws in ids:
            row = info.get(ws)
            # Older than the retention (or ahead of the journal, e.g. after restoring a backup):
            # the changes in between are gone, so only a full listing is correct.
            if row is None or not row["floor"] <= positions[ws] <= row["seq"]:
                return Page([], positions, False, reset=True)
        budget, has_more = limit, False
        nxt = dict(positions)
        per_workspace: list[list[Change]] = []
        for ws in ids:
            if positions[ws] >= info[ws]["seq"]:
                continue  # nothing new here: no journal query
            if budget <= 0:
                has_more = True
                break
            rows = await self.db.fetchall(
                "SELECT * FROM journal WHERE workspace_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (ws, positions[ws], budget + 1))
            if len(rows) > budget:
                has_more, rows = True, rows[:budget]
            if not rows:
                continue
            budget -= len(rows)
            nxt[ws] = int(rows[-1]["seq"])
            per_workspace.append(compact([Entry.from_row(r) for r in rows]))
        # Within a workspace the journal order is kept; across workspaces, by time, and at the
        # same time (one transaction) deletes first: a move into or out of a shared folder is
        # a delete in one workspace and a create in the other, of the same file id, and a
        # device that applied the create first would then delete the file it just placed.
        changes = list(heapq.merge(*per_workspace,
                                   key=lambda c: (c.modified_at, c.action != "delete")))
        return Page(changes, nxt, has_more)


SNAPSHOT_SQL = (
    "WITH RECURSIVE t(id, path, depth) AS ("
    "  SELECT id, '', 0 FROM files WHERE id = ?1"
    "  UNION ALL SELECT f.id, t.path || '/' || f.name, t.depth + 1"
    "  FROM files f JOIN t ON f.parent_id = t.id"
    # A shared folder is listed apart. The unary + keeps SQLite on the parent index: with the
    # (workspace_id, trashed_at) index it rescans the whole workspace at every step.
    "  WHERE f.trashed_at IS NULL AND +f.workspace_id = ?2),"
    " page AS (SELECT f.*, t.path AS full_path, t.depth AS depth FROM t JOIN files f"
    "  ON f.id = t.id"
    "  WHERE t.depth > 0 AND (f.is_directory = 1 OR f.version > 0)"  # not a pending first upload
    "  AND (t.depth > ?3 OR (t.depth = ?4 AND t.id > ?5)) ORDER BY t.depth, t.id LIMIT ?6)"
    # The workspace's journal position in the same statement, so in the same state as the
    # rows (one row of NULLs besides it when the page is empty): see snapshot_page.
    " SELECT w.seq AS ws_seq, page.* FROM workspaces w LEFT JOIN page ON 1 WHERE w.id = ?2"
    " ORDER BY page.depth, page.id")


class StaleRead(Exception):
    """A read returned an older state than the caller already knows of (read it again)."""


async def snapshot_page(q: Any, roots: Mapping[str, str], mark: SnapshotMark | None,
                        limit: int, fresh: Mapping[str, int] | None = None
                        ) -> tuple[list[Change], SnapshotMark | None]:
    """One page of the live tree of every workspace in ``roots``, after ``mark``.

    Items come parents first (by depth, then id, one workspace after another), each as a
    ``create``. Returns the page and the mark to continue after, or None when the listing is
    complete. Changes made while the pages are read are in the journal after the positions the
    snapshot started from, so the client receives them next.

    ``fresh``: per workspace, the journal position its tree must be at least at (the position
    the listing continues from, or when a folder was shared with the reader). The reading
    connection can serve an older state than one already seen elsewhere; such a page raises
    :class:`StaleRead` instead of listing what the reader missed, or may not see.
    """
    out: list[Change] = []
    last: SnapshotMark | None = None
    for ws in sorted(roots):
        if mark is not None and ws < mark.workspace_id:
            continue
        depth, after = ((mark.depth, mark.file_id) if mark is not None
                        and ws == mark.workspace_id else (0, ""))
        rows = await q.fetchall(SNAPSHOT_SQL, (roots[ws], ws, depth, depth, after,
                                               limit - len(out) + 1))
        if fresh is not None and (not rows or rows[0]["ws_seq"] < fresh.get(ws, 0)):
            raise StaleRead(ws)
        for r in rows:
            if r["id"] is None:  # the page is empty: only the workspace's position came
                continue
            if len(out) == limit:
                return out, last
            out.append(Change(
                seq=None, workspace_id=ws, file_id=r["id"], path=r["full_path"], old_path=None,
                action="create", version=r["version"], size=r["size"], checksum=r["checksum"],
                executable=bool(r["executable"]), symlink=bool(r["symlink"]),
                is_directory=bool(r["is_directory"]), device_id=None, user_id=None,
                modified_at=r["modified_at"]))
            last = SnapshotMark(ws, int(r["depth"]), r["id"])
    return out, None


# --- retention --------------------------------------------------------------------------------

async def prune_journal(db: Database, retention_days: float, *, now: float | None = None) -> int:
    """Delete journal entries older than ``retention_days``; return how many were deleted.

    For the periodic maintenance task. Each workspace loses a prefix of its journal (by seq, so a
    clock step cannot punch holes in it), and ``journal_floors`` remembers the last seq deleted:
    a cursor behind it gets ``reset``. Deletes run in batches, each its own short transaction,
    so commits are never held up for long.
    """
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    targets = await db.fetchall(
        "SELECT workspace_id, MAX(seq) AS through FROM journal WHERE created_at < ?"
        " GROUP BY workspace_id", (cutoff,))
    deleted = 0
    for target in targets:
        ws, through = target["workspace_id"], int(target["through"])
        while True:
            async with db.transaction(offload=True) as tx:
                upto = await tx.fetchval(
                    "SELECT MAX(seq) FROM (SELECT seq FROM journal WHERE workspace_id = ?"
                    " AND seq <= ? ORDER BY seq LIMIT ?)", (ws, through, PRUNE_BATCH))
                if upto is None:
                    break
                cur = await tx.execute(
                    "DELETE FROM journal WHERE workspace_id = ? AND seq <= ?", (ws, upto))
                deleted += max(cur.rowcount, 0)
                await tx.execute(
                    "INSERT INTO journal_floors (workspace_id, pruned_through) VALUES (?, ?)"
                    " ON CONFLICT (workspace_id) DO UPDATE SET pruned_through ="
                    " MAX(pruned_through, excluded.pruned_through)", (ws, upto))
            if upto >= through:
                break
    return deleted
