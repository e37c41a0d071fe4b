"""The one place that decides whether a user may do something to a file.

Every route asks :func:`authorize` (or :func:`role_for`) instead of comparing owner ids itself.
A user's role on a file is ``owner`` when they own the file's workspace, otherwise the strongest
share on the file or any folder above it (``edit`` or ``view``), otherwise nothing — and
"nothing" is answered with 404, exactly as for an id that does not exist, so probing ids reveals
nothing about other people's files.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from .errors import Forbidden, NotFound
from .meta.db import Row


class Query(Protocol):
    async def fetchone(self, sql: str, params: tuple = ...) -> Row | None: ...
    async def fetchall(self, sql: str, params: tuple = ...) -> list[Row]: ...


class Action(Enum):
    READ = "read"          # metadata, listing, download, versions
    WRITE = "write"        # new version, create inside, rename/move, restore a version
    DELETE = "delete"      # move to the trash (which is the owner's)
    PURGE = "purge"        # restore from the trash, delete for good: the owner's trash, the owner's call
    SHARE = "share"        # share with people, create links


ROLE_ALLOWS: dict[str, frozenset[Action]] = {
    "owner": frozenset(Action),
    "edit": frozenset({Action.READ, Action.WRITE, Action.DELETE}),
    "view": frozenset({Action.READ}),
}

_ROLE_STRENGTH = {"view": 1, "edit": 2, "owner": 3}


async def role_for(q: Query, user_id: str, file: Row) -> str | None:
    """The user's role on ``file``: 'owner', 'edit', 'view' or None."""
    owner = await q.fetchone("SELECT owner_id FROM workspaces WHERE id = ?",
                             (file["workspace_id"],))
    if owner is not None and owner["owner_id"] == user_id:
        return "owner"
    rows = await q.fetchall(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "  SELECT id, parent_id FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id FROM files f JOIN up ON f.id = up.parent_id)"
        " SELECT s.permission FROM shares s JOIN up ON s.file_id = up.id"
        # A shared folder in its owner's trash gives nobody access any more.
        " JOIN files sf ON sf.id = s.file_id AND sf.trashed_at IS NULL WHERE s.grantee_id = ?",
        (file["id"], user_id))
    roles = [r["permission"] for r in rows]
    return max(roles, key=_ROLE_STRENGTH.__getitem__) if roles else None


async def authorize(q: Query, user_id: str, action: Action, file_id: str) -> Row:
    """Return the file row if ``user_id`` may do ``action`` on it; raise 404 or 403 otherwise."""
    file = await q.fetchone("SELECT * FROM files WHERE id = ?", (file_id,))
    if file is None:
        raise NotFound("no such file")
    role = await role_for(q, user_id, file)
    if role is None:
        raise NotFound("no such file")
    if action not in ROLE_ALLOWS[role]:
        raise Forbidden(f"your access to this file is {role!r}, which does not allow {action.value}")
    return file


async def readable_block_sizes(q: Query, user_id: str, hashes: list[str]) -> dict[str, int]:
    """Of ``hashes``, those the user may already read, with their sizes.

    A block is readable when a version of a file the user can read references it (their own
    workspaces, or anything below a folder shared with them). Only such blocks may be skipped on
    upload: knowing a hash must never be enough to claim someone else's data.
    """
    found: dict[str, int] = {}
    unique = sorted(set(hashes))
    for i in range(0, len(unique), 500):
        chunk = unique[i: i + 500]
        marks = ",".join("?" * len(chunk))
        rows = await q.fetchall(
            "SELECT vb.block_hash, vb.size FROM version_blocks vb"
            " JOIN file_versions v ON v.id = vb.version_id JOIN files f ON f.id = v.file_id"
            " JOIN workspaces w ON w.id = f.workspace_id"
            f" WHERE w.owner_id = ? AND vb.block_hash IN ({marks})", (user_id, *chunk))
        rows += await q.fetchall(
            "WITH RECURSIVE shared(id) AS ("
            "  SELECT s.file_id FROM shares s JOIN files sf ON sf.id = s.file_id"
            "  WHERE s.grantee_id = ? AND sf.trashed_at IS NULL"
            "  UNION SELECT f.id FROM files f JOIN shared s ON f.parent_id = s.id)"
            " SELECT vb.block_hash, vb.size FROM version_blocks vb"
            " JOIN file_versions v ON v.id = vb.version_id JOIN shared s ON s.id = v.file_id"
            f" WHERE vb.block_hash IN ({marks})", (user_id, *chunk))
        for r in rows:
            found[r["block_hash"]] = r["size"]
    return found
