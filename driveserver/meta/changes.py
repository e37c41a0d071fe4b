"""The reads behind the change feed (:mod:`driveserver.sync.feed`) and each device's stored cursor.

Only statements live here; what they mean for a device (compaction, cursors, resets, listings
in pages) is decided in :mod:`driveserver.sync`. Every read takes its connection ``q`` from the
caller, which chooses where it runs: the database's shared reader (a worker thread, for journal
pages and tree listings, which may scan) or :meth:`Database.snapshot` (the loop's thread, for a
few indexed lookups on one consistent state); see :mod:`driveserver.meta.db`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .db import Row, Tx


async def current_positions(q: Any, workspace_ids: Iterable[str]) -> dict[str, int]:
    ids = sorted(workspace_ids)
    if not ids:
        return {}
    rows = await q.fetchall(
        f"SELECT id, seq FROM workspaces WHERE id IN ({','.join('?' * len(ids))})", ids)
    return {r["id"]: int(r["seq"]) for r in rows}


async def journal_bounds(q: Any, workspace_ids: list[str]) -> dict[str, Row]:
    """Workspace id → its row ``(id, seq, floor)``: the journal holds the entries after
    ``floor`` (what pruning left) up to ``seq``. A workspace that does not exist has no row."""
    marks = ",".join("?" * len(workspace_ids))
    return {r["id"]: r for r in await q.fetchall(
        "SELECT w.id, w.seq, COALESCE(f.pruned_through, 0) AS floor FROM workspaces w"
        f" LEFT JOIN journal_floors f ON f.workspace_id = w.id WHERE w.id IN ({marks})",
        workspace_ids)}


async def journal_after(q: Any, workspace_id: str, after: int, limit: int) -> list[Row]:
    """Up to ``limit`` journal entries of ``workspace_id`` after seq ``after``, in order."""
    return list(await q.fetchall(
        "SELECT * FROM journal WHERE workspace_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (workspace_id, after, limit)))


SNAPSHOT_SQL = (
    "WITH RECURSIVE t(id, path, depth) AS ("
    "  SELECT id, '', 0 FROM files WHERE id = ?1"
    "  UNION ALL SELECT f.id, t.path || '/' || f.name, t.depth + 1"
    "  FROM files f JOIN t ON f.parent_id = t.id"
    # A shared folder is listed apart. The "|| ''" keeps SQLite on the parent index (as a
    # unary + would, which PostgreSQL refuses on text): with the (workspace_id, trashed_at)
    # index it rescans the whole workspace at every step.
    "  WHERE f.trashed_at IS NULL AND f.workspace_id || '' = ?2),"
    " page AS (SELECT f.*, t.path AS full_path, t.depth AS depth FROM t JOIN files f"
    "  ON f.id = t.id"
    "  WHERE t.depth > 0 AND (f.is_directory = 1 OR f.version > 0)"  # not a pending first upload
    "  AND (t.depth > ?3 OR (t.depth = ?4 AND t.id > ?5)) ORDER BY t.depth, t.id LIMIT ?6)"
    # The workspace's journal position in the same statement, so in the same state as the
    # rows (one row of NULLs besides it when the page is empty): see sync.feed.snapshot_page.
    " SELECT w.seq AS ws_seq, page.* FROM workspaces w LEFT JOIN page ON TRUE WHERE w.id = ?2"
    " ORDER BY page.depth, page.id")


async def snapshot_rows(q: Any, root_id: str, workspace_id: str, depth: int, after: str,
                        limit: int) -> list[Row]:
    """Up to ``limit`` live items of the tree below ``root_id`` in ``workspace_id`` that come
    after ``(depth, after)`` in (depth, id) order, each with its ``full_path`` and ``depth``
    below the root, and every row with the workspace's journal position ``ws_seq`` read in the
    same statement. An empty page is one row whose item columns are all NULL."""
    return list(await q.fetchall(SNAPSHOT_SQL, (root_id, workspace_id, depth, depth, after,
                                                limit)))


# --- device cursors ---------------------------------------------------------------------------

async def device_cursor(q: Any, device_id: str) -> str | None:
    """The cursor ``device_id`` last acknowledged, or None if it never acknowledged one."""
    value = await q.fetchval("SELECT cursor FROM devices WHERE id = ?", (device_id,))
    return value if isinstance(value, str) else None


async def store_device_cursors(tx: Tx, cursors: Mapping[str, str]) -> None:
    """A unit of work: store each device's acknowledged cursor (device id → cursor) and mark
    the device seen now."""
    await tx.executemany(
        "UPDATE devices SET cursor = ?, last_seen_at = ? WHERE id = ?",
        [(token, tx.now, device_id) for device_id, token in cursors.items()])
