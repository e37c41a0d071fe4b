"""The change feed: journal pages (compacted) and full listings (snapshots), read for devices.

What a device missed is the journal after its cursor: :class:`Feed` reads it, a range scan per
workspace, and compacts each page (:mod:`driveserver.sync.compaction`); concurrent identical
reads share one query. A device with nothing (cursor ``"0"``), or given a folder newly shared
with it, gets the live tree instead, in pages (:func:`snapshot_page`). Journal retention (what
makes a position too old, a ``reset``) is :func:`driveserver.meta.journal.prune_journal`.

The statements are in :mod:`driveserver.meta.changes`; which connection they run on is chosen
here: the database's shared reader, in a worker thread, since a page or a listing may scan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..meta import changes as changes_db
from ..meta.db import Database
from ..meta.mounts import Mount
from .compaction import compact
from .cursor import SnapshotMark
from .entries import Change, Entry


def in_view(change: Change, mount: Mount) -> Change:
    """``change`` with its paths as the mount's viewer sees them."""
    if not mount.prefix:
        return change
    return dataclasses.replace(
        change, path=mount.prefix + change.path,
        old_path=None if change.old_path is None else mount.prefix + change.old_path)


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
        info = await changes_db.journal_bounds(self.db, ids)
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
            rows = await changes_db.journal_after(self.db, ws, positions[ws], budget + 1)
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
        rows = await changes_db.snapshot_rows(q, roots[ws], ws, depth, after,
                                              limit - len(out) + 1)
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
