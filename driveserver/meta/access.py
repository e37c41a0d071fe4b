"""The facts permission decisions rest on: who owns a workspace, which shares lie on or above a
file, a share with the rows around it, a device's owner, the blocks a user can already read.

:mod:`driveserver.permissions` makes every decision; this module only reads what it decides
from. It imports nothing but the row type, so that ``permissions`` can import it while
``meta.mounts``, ``meta.tree`` and ``meta.shares`` import ``permissions``.

Each function is a read of the Database, a snapshot or a transaction (anything with
``fetchone``/``fetchall``, see :class:`Query`), and writes nothing.
"""

from __future__ import annotations

from typing import Protocol

from .db import Row


class Query(Protocol):
    """What these reads need of the Database, a snapshot or a transaction."""

    async def fetchone(self, sql: str, params: tuple = ...) -> Row | None: ...
    async def fetchall(self, sql: str, params: tuple = ...) -> list[Row]: ...


# IN lists are cut to this many values: SQLite's default limit on parameters is far higher
# today, but older builds had 999.
CHUNK = 500


async def file_by_id(q: Query, file_id: str) -> Row | None:
    """The file's row, trashed or not, or None."""
    return await q.fetchone("SELECT * FROM files WHERE id = ?", (file_id,))


async def workspace_owner_id(q: Query, workspace_id: str) -> str | None:
    """The id of the user who owns ``workspace_id``, or None for no such workspace."""
    row = await q.fetchone("SELECT owner_id FROM workspaces WHERE id = ?", (workspace_id,))
    return None if row is None else str(row["owner_id"])


async def shares_above(q: Query, file_id: str, grantee_id: str) -> list[Row]:
    """The shares with ``grantee_id`` of ``file_id`` or of any folder above it: their
    ``permission`` and the shared folder's ``folder_trashed_at``."""
    return await q.fetchall(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "  SELECT id, parent_id FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id FROM files f JOIN up ON f.id = up.parent_id)"
        " SELECT s.permission, sf.trashed_at AS folder_trashed_at"
        " FROM shares s JOIN up ON s.file_id = up.id"
        " JOIN files sf ON sf.id = s.file_id WHERE s.grantee_id = ?",
        (file_id, grantee_id))


async def is_shared_with(q: Query, file_id: str, grantee_id: str) -> bool:
    """Whether ``file_id`` itself is shared with ``grantee_id`` (a share row exists)."""
    row = await q.fetchone("SELECT 1 FROM shares WHERE file_id = ? AND grantee_id = ?",
                           (file_id, grantee_id))
    return row is not None


async def share_with_context(q: Query, share_id: str) -> Row | None:
    """The share with what its units of work need: the recipient's personal workspace
    (``grantee_workspace``, whose devices are woken), the shared folder's workspace
    (``shared_workspace``) and its owner (``owner_id``)."""
    return await q.fetchone(
        "SELECT s.*, u.workspace_id AS grantee_workspace, w.id AS shared_workspace,"
        " w.owner_id FROM shares s JOIN users u ON u.id = s.grantee_id"
        " LEFT JOIN workspaces w ON w.root_id = s.file_id AND w.kind = 'shared'"
        " WHERE s.id = ?", (share_id,))


async def device_row(q: Query, device_id: str) -> Row | None:
    """The device's owner (``user_id``) and ``removed_at``, or None for no such device."""
    return await q.fetchone("SELECT user_id, removed_at FROM devices WHERE id = ?",
                            (device_id,))


# Both block look-ups start from the blocks' hashes and only then ask whose files reference
# them, so that a look-up costs what the hashes' own references cost, however large the user's
# drive. Written as joins, PostgreSQL's generic plan (used once asyncpg has prepared a
# statement) went the other way round: it read every file the user owns (1 ms for 500 files, on
# each upload-init and complete) and walked every file below every folder shared with them. A
# scalar subquery per referencing version is never turned into such a join, on either backend.
# The cost moved rather than vanished: a look-up now reads every reference to the hash, whoever
# holds it, so a block that very many versions share (4 KiB of zeros, say; an attacker can make
# 50,000 references within an ordinary quota: 200 MB of zeros) makes its look-up slow: about
# 50 ms on SQLite and 300 ms on PostgreSQL for 50,000, measured in review. SQLite's plan for
# the owned query was already this one. Bounding both sides needs the workspace beside the
# hash in an index of version_blocks (kept right when files move between workspaces); not done.

async def block_sizes_in_owned_workspaces(q: Query, user_id: str, hashes: list[str]
                                          ) -> dict[str, int]:
    """Of ``hashes``, those a version of a file in a workspace ``user_id`` owns (their drive
    and the folders they shared) references, with their sizes."""
    return await _sizes_by_hash(
        q, "SELECT vb.block_hash, vb.size FROM version_blocks vb"
           " WHERE vb.block_hash IN ({marks}) AND ("
           "  SELECT w.owner_id FROM file_versions v JOIN files f ON f.id = v.file_id"
           "  JOIN workspaces w ON w.id = f.workspace_id WHERE v.id = vb.version_id) = ?",
        hashes, (user_id,))


async def block_sizes_below_live_shares(q: Query, grantee_id: str, hashes: list[str]
                                        ) -> dict[str, int]:
    """Of ``hashes``, those a version of a file below a folder shared with ``grantee_id``
    references, with their sizes; a shared folder in its owner's trash counts for nothing
    (the same rule as ``permissions.role_for``). From each file referencing a block, the walk
    goes up its folders to a share with the grantee (the tree's depth bound limits each walk);
    for a user nothing is shared with (most), only the look-up of their shares runs."""
    return await _sizes_by_hash(
        q, "WITH RECURSIVE found AS ("
           "  SELECT vb.block_hash, vb.size, v.file_id FROM version_blocks vb"
           "  JOIN file_versions v ON v.id = vb.version_id WHERE vb.block_hash IN ({marks})"
           "  AND EXISTS (SELECT 1 FROM shares WHERE grantee_id = ?)),"
           " up(block_hash, size, id) AS ("
           "  SELECT block_hash, size, file_id FROM found"
           "  UNION SELECT up.block_hash, up.size, f.parent_id FROM up JOIN files f ON f.id = up.id"
           "  WHERE f.parent_id IS NOT NULL)"
           " SELECT up.block_hash, up.size FROM up JOIN shares s ON s.file_id = up.id"
           " JOIN files sf ON sf.id = s.file_id"
           " WHERE s.grantee_id = ? AND sf.trashed_at IS NULL", hashes, (grantee_id, grantee_id))


async def _sizes_by_hash(q: Query, sql: str, hashes: list[str], after: tuple
                         ) -> dict[str, int]:
    """Run ``sql`` (``{marks}`` the list of hashes, then the parameters ``after``) over
    ``hashes`` a chunk at a time, under SQLite's bound on parameters: block hash -> size."""
    found: dict[str, int] = {}
    unique = sorted(set(hashes))
    for i in range(0, len(unique), CHUNK):
        chunk = unique[i: i + CHUNK]
        statement = sql.format(marks=",".join("?" * len(chunk)))
        for r in await q.fetchall(statement, (*chunk, *after)):
            found[r["block_hash"]] = r["size"]
    return found
