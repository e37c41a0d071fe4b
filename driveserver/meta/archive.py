"""What a zip download holds: the live items at and below each item a user picked, at their
paths relative to it (``POST``/``GET /api/files/zip``).

One walk down per picked item, however deep, bounded by a row count inside the recursion
itself (SQLite stops walking once it has that many rows, so a request for a folder of a
million items costs no more than the limit), on the parent index. Each file comes with the id
of its current version, whose blocks are read only when the file's turn comes in the stream,
so a plan of thousands of files holds no block lists.

Everything below a folder the user may read is readable by them (a role comes from the item's
workspace or a share on a folder above it, ``permissions.role_for``); the route checks every
picked item itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .db import Row
from .versions import BlockRef, version_blocks

# The picked item (its path is the name the caller gives it), then everything live below it
# that a listing would show (not a file whose first upload is pending).
_SUBTREE_SQL = (
    "WITH RECURSIVE down(id, path) AS ("
    "  SELECT id, ? FROM files WHERE id = ?"
    "  UNION ALL SELECT f.id, down.path || '/' || f.name FROM files f"
    "  JOIN down ON f.parent_id = down.id"
    "  WHERE f.trashed_at IS NULL AND (f.is_directory = 1 OR f.version > 0)"
    "  LIMIT ?)"
    " SELECT f.id, f.is_directory, f.executable, f.modified_at, down.path,"
    " v.id AS version_id, v.size AS version_size"
    " FROM down JOIN files f ON f.id = down.id"
    " LEFT JOIN file_versions v ON v.file_id = f.id AND v.version = f.version"
    " ORDER BY down.path")
# PostgreSQL allows no LIMIT inside a recursive query: the walk goes to the end of the subtree
# and the page is cut after sorting. The same rows whenever there are at most ``limit`` (the
# caller refuses a larger subtree either way); only the cost of a refused one differs.
_SUBTREE_SQL_PG = _SUBTREE_SQL.replace("  LIMIT ?)", ")") + " LIMIT ?"


@dataclass(frozen=True)
class Member:
    """One entry of the zip: a folder, or a file's current version."""

    file_id: str
    path: str           # relative, "/"-separated, no leading or trailing slash
    is_directory: bool
    size: int
    executable: bool
    modified_at: float
    version_id: int | None  # None for a folder


def _member(r: Row) -> Member:
    return Member(file_id=r["id"], path=r["path"], is_directory=bool(r["is_directory"]),
                  size=int(r["version_size"] or 0), executable=bool(r["executable"]),
                  modified_at=float(r["modified_at"]),
                  version_id=None if r["is_directory"] else r["version_id"])


async def subtree(q: Any, file_id: str, name: str, limit: int) -> list[Member]:
    """``file_id`` as ``name`` and the live items below it as ``name/...``, at most ``limit``
    of them (the caller asks for one more than it allows, to tell that there were more). A
    file without a committed version is left out."""
    sql = _SUBTREE_SQL if q.dialect == "sqlite" else _SUBTREE_SQL_PG
    rows = await q.fetchall(sql, (name, file_id, limit))
    return [_member(r) for r in rows if r["is_directory"] or r["version_id"] is not None]


async def member_blocks(q: Any, member: Member) -> list[BlockRef]:
    """The blocks of the member's version as planned, in order."""
    assert member.version_id is not None
    return await version_blocks(q, member.version_id)
