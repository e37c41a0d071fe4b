"""The ``notifications`` and ``notify_marks`` tables: the reads and units of work behind
:mod:`driveserver.sync.notifications`.

What a notification says and whom it is for is decided there (derived from the journal, after
its commit); here are only the statements. :func:`add_notification` is also called by the
sharing units of work (:mod:`driveserver.meta.shares`) inside their own transactions, for what
the journal cannot say ("shared with you", "left your folder").

How far the notifier has read each workspace's journal (``notify_marks``) is written in the same
transaction as the notifications it produced (:func:`record_notifications`), so a crash neither
loses nor duplicates any.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from driveproto.names import SHARED_ROOT

from .db import Database, Row, Tx
from .mounts import owner_path

READ_CHUNK = 500  # ids per UPDATE ... IN (...) of mark_read


async def add_notification(tx: Tx, *, user_id: str, actor_id: str, action: str, file_id: str,
                           workspace_id: str, path: str, is_directory: bool,
                           seq: int | None = None) -> int:
    """Notify ``user_id`` (inside the caller's transaction); return the notification id.

    Public so that a route can notify directly when the journal cannot say whom to tell (the
    sharing route: "shared with you"). An unread notification of the same kind about the same
    file by the same person is replaced by this one, with its count carried over.
    """
    old = await tx.fetchone(
        "SELECT id, count FROM notifications WHERE user_id = ? AND file_id = ? AND actor_id = ?"
        " AND action = ? AND read_at IS NULL", (user_id, file_id, actor_id, action))
    count = 1
    if old is not None:
        count += int(old["count"])
        await tx.execute("DELETE FROM notifications WHERE id = ?", (old["id"],))
    cur = await tx.execute(
        "INSERT INTO notifications (user_id, workspace_id, file_id, actor_id, action, path,"
        " is_directory, seq, count, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (user_id, workspace_id, file_id, actor_id, action, path, int(is_directory), seq, count,
         tx.now))
    return int(cur.lastrowid or 0)


# --- the notifier's reads and writes ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Viewer:
    """Someone who follows a workspace's journal: where they see its root, and from which
    position on its entries are theirs to hear of (0: all of them)."""

    user_id: str
    prefix: str
    after_seq: int = 0


async def audience(q: Any, workspace_id: str, owner_id: str) -> list[Viewer]:
    """Who follows ``workspace_id``'s journal, read at once: its owner, and for a shared folder
    (not in its owner's trash) everyone it is shared with, from the grant on.

    A notification's path is the entry's own path (relative to the workspace, as it was when
    the change was made) under the viewer's mount: it never comes from the file's row read
    later, which may be in another workspace by then (a folder shared while files are created
    in it), so it cannot name a folder above what the viewer was given."""
    root = await q.fetchone(
        "SELECT w.kind, w.root_id, f.trashed_at FROM workspaces w JOIN files f"
        " ON f.id = w.root_id WHERE w.id = ?", (workspace_id,))
    if root is None or root["kind"] != "shared":
        return [Viewer(owner_id, "")]
    out = [Viewer(owner_id, await owner_path(q, root["root_id"]))]
    if root["trashed_at"] is None:
        out += [Viewer(r["grantee_id"], f"/{SHARED_ROOT}/{r['mount_name']}",
                       int(r["granted_seq"])) for r in await q.fetchall(
            "SELECT grantee_id, mount_name, granted_seq FROM shares WHERE file_id = ?",
            (root["root_id"],))]
    return out


async def unread_workspaces(q: Any) -> list[str]:
    """Workspaces whose journal goes on past the notifier's stored mark (a crash left them)."""
    rows = await q.fetchall(
        "SELECT w.id FROM workspaces w LEFT JOIN notify_marks m ON m.workspace_id = w.id"
        " WHERE w.seq > COALESCE(m.seq, 0)")
    return [r["id"] for r in rows]


async def notify_mark(q: Any, workspace_id: str) -> int:
    """The last journal seq of ``workspace_id`` the notifier has stored as read (0: none)."""
    value = await q.fetchval(
        "SELECT seq FROM notify_marks WHERE workspace_id = ?", (workspace_id,))
    return int(value or 0)


async def entries_after(q: Any, workspace_id: str, after: int, limit: int) -> list[Row]:
    """Up to ``limit`` journal entries of ``workspace_id`` after seq ``after``, in order, each
    with the workspace's ``owner_id``."""
    return list(await q.fetchall(
        "SELECT j.*, w.owner_id FROM journal j JOIN workspaces w"
        " ON w.id = j.workspace_id WHERE j.workspace_id = ? AND j.seq > ?"
        " ORDER BY j.seq LIMIT ?", (workspace_id, after, limit)))


async def is_shared_workspace(q: Any, workspace_id: str) -> bool:
    return bool(await q.fetchval(
        "SELECT 1 FROM workspaces WHERE id = ? AND kind = 'shared'", (workspace_id,)))


async def store_mark(tx: Tx, workspace_id: str, seq: int) -> None:
    """Remember that the notifier has read ``workspace_id``'s journal through ``seq`` (a mark
    never moves back)."""
    await tx.execute(
        "INSERT INTO notify_marks (workspace_id, seq) VALUES (?, ?) ON CONFLICT"
        " (workspace_id) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > notify_marks.seq",
        (workspace_id, seq))


async def record_notifications(tx: Tx, workspace_id: str, notes: Iterable[Mapping[str, Any]],
                               through: int) -> None:
    """A unit of work: the notifications derived from ``workspace_id``'s journal through
    ``through`` (each the keyword arguments of :func:`add_notification`), and the mark that
    says they were, in one transaction.

    The stored mark is read again here: with several server processes on one database, another
    process may have recorded some of these entries since this one last read the mark (each
    keeps its own copy), and those are skipped rather than notified twice. Two processes
    recording the same entries at once both write the mark's row, so PostgreSQL's
    SERIALIZABLE runs one of them again, which then finds the other's mark."""
    done = await notify_mark(tx, workspace_id)
    for note in notes:
        if note.get("seq") is None or note["seq"] > done:
            await add_notification(tx, **note)
    await store_mark(tx, workspace_id, through)


async def store_marks(tx: Tx, marks: Mapping[str, int]) -> None:
    """A unit of work: store every mark in ``marks`` (workspace id → seq)."""
    for ws, seq in marks.items():
        await store_mark(tx, ws, seq)


async def prune_notifications(db: Database, retention_days: float, *,
                              now: float | None = None) -> int:
    """Delete notifications older than ``retention_days`` (for the periodic maintenance task)."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    async with db.transaction(offload=True) as tx:
        cur = await tx.execute("DELETE FROM notifications WHERE created_at < ?", (cutoff,))
    return max(cur.rowcount, 0)


# --- what the routes read and write -----------------------------------------------------------

async def list_for(q: Any, user_id: str, before: int, limit: int, only_unread: bool
                   ) -> list[Row]:
    """``user_id``'s notifications with an id below ``before``, newest first, each with the
    actor's ``email``: at most ``limit`` rows (callers ask for one more to see if more wait)."""
    unread = " AND n.read_at IS NULL" if only_unread else ""
    return list(await q.fetchall(
        "SELECT n.*, u.email FROM notifications n LEFT JOIN users u ON u.id = n.actor_id"
        f" WHERE n.user_id = ? AND n.id < ?{unread} ORDER BY n.id DESC LIMIT ?",
        (user_id, before, limit)))


async def unread_count(q: Any, user_id: str) -> int:
    return int(await q.fetchval(
        "SELECT COUNT(*) FROM notifications WHERE user_id = ? AND read_at IS NULL", (user_id,)))


async def mark_read(tx: Tx, user_id: str, ids: list[int] | None) -> int:
    """A unit of work: mark ``ids`` read (only ``user_id``'s own), or all of theirs if ``ids``
    is None; return how many were unread."""
    marked = 0
    if ids is None:
        cur = await tx.execute(
            "UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL",
            (tx.now, user_id))
        marked = max(cur.rowcount, 0)
    for i in range(0, len(ids or ()), READ_CHUNK):
        chunk = (ids or [])[i: i + READ_CHUNK]
        cur = await tx.execute(
            "UPDATE notifications SET read_at = ? WHERE user_id = ? AND read_at IS NULL"
            f" AND id IN ({','.join('?' * len(chunk))})", (tx.now, user_id, *chunk))
        marked += max(cur.rowcount, 0)
    return marked
