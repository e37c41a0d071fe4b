"""App passwords: the units of work behind ``/api/app-passwords`` and ``drive-server
app-password``, and the look-ups HTTP Basic on ``/dav/`` makes.

An app password is a random password a user makes for one app or device (a phone's file
manager, rclone, Finder), shown once and stored hashed. Each one is a device of its own (type
``app``, so it is listed in ``GET /api/devices``) with one long-lived session: a request that
presents it acts as that session, so everything that ends sessions ends it too (revoking it,
removing its device, changing the account password), with no second path to keep in step.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from ..auth import hash_password, new_id
from ..errors import BadRequest, Conflict, NotFound
from .accounts import create_session
from .db import Database, Row, Tx
from .devices import new_device, remove_device

# Lower-case letters and digits without the look-alikes (0/o, 1/l/i): typed on a phone.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS, GROUP_CHARS = 5, 5  # 25 characters, about 124 bits
SESSION_SECONDS = 100 * 365 * 86400.0  # lives until revoked
DEVICE_TYPE = "app"
MAX_PER_USER = 100


def make_password() -> str:
    """A fresh app password: five groups of five characters, ``abcde-fghjk-...``."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP_CHARS))
                    for _ in range(GROUPS))


def lookup_of(password: str) -> str | None:
    """The look-up key of something shaped like an app password (its first group), else None."""
    groups = password.split("-")
    if len(groups) != GROUPS or any(len(g) != GROUP_CHARS or not set(g) <= set(ALPHABET)
                                    for g in groups):
        return None
    return groups[0]


async def create_app_password(tx: Tx, user_id: str, name: str, password: str,
                              password_hash: str) -> Row:
    """Record an app password (hashed before the transaction) with its device and session.

    Its look-up key must be new among the user's live app passwords: on the rare clash the
    caller makes another password (409 ``retry`` would be pointless, so :class:`LookupTaken`)."""
    lookup = lookup_of(password)
    assert lookup is not None
    if await tx.fetchone("SELECT 1 FROM app_passwords WHERE user_id = ? AND lookup = ?"
                         " AND revoked_at IS NULL", (user_id, lookup)):
        raise LookupTaken
    count = await tx.fetchval("SELECT COUNT(*) FROM app_passwords WHERE user_id = ?"
                              " AND revoked_at IS NULL", (user_id,))
    if int(count) >= MAX_PER_USER:
        raise Conflict(f"an account may have at most {MAX_PER_USER} app passwords; revoke"
                       " some first", code="too_many_app_passwords")
    device_id = await new_device(tx, user_id, name, DEVICE_TYPE)
    session_id = await create_session(tx, user_id, device_id, SESSION_SECONDS)
    app_id = new_id("ap")
    await tx.execute(
        "INSERT INTO app_passwords (id, user_id, device_id, session_id, name, lookup,"
        " password_hash, created_at) VALUES (?,?,?,?,?,?,?,?)",
        (app_id, user_id, device_id, session_id, name, lookup, password_hash, tx.now))
    row = await tx.fetchone("SELECT * FROM app_passwords WHERE id = ?", (app_id,))
    assert row is not None
    return row


class LookupTaken(Exception):
    """Another live app password of the user starts with the same group: make a new one."""


MAX_NAME_CHARS = 100


def check_name(name: str) -> str:
    """An app password's name (shown as its device's): 1 to 100 characters, trimmed."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or any(ord(c) < 32 for c in name):
        raise BadRequest(f"name must have 1 to {MAX_NAME_CHARS} printable characters",
                         code="invalid_field", field="name")
    return name


async def issue_app_password(db: Database, user_id: str, name: str,
                             cost: int = 14) -> tuple[Row, str]:
    """Make, hash and record a new app password for ``user_id``: (its row, the password,
    which is shown this once and stored only hashed)."""
    name = check_name(name)
    for _ in range(8):
        password = make_password()
        # Before the transaction and off the event loop: ~50 ms of CPU at the default cost.
        hashed = await asyncio.to_thread(hash_password, password, cost)

        async def unit(tx: Tx, pw: str = password, h: str = hashed) -> Row:
            return await create_app_password(tx, user_id, name, pw, h)

        try:
            row = await db.write(unit)
        except LookupTaken:
            continue
        return row, password
    raise Conflict("could not make a unique app password; try again", code="retry")


_LIVE = ("SELECT a.id, a.name, a.device_id, a.session_id, a.created_at, a.last_used_at,"
         " a.lookup, a.password_hash FROM app_passwords a"
         " JOIN sessions s ON s.id = a.session_id JOIN devices d ON d.id = a.device_id"
         " WHERE a.user_id = ? AND a.revoked_at IS NULL AND s.revoked_at IS NULL"
         " AND d.removed_at IS NULL")


async def live_app_passwords(q: Any, user_id: str) -> list[Row]:
    """The user's app passwords that still work, oldest first (not revoked, their device and
    session live)."""
    return list(await q.fetchall(_LIVE + " ORDER BY a.created_at", (user_id,)))


async def candidate(q: Any, user_id: str, lookup: str) -> Row | None:
    """The user's working app password with look-up key ``lookup``, if any (its hash is then
    checked against what was presented)."""
    return await q.fetchone(_LIVE + " AND a.lookup = ?", (user_id, lookup))


async def revoke_app_password(tx: Tx, user_id: str, app_password_id: str) -> None:
    """End one of the user's app passwords: it is marked revoked and its device removed (which
    revokes its session). 404 for one that is not theirs or already gone."""
    row = await tx.fetchone(
        "SELECT device_id FROM app_passwords WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
        (app_password_id, user_id))
    if row is None:
        raise NotFound("no such app password")
    await tx.execute("UPDATE app_passwords SET revoked_at = ? WHERE id = ?",
                     (tx.now, app_password_id))
    device = await tx.fetchone("SELECT removed_at FROM devices WHERE id = ?",
                               (row["device_id"],))
    if device is not None and device["removed_at"] is None:
        await remove_device(tx, user_id, row["device_id"])


async def mark_used(tx: Tx, app_password_id: str, device_id: str) -> None:
    """When the password was last checked (a Basic request whose check was not cached)."""
    await tx.execute("UPDATE app_passwords SET last_used_at = ? WHERE id = ?",
                     (tx.now, app_password_id))
    await tx.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?", (tx.now, device_id))


async def account_password_session(tx: Tx, user_id: str, device_id: str,
                                   lifetime: float) -> str:
    """A live session of ``device_id`` (the device WebDAV requests signed in with the account
    password act as, where the admin allows that), or a new one: a Basic request carries no
    session, and one per request would pile up."""
    row = await tx.fetchone(
        "SELECT id FROM sessions WHERE device_id = ? AND user_id = ? AND revoked_at IS NULL"
        " AND expires_at > ? ORDER BY created_at DESC LIMIT 1", (device_id, user_id, tx.now))
    if row is not None:
        return str(row["id"])
    return await create_session(tx, user_id, device_id, lifetime)
