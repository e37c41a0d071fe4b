"""How deep an item lies, and whether a change keeps everything within ``MAX_DEPTH``.

Depth is counted in the owner's tree (the one every walk climbs), at most 256 levels (issue 12,
finding 4). The walks up are bounded by that limit and run inline; the walk down a subtree
(:func:`reaches`) can read many rows, so it runs in a worker thread.
"""

from __future__ import annotations

from typing import Any

from driveproto.names import MAX_DEPTH

from ..paths import too_deep
from .db import Row


async def depth_of(q: Any, file: Row) -> int:
    """How many folders ``file`` lies below its owner's root (0 for the root itself)."""
    if file["parent_id"] is None:
        return 0
    return int(await q.fetchval(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "  SELECT id, parent_id FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id FROM files f JOIN up ON f.id = up.parent_id)"
        " SELECT COUNT(*) - 1 FROM up", (file["id"],)))


async def reaches(q: Any, file: Row, levels: int, *, restoring: bool = False) -> bool:
    """Whether anything live lies ``levels`` or more below ``file`` (with ``restoring``: of
    what a restore of ``file`` brings back). The walk stops at that depth, so it reads only
    the part of the subtree above it."""
    if not file["is_directory"]:
        return False
    # The "|| ''" keeps the trash-root index out of the walk (it reaches the children by the
    # parent index): PostgreSQL, whose estimates for a recursive step are guesses, and before
    # its statistics know of a fresh 100,000-item trash, intersected the two indexes for every
    # row of the walk, reading the whole trash each time (a restore held the writer for
    # minutes).
    which, params = (("f.trash_root_id || '' = ?", (file["id"], file["id"])) if restoring
                     else ("f.trashed_at IS NULL", (file["id"],)))
    return await q.fetchone(
        "WITH RECURSIVE down(id, depth) AS (SELECT ?, 0 UNION ALL"
        "  SELECT f.id, down.depth + 1 FROM files f JOIN down ON f.parent_id = down.id"
        f"  WHERE {which} AND down.depth < ?)"
        " SELECT 1 FROM down WHERE depth >= ? LIMIT 1", (*params, levels, levels),
        offload=True) is not None


async def check_depth(q: Any, base: Row, levels: int) -> None:
    """Refuse (400 ``path_too_deep``) to put anything ``levels`` below ``base`` deeper than
    ``MAX_DEPTH`` in its owner's drive. Depth is counted there, not in the asker's view: it is
    the owner's tree that every walk climbs."""
    if levels > MAX_DEPTH or await depth_of(q, base) + levels > MAX_DEPTH:
        raise too_deep()


async def check_subtree_depth(q: Any, file: Row, parent: Row, *, restoring: bool = False
                               ) -> None:
    """Refuse to put ``file`` into ``parent`` if something below it would then lie deeper than
    ``MAX_DEPTH`` (``file`` itself is checked by the caller). A move needs the walk down only
    when it takes the item deeper; a restore always does, since whatever its subtree fitted
    under when it was trashed may have moved deeper since."""
    new_depth = await depth_of(q, parent) + 1
    if not restoring and new_depth <= await depth_of(q, file):
        return
    if await reaches(q, file, MAX_DEPTH - new_depth + 1, restoring=restoring):
        raise too_deep()
