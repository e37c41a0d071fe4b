"""Invariants of the metadata that no single unit of work shows, checked as a whole.

Run by ``drive-server check`` and after every test server (tests/helpers.py), so that a unit of
work that breaks one is caught by whichever test happens to reach that state, not only by a
test written for it.
"""

from __future__ import annotations

from typing import Any

# Every item's workspace is what the tree says it is: the shared workspace of the folder it is
# in if that folder is shared, else its parent's. (A shared folder's own row stays in its
# parent's workspace: it is an item of the owner's tree.) Migration 9 repairs the one known way
# this was broken (issue 12, finding 6).
_MISPLACED = """
WITH RECURSIVE want(id, ws) AS (
    SELECT id, workspace_id FROM files WHERE parent_id IS NULL
    UNION ALL
    SELECT c.id, COALESCE((SELECT w.id FROM workspaces w
                           WHERE w.root_id = want.id AND w.kind = 'shared'), want.ws)
    FROM files c JOIN want ON c.parent_id = want.id
)
SELECT f.id, f.name, f.workspace_id, want.ws AS expected
FROM want JOIN files f ON f.id = want.id WHERE f.workspace_id != want.ws
LIMIT 100
"""


async def misplaced_items(q: Any) -> list[str]:
    """Items whose workspace disagrees with their place in the tree (at most 100), described."""
    return [f"{r['id']} ({r['name']!r}) is in workspace {r['workspace_id']}, "
            f"its folder says {r['expected']}" for r in await q.fetchall(_MISPLACED)]
