"""Which workspace an item belongs to, and moving a subtree from one workspace to another.

A workspace is a user's own tree or one shared folder's contents; an item's ``workspace_id``
says which, and journal entries and share access follow it. These statements walk a whole
subtree, which can be a hundred thousand rows, so they run in a worker thread
(``offload=True``): the single writer is held meanwhile, but the event loop, and with it every
long poll and read, goes on.
"""

from __future__ import annotations

from typing import Any

from .db import Row, Tx


async def kind_of(q: Any, workspace_id: str) -> str:
    return str(await q.fetchval("SELECT kind FROM workspaces WHERE id = ?", (workspace_id,)))


async def contains_shared_folder(q: Any, file: Row) -> bool:
    """Whether ``file`` is, or has below it, a shared folder's root (trashed items too)."""
    row = await q.fetchone(
        "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
        "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)"
        " SELECT 1 FROM workspaces w JOIN down ON w.root_id = down.id WHERE w.kind = 'shared'"
        " LIMIT 1", (file["id"],), offload=True)
    return row is not None


async def is_workspace_root(q: Any, file: Row) -> bool:
    """A shared folder's own row stays in its owner's tree when it moves there."""
    return await q.fetchone("SELECT 1 FROM workspaces WHERE root_id = ?", (file["id"],)) \
        is not None


async def set_workspace(tx: Tx, file: Row, workspace_id: str) -> None:
    """Put ``file`` and everything below it, trashed items too (so that a later restore finds
    them where they belong), into ``workspace_id``. The callers make sure no shared folder is
    below it: a shared folder's contents keep their own workspace."""
    await tx.execute(
        "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
        "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)"
        " UPDATE files SET workspace_id = ? WHERE id IN (SELECT id FROM down)",
        (file["id"], workspace_id), offload=True)
