"""Compaction of the change feed: one page of journal entries as the fewest changes.

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

import dataclasses
from collections.abc import Iterable, Sequence

from driveproto.names import name_key

from .entries import Change, Entry

# Actions that change where (or whether) an item is, as opposed to what it holds.
PATH_ACTIONS = frozenset({"create", "restore", "move", "delete"})
# Compaction compares an item's path changes against the entries between them. It gives up
# (keeps the entries apart: never unsafe, only less compact) past this many entries between two,
# and past this many comparisons in one page, so a pathological page costs milliseconds, not
# seconds, of the event loop.
MAX_HAZARD_SCAN = 2000
MAX_HAZARD_WORK = 100_000


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
