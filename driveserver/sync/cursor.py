"""Cursors: where a device stands in the change feed, and each device's acknowledged cursor.

A cursor is an opaque string. Inside, signed with the server's secret (itsdangerous), it holds
the user it was issued to and one journal position per workspace the user can see; while a full
listing is being paged it also holds the snapshot's place. Signing makes a forged or altered
cursor a 400 rather than a way to read someone's journal, and the user id makes a cursor stolen
from another account worthless: a cursor is only ever read for the user it names.

The literal cursor ``"0"`` means "I have nothing": the answer is the full current tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any

from ..auth import TokenSigner
from ..errors import BadRequest
from ..meta import changes as changes_db
from ..meta.db import Database

log = logging.getLogger("driveserver.sync")

PURPOSE = "cursor"
SNAPSHOT_CURSOR = "0"
# Cursors do not expire by age; journal retention decides when one is too old (a reset).
MAX_AGE = 100 * 365 * 86400.0
MAX_CURSOR_CHARS = 8192


@dataclass(frozen=True)
class SnapshotMark:
    """The last item a snapshot page returned: ``(depth, file_id)`` order within a workspace."""

    workspace_id: str
    depth: int
    file_id: str


@dataclass(frozen=True)
class Cursor:
    """A decoded cursor.

    ``positions`` maps workspace id → the last journal seq the holder has; ``None`` means a fresh
    snapshot whose positions are taken when its first page is read. ``snapshot`` is set while a
    full listing is being paged (``None`` with ``positions is None`` = the first page).
    """

    user_id: str
    positions: dict[str, int] | None
    snapshot: SnapshotMark | None = None
    # Folders shared with the user that this cursor's holder has: workspace → (mount folder id,
    # mount path). When one disappears from the user's view, the holder is told to delete it.
    mounts: dict[str, tuple[str, str]] | None = None
    # Folders newly shared with the user whose listing is being paged (``snapshot`` is the
    # place in it); their positions, taken before the listing, are in ``positions`` already.
    listing: tuple[str, ...] | None = None

    @property
    def in_snapshot(self) -> bool:
        return self.positions is None or self.snapshot is not None


def encode_cursor(signer: TokenSigner, cursor: Cursor) -> str:
    payload: dict[str, Any] = {"u": cursor.user_id, "p": cursor.positions or {}}
    if cursor.snapshot is not None:
        s = cursor.snapshot
        payload["s"] = [s.workspace_id, s.depth, s.file_id]
    if cursor.mounts:
        payload["m"] = {ws: list(v) for ws, v in cursor.mounts.items()}
    if cursor.listing:
        payload["l"] = list(cursor.listing)
    return signer.sign(PURPOSE, payload)


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_cursor", field="cursor")


def decode_cursor(signer: TokenSigner, token: str, user_id: str) -> Cursor:
    """The cursor ``token`` for ``user_id``; 400 ``invalid_cursor`` if forged, malformed or foreign."""
    token = token.strip()
    if token == SNAPSHOT_CURSOR:
        return Cursor(user_id, None)
    if not token or len(token) > MAX_CURSOR_CHARS:
        raise _invalid("malformed cursor")
    payload = signer.load(PURPOSE, token, max_age=MAX_AGE)
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), str):
        raise _invalid("malformed or forged cursor")
    if payload["u"] != user_id:
        raise _invalid("this cursor was issued to another account")
    raw_positions = payload.get("p")
    if not isinstance(raw_positions, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in raw_positions.items()):
        raise _invalid("malformed cursor")
    mark = None
    if "s" in payload:
        s = payload["s"]
        if not (isinstance(s, list) and len(s) == 3 and isinstance(s[0], str)
                and type(s[1]) is int and isinstance(s[2], str)):
            raise _invalid("malformed cursor")
        mark = SnapshotMark(s[0], s[1], s[2])
    raw_mounts = payload.get("m", {})
    if not isinstance(raw_mounts, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
            for v in raw_mounts.values()):
        raise _invalid("malformed cursor")
    mounts = {ws: (v[0], v[1]) for ws, v in raw_mounts.items()}
    raw_listing = payload.get("l")
    if raw_listing is not None and not (
            isinstance(raw_listing, list) and raw_listing and mark is not None
            and all(isinstance(ws, str) for ws in raw_listing)):
        raise _invalid("malformed cursor")
    listing = tuple(raw_listing) if raw_listing else None
    return Cursor(user_id, dict(raw_positions), mark, mounts, listing)


class DeviceCursors:
    """Each device's last acknowledged cursor (``devices.cursor``): the offline queue's bookmark.

    A device acknowledges a cursor by polling with it. Thousands of devices poll all the time, so
    acknowledgements are written behind: they collect in memory and one task writes whatever has
    collected in one transaction, then the next batch (group commit, no timer). Losing the last
    batch in a crash only means a device is sent a few changes again, which applying by file id
    makes harmless; a clean shutdown flushes (:meth:`close`).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[str, str] = {}
        # The batch being written: no longer pending, not yet committed, so a read of the
        # table would still return the older cursor.
        self._writing: dict[str, str] = {}
        self._stored: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def ack(self, device_id: str, token: str) -> None:
        if device_id not in self._pending and self._stored.get(device_id) == token:
            return
        self._pending[device_id] = token
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def stored(self, device_id: str) -> str | None:
        """The device's acknowledged cursor, or None if it never acknowledged one."""
        if device_id in self._pending:
            return self._pending[device_id]
        if device_id in self._writing:
            return self._writing[device_id]
        return await changes_db.device_cursor(self._db, device_id)

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            self._writing = batch
            try:
                await self._db.write(functools.partial(changes_db.store_device_cursors,
                                                       cursors=batch))
            except Exception:
                log.exception("could not store %d device cursor(s)", len(batch))
                for device_id, token in batch.items():  # keep newer acks that came meanwhile
                    self._pending.setdefault(device_id, token)
                return
            finally:
                self._writing = {}
            self._stored.update(batch)
            if len(self._stored) > 100_000:  # only a cache of what is stored: bound it
                self._stored.clear()

    async def close(self) -> None:
        """Write what is pending (called before the database closes)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._pending:
            await self._flush_loop()
