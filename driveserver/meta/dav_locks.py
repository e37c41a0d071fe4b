"""WebDAV write locks (RFC 4918 sections 6-7): stored, found, refreshed and removed.

A lock is held on an item (its file id, so a rename does not lose it, and everyone who sees
the item through a share sees the lock) with depth 0 or infinity (-1), and expires at
``expires_at``; expired rows are ignored and dropped by the next change. Kept in the database
rather than in memory so that several server processes (PostgreSQL, later) agree on them;
the common case, no lock anywhere, costs one indexed look-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .db import Row, Tx

INFINITY = -1


@dataclass(frozen=True)
class Lock:
    token: str
    file_id: str
    user_id: str
    scope: str  # "exclusive" or "shared"
    depth: int  # 0 or INFINITY
    owner: str  # the owner element's XML, as the client sent it ("" if none)
    root: str  # the href the lock was taken on
    timeout: float
    expires_at: float

    @classmethod
    def from_row(cls, r: Row) -> Lock:
        return cls(r["token"], r["file_id"], r["user_id"], r["scope"], int(r["depth"]),
                   r["owner"], r["root"], float(r["timeout"]), float(r["expires_at"]))


async def any_live(q: Any, now: float) -> bool:
    """Whether any lock is held anywhere (most servers hold none: then nothing else is asked)."""
    return await q.fetchone("SELECT 1 FROM dav_locks WHERE expires_at > ? LIMIT 1",
                            (now,)) is not None


async def locks_above(q: Any, file_id: str, now: float) -> list[tuple[Lock, int]]:
    """The live locks on ``file_id`` and on every folder above it, each with how many levels
    up it is held (0 = on the item itself)."""
    rows = await q.fetchall(
        "WITH RECURSIVE up(id, parent_id, level) AS ("
        "  SELECT id, parent_id, 0 FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id, up.level + 1 FROM files f"
        "  JOIN up ON f.id = up.parent_id)"
        " SELECT l.*, up.level FROM dav_locks l JOIN up ON up.id = l.file_id"
        " WHERE l.expires_at > ? ORDER BY up.level", (file_id, now))
    return [(Lock.from_row(r), int(r["level"])) for r in rows]


async def locks_below(q: Any, file_id: str, now: float) -> list[Lock]:
    """The live locks on live items strictly below ``file_id``."""
    rows = await q.fetchall(
        "WITH RECURSIVE down(id) AS (SELECT id FROM files WHERE parent_id = ?"
        "  AND trashed_at IS NULL UNION ALL SELECT f.id FROM files f"
        "  JOIN down ON f.parent_id = down.id WHERE f.trashed_at IS NULL)"
        " SELECT l.* FROM dav_locks l JOIN down ON down.id = l.file_id"
        " WHERE l.expires_at > ?", (file_id, now), **_offload(q))
    return [Lock.from_row(r) for r in rows]


def _offload(q: Any) -> dict[str, bool]:
    """A walk down a whole subtree leaves the loop's thread in a transaction (the reader's
    statements run in its own thread already)."""
    return {"offload": True} if isinstance(q, Tx) else {}


async def lock_by_token(q: Any, token: str, now: float) -> Lock | None:
    row = await q.fetchone("SELECT * FROM dav_locks WHERE token = ? AND expires_at > ?",
                           (token, now))
    return None if row is None else Lock.from_row(row)


async def live_locks_of(q: Any, user_id: str, now: float) -> int:
    """How many live locks ``user_id`` holds (a lock is a row: they are bounded per user)."""
    return int(await q.fetchval("SELECT COUNT(*) FROM dav_locks WHERE user_id = ?"
                                " AND expires_at > ?", (user_id, now)))


async def add_lock(tx: Tx, lock: Lock) -> None:
    await tx.execute("DELETE FROM dav_locks WHERE expires_at <= ?", (tx.now,))
    await tx.execute(
        "INSERT INTO dav_locks (token, file_id, user_id, scope, depth, owner, root, timeout,"
        " created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (lock.token, lock.file_id, lock.user_id, lock.scope, lock.depth, lock.owner, lock.root,
         lock.timeout, tx.now, lock.expires_at))


async def refresh_lock(tx: Tx, token: str, seconds: float) -> None:
    await tx.execute("UPDATE dav_locks SET timeout = ?, expires_at = ? WHERE token = ?",
                     (seconds, tx.now + seconds, token))


async def remove_lock(tx: Tx, token: str) -> None:
    await tx.execute("DELETE FROM dav_locks WHERE token = ?", (token,))


async def remove_locks_on(tx: Tx, file_id: str) -> None:
    """Locks held on ``file_id`` itself end (it was moved, or deleted with what is below it:
    those rows no longer resolve and expire by themselves)."""
    await tx.execute("DELETE FROM dav_locks WHERE file_id = ?", (file_id,))
