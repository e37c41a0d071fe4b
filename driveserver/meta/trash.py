"""A user's trash as they see it: the items they (or anyone, in their shared folders) moved
there, each listed once at the top of what went with it. Moving to and out of the trash, and
deleting for good, are units of work of :class:`driveserver.meta.tree.Tree`."""

from __future__ import annotations

from .access import Query
from .db import Row


async def trash_items(q: Query, owner_id: str) -> list[Row]:
    """The trash roots in the workspaces ``owner_id`` owns (the trash is the owner's), most
    recently trashed first."""
    return await q.fetchall(
        "SELECT f.* FROM files f JOIN workspaces w ON w.id = f.workspace_id"
        " WHERE w.owner_id = ? AND f.trash_root_id = f.id ORDER BY f.trashed_at DESC",
        (owner_id,))
