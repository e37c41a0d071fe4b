"""What a user sees of the change feed: which workspaces are mounted for them, and what changed
in *which folders are shared with them* since a cursor.

A user's view is their own drive plus each folder shared with them (``meta.mounts``). A share,
a revoke or a recipient leaving changes the view rather than a tree, so the journal does not
carry it: the feed routes compare the view a cursor was issued for with the current one
(:func:`view_changes`) and answer with deletes of mounts gone and listings of mounts new. Reads
that depend on the view are done in one view (:func:`in_one_view`): again if a share change of
the user's commits while they run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ..meta import accounts
from ..meta.changes import current_positions
from ..meta.db import Database
from ..meta.mounts import SHARED_ROOT, Mount, mounts_for
from ..meta.tree import get_file
from .cursor import Cursor, SnapshotMark
from .entries import Change
from .feed import StaleRead
from .hub import Hub

# How often a read is done again when the user's shares change while it runs (in_one_view).
VIEW_TRIES = 3
T = TypeVar("T")


def visible_positions(positions: Mapping[str, int], roots: Mapping[str, Any]) -> dict[str, int]:
    """Positions for exactly the workspaces the user sees now (a new one starts at 0)."""
    return {ws: positions.get(ws, 0) for ws in roots}


async def read_view(db: Database, user_id: str) -> tuple[dict[str, Mount], dict[str, int]]:
    """The user's mounts and each one's current journal position, read fresh and together.

    Read on the database's snapshot connection, in one read transaction begun now: the shared
    reading connection may still serve an older state (its read transaction lasts while any of
    the statements interleaved on it is unfinished), and a view older than a revoke whose hook
    has run would let a journal page or listing read after the revoke through (in_one_view).
    The lookups are indexed and few (one per folder the user owns that is shared)."""
    async with db.snapshot() as q:
        view = await mounts_for(q, user_id)
        return view, await current_positions(q, view)


def grantee_mounts(view: Mapping[str, Mount]) -> dict[str, tuple[str, str]]:
    return {ws: (m.root_id, m.prefix) for ws, m in view.items() if m.share_id is not None}


def synthetic(ws: str, file_id: str, path: str, action: str, at: float) -> Change:
    return Change(seq=None, workspace_id=ws, file_id=file_id, path=path, old_path=None,
                  action=action, version=0, size=0, checksum=None, is_directory=True,
                  device_id=None, user_id=None, modified_at=at)


SHARED_ROOT_ID = "virtual:shared-with-me"


async def _mount_folder(db: Any, mount: Mount, first: bool) -> list[Change]:
    """A folder newly shared with the user, as creates: ``/Shared with me`` (if ``first``) and
    the mount folder. What is in it follows in pages (``Cursor.listing``)."""
    now = time.time()
    root = await get_file(db, mount.root_id)
    assert root is not None, mount  # it was mounted (not in the trash) when the view was read
    out = [synthetic(mount.workspace_id, SHARED_ROOT_ID, f"/{SHARED_ROOT}", "create", now)] \
        if first else []
    out.append(dataclasses.replace(
        synthetic(mount.workspace_id, mount.root_id, mount.prefix, "create", now),
        version=root["version"], modified_at=root["modified_at"]))
    return out


@dataclasses.dataclass(frozen=True)
class ViewChange:
    """What changed in which folders are shared with the user: the changes that say so (deletes
    of mounts gone, listings of mounts new), the positions after them, and the workspaces whose
    journal entries must not reach the user from before (a mount gone or given anew)."""

    changes: list[Change]
    positions: dict[str, int]
    dropped: frozenset[str]
    listing: tuple[str, ...] = ()  # mounts new to the user, whose contents follow in pages

    def cursor(self, user_id: str, view: Mapping[str, Mount]) -> Cursor:
        """Where the holder stands after these changes: listing the new mounts, if any."""
        mark = SnapshotMark(self.listing[0], 0, "") if self.listing else None
        return Cursor(user_id, self.positions, mark, grantee_mounts(view),
                      self.listing or None)


def _renewed(view: Mapping[str, Mount], had: Mapping[str, tuple[str, str]],
             since: Mapping[str, int]) -> set[str]:
    """Mounts the holder has that were given anew since: revoked (or left) and shared again.

    A position taken while the current share existed is never behind its ``granted_seq`` (the
    share's transaction read it, and positions are read after the share is seen), so a
    position behind it comes from an earlier grant. The journal between would show the holder
    what happened while they had no access; the new grant is a new mount instead."""
    return {ws for ws, m in view.items() if m.share_id is not None and ws in had
            and (since.get(ws, -1) < m.granted_seq or had[ws][1] != m.prefix)}


async def view_changes(db: Any, cursor: Cursor, view: Mapping[str, Mount],
                       seqs: Mapping[str, int], since: Mapping[str, int] | None = None
                       ) -> ViewChange | None:
    """What changed in *which folders are shared with the user* since ``cursor``: a folder
    shared since comes as a full listing (its journal does not hold what was there before:
    here its mount folder, then its contents in pages, see ``Cursor.listing``), one unshared
    since as a delete, one shared anew (revoked, then shared again) as both, so that nothing of
    the time between reaches the user. None when nothing changed.

    ``seqs`` are the journal positions read with ``view`` (read_view): a new mount's journal
    continues from there. ``since`` are the positions to judge renewals by (default: the
    cursor's); a long poll passes the ones it started from, since the page it read may have
    moved past a re-grant.
    """
    assert cursor.positions is not None
    had = cursor.mounts or {}
    renewed = _renewed(view, had, cursor.positions if since is None else since)
    added = [m for ws, m in view.items()
             if m.share_id is not None and (ws not in had or ws in renewed)]
    gone = [ws for ws in had if ws not in view or ws in renewed]
    if not added and not gone:
        return None
    now = time.time()
    out = [synthetic(ws, had[ws][0], had[ws][1], "delete", now) for ws in gone]
    positions = {ws: p for ws, p in cursor.positions.items() if ws in view and ws not in gone}
    first = not any(m.share_id is not None for ws, m in view.items()
                    if ws in had and ws not in renewed)
    for m in added:
        positions[m.workspace_id] = seqs[m.workspace_id]  # taken before the listing
        out += await _mount_folder(db, m, first)
        first = False
    return ViewChange(out, positions, frozenset(gone),
                      tuple(sorted(m.workspace_id for m in added)))


async def in_one_view(hub: Hub, workspace_id: str, read: Callable[[], Awaitable[T]],
                      mark: Callable[[], Awaitable[object]] | None = None) -> T | None:
    """``read()`` (which reads the user's mounts, then trees or journal below them), again
    while a share change of the user's (share, revoke, leave) commits during it; None if one
    did every time. A share change bumps the hub's view epoch after its commit and before any
    later write begins (post-commit hooks run under the write lock), and ``read`` reads the
    mounts fresh (read_view) after the epoch is taken, so an unchanged epoch means that
    nothing ``read`` saw was written after a change its mounts do not show: no listing of a
    folder taken back meanwhile, no page of what happened after a revoke. Listings check that
    they are not older than the view (``StaleRead``).

    With several server processes, a share change committed by another process reaches this
    one's hub a little later (meta/pg_listen), too late for that argument. ``mark`` (then
    given, :func:`share_marker`) reads from the database something every revoke and leave of
    the user's changes; read before and after ``read``, it catches a revoke whose announcement
    has not arrived: any entry ``read`` saw that was committed after the revoke is read, so the
    revoke had committed before the second mark is read."""
    for _ in range(VIEW_TRIES):
        epoch = hub.view_epoch(workspace_id)
        before = await mark() if mark is not None else None
        try:
            result = await read()
        except StaleRead:  # a listing older than the view it lists for: read again
            continue
        if hub.view_epoch(workspace_id) == epoch and (
                mark is None or await mark() == before):
            return result
    return None


def share_marker(db: Any, user_id: str) -> Callable[[], Awaitable[object]] | None:
    """On a database several server processes share (PostgreSQL), what ``in_one_view`` and the
    long poll read to see a revoke another process committed (see :func:`in_one_view`); None on
    SQLite, where one process serves the database and the hub's epoch is enough."""
    if getattr(db, "origin", None) is None:
        return None

    async def mark() -> object:
        # Every poll a commit wakes asks at once: one read for all of them, sent after each
        # asked (meta/shared_reads.py says why that is as fresh as a read of one's own).
        return await db.shared_reads.read(("revocations", user_id),
                                          lambda: accounts.revocations_of(db, user_id))
    return mark
