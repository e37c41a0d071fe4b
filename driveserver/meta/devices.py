"""Devices: the units of work behind the device registry (register, list, remove).

A device is a named client of one user (a laptop's ``drive-sync`` folder, say). Requests may
speak for one of the user's live devices only; ``permissions.own_device`` decides that.
"""

from __future__ import annotations

from ..auth import new_id
from ..errors import Conflict, NotFound
from ..permissions import own_device
from .access import Query
from .accounts import revoke_sessions
from .db import Row, Tx

DEVICE_TYPES = ("desktop", "web", "ios", "android")


async def register_device(tx: Tx, user_id: str, name: str, device_type: str,
                          device_id: str | None = None, must_be_new: bool = False) -> str:
    """Reuse the user's live device named ``name`` (or ``device_id``), else create one.
    ``must_be_new``: a live device of that name is a 409 ``device_name_taken`` instead (a new
    folder must not pass for a device that exists: the feed leaves out a device's own changes)."""
    if device_id is not None:
        if not await own_device(tx, user_id, device_id):
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


async def new_web_device(tx: Tx, user_id: str, name: str) -> str:
    """A device for one browser sign-in. Always a new one (a browser has no folder to be
    recognised by), named ``name``, or ``name 2``, ``name 3``... while a live device has it,
    so that registering by name never mistakes one for another."""
    return await new_device(tx, user_id, name, "web")


async def new_device(tx: Tx, user_id: str, name: str, device_type: str) -> str:
    """A new device of ``device_type`` named ``name`` (or ``name 2``, ...; see
    :func:`new_web_device`): a browser sign-in's, or an app password's (``meta.app_passwords``)."""
    taken = {row["name"] for row in await tx.fetchall(
        "SELECT name FROM devices WHERE user_id = ? AND removed_at IS NULL", (user_id,))}
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name} {n}"
    device_id = new_id("d")
    await tx.execute(
        "INSERT INTO devices (id, user_id, name, type, created_at, last_seen_at)"
        " VALUES (?,?,?,?,?,?)", (device_id, user_id, unique, device_type, tx.now, tx.now))
    return device_id


async def live_devices(q: Query, user_id: str) -> list[Row]:
    """The user's devices that have not been removed, oldest first."""
    return await q.fetchall(
        "SELECT id, name, type, created_at, last_seen_at FROM devices"
        " WHERE user_id = ? AND removed_at IS NULL ORDER BY created_at", (user_id,))


async def remove_device(tx: Tx, user_id: str, device_id: str) -> None:
    """Forget one of ``user_id``'s devices (a lost laptop): its sessions stop working at once.
    404 for a device that is not theirs, or was removed already."""
    if not await own_device(tx, user_id, device_id):
        raise NotFound("no such device")
    await tx.execute("UPDATE devices SET removed_at = ? WHERE id = ?", (tx.now, device_id))
    await revoke_sessions(tx, device_id=device_id)
