"""Users, devices and sessions: the units of work behind accounts and logins."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..auth import hash_password, new_id
from ..emails import check_address, email_key, normal_email, skeleton
from ..errors import Conflict, NotFound
from .db import Database, Row, Tx

DEVICE_TYPES = ("desktop", "web", "ios", "android")


@dataclass(frozen=True)
class Principal:
    """An authenticated request: who, through which session, from which device."""

    user_id: str
    session_id: str
    device_id: str | None
    workspace_id: str


async def create_user(db: Database, email: str, password: str, quota_bytes: int) -> Row:
    """Create a user with their own workspace and its root folder (one transaction).

    An address that looks like an existing account's (same :func:`~driveserver.emails.skeleton`)
    is taken as well: checked inside the write transaction, so two simultaneous look-alikes
    cannot both get in. The check reads every address, which is fine for the accounts of one
    server (10,000 of them cost a few milliseconds) and keeps the schema free of a derived
    column that old rows would lack."""
    check_address(email)
    password_hash = hash_password(password)  # before the transaction: ~50 ms of CPU
    async with db.transaction() as tx:
        if await tx.fetchone("SELECT 1 FROM users WHERE email_key = ?", (email_key(email),)):
            raise Conflict("an account with this email already exists", code="email_taken")
        looks = skeleton(email)
        for other in await tx.fetchall("SELECT email FROM users"):
            if skeleton(other["email"]) == looks:
                raise Conflict("an account with an address that looks the same already exists;"
                               " choose another address", code="email_taken")
        user_id, workspace_id, root_id = new_id("u"), new_id("w"), new_id("f")
        await tx.execute(
            "INSERT INTO users (id, email, email_key, password_hash, quota_bytes, workspace_id,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (user_id, normal_email(email), email_key(email), password_hash, quota_bytes, workspace_id,
             tx.now))
        await tx.execute(
            "INSERT INTO workspaces (id, owner_id, kind, root_id, created_at) VALUES (?,?,?,?,?)",
            (workspace_id, user_id, "personal", root_id, tx.now))
        await tx.execute(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, created_at, modified_at) VALUES (?,?,NULL,'','',1,1,0,?,?)",
            (root_id, workspace_id, tx.now, tx.now))
        row = await tx.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    assert row is not None
    return row


async def user_by_email(q: Any, email: str) -> Row | None:
    return await q.fetchone("SELECT * FROM users WHERE email_key = ?", (email_key(email),))


async def user_by_id(q: Any, user_id: str) -> Row | None:
    return await q.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))


async def root_of(q: Any, user_id: str) -> Row:
    row = await q.fetchone(
        "SELECT f.* FROM users u JOIN workspaces w ON w.id = u.workspace_id"
        " JOIN files f ON f.id = w.root_id WHERE u.id = ?", (user_id,))
    assert row is not None, user_id
    return row


async def register_device(tx: Tx, user_id: str, name: str, device_type: str,
                          device_id: str | None = None, must_be_new: bool = False) -> str:
    """Reuse the user's live device named ``name`` (or ``device_id``), else create one.
    ``must_be_new``: a live device of that name is a 409 ``device_name_taken`` instead (a new
    folder must not pass for a device that exists: the feed leaves out a device's own changes)."""
    if device_id is not None:
        row = await tx.fetchone(
            "SELECT * FROM devices WHERE id = ? AND user_id = ? AND removed_at IS NULL",
            (device_id, user_id))
        if row is None:
            raise NotFound("no such device")
        await tx.execute("UPDATE devices SET name = ?, type = ?, last_seen_at = ? WHERE id = ?",
                         (name, device_type, tx.now, device_id))
        return device_id
    row = await tx.fetchone(
        "SELECT id FROM devices WHERE user_id = ? AND name = ? AND removed_at IS NULL"
        " ORDER BY created_at LIMIT 1", (user_id, name))
    if row is not None and must_be_new:
        raise Conflict(f"this account already has a device named {name!r}",
                       code="device_name_taken")
    if row is not None:
        await tx.execute("UPDATE devices SET type = ?, last_seen_at = ? WHERE id = ?",
                         (device_type, tx.now, row["id"]))
        return str(row["id"])
    device_id = new_id("d")
    await tx.execute(
        "INSERT INTO devices (id, user_id, name, type, created_at, last_seen_at)"
        " VALUES (?,?,?,?,?,?)", (device_id, user_id, name, device_type, tx.now, tx.now))
    return device_id


async def create_session(tx: Tx, user_id: str, device_id: str | None, lifetime: float) -> str:
    session_id = new_id("s")
    await tx.execute(
        "INSERT INTO sessions (id, user_id, device_id, created_at, expires_at)"
        " VALUES (?,?,?,?,?)", (session_id, user_id, device_id, tx.now, tx.now + lifetime))
    return session_id


async def principal_for_session(db: Database, session_id: str) -> Principal | None:
    """The principal of a live session: not revoked, not expired, device not removed."""
    row = await db.fetchone(
        "SELECT s.id, s.user_id, s.device_id, s.expires_at, u.workspace_id, d.removed_at"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " LEFT JOIN devices d ON d.id = s.device_id"
        " WHERE s.id = ? AND s.revoked_at IS NULL", (session_id,))
    if row is None or row["expires_at"] < time.time() or row["removed_at"] is not None:
        return None
    return Principal(row["user_id"], row["id"], row["device_id"], row["workspace_id"])


async def revoke_sessions(tx: Tx, *, session_id: str | None = None, user_id: str | None = None,
                          device_id: str | None = None) -> None:
    clauses, params = [], []
    for column, value in (("id", session_id), ("user_id", user_id), ("device_id", device_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    assert clauses
    await tx.execute(
        f"UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND {' AND '.join(clauses)}",
        [tx.now, *params])


async def used_bytes(q: Any, user_id: str) -> int:
    """Logical bytes of the user's live files (the trash does not count, as in Dropbox)."""
    value = await q.fetchval(
        "SELECT COALESCE(SUM(f.size), 0) FROM files f JOIN workspaces w ON w.id = f.workspace_id"
        " WHERE w.owner_id = ? AND f.trashed_at IS NULL AND f.is_directory = 0", (user_id,))
    return int(value or 0)


async def check_quota(tx: Tx, owner_id: str, quota_bytes: int, delta: int, message: str) -> None:
    """Raise 507 if adding ``delta`` bytes would put ``owner_id`` over ``quota_bytes``.

    The sum over the owner's files is computed once per transaction: a batch of a thousand
    small files must not rescan ten thousand rows a thousand times.
    """
    key = ("used_bytes", owner_id)
    if key not in tx.memo:
        tx.memo[key] = await used_bytes(tx, owner_id)
    if tx.memo[key] + delta > quota_bytes:
        from ..errors import InsufficientStorage
        raise InsufficientStorage(message, quota=quota_bytes)


def spent_quota(tx: Tx, owner_id: str, delta: int) -> None:
    """Keep the per-transaction used-bytes figure true after a change of ``delta`` bytes."""
    key = ("used_bytes", owner_id)
    if key in tx.memo:
        tx.memo[key] += delta
