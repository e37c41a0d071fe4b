"""Journal commits heard across server processes: PostgreSQL's LISTEN/NOTIFY.

A long poll waits in the process it reached, on that process's :class:`~driveserver.sync.hub.Hub`;
a commit may happen in any other. So each unit of work that writes the journal names what it
changed (``tx.announce``: the workspace, its new journal seq, the device), and the PostgreSQL
backend sends those names with ``pg_notify`` inside the same transaction, just before COMMIT.
PostgreSQL delivers a transaction's notifications to every listening session when, and only
when, it commits, and in commit order: a woken poll always finds the change in the journal, and
a rolled-back change wakes nobody. Every process holds one connection that LISTENs
(:class:`JournalListener`) and hands what it hears to its hub, as its own commits' post-commit
hooks do; it skips its own notifications (its hooks told it already), by the sender's
``origin``.

Nothing is lost while the listening connection is down: the changes are in the journal, and the
waiters only have to read it again. So when the connection drops, the listener reconnects
(backing off up to a few seconds) and then wakes every waiter of its process (``on_gap``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

log = logging.getLogger("driveserver.meta")

CHANNEL = "drive_journal"
_RECONNECT_MAX = 5.0  # seconds between attempts at most
HEARTBEAT_SECONDS = 15.0


def payloads(origin: str, announcements: Iterable[tuple[str, int, str | None]]) -> list[str]:
    """One notification per workspace and device, at the highest seq the transaction reached
    (a batch of a thousand files in one folder is one notification, not a thousand; a waiter
    reads every entry after its cursor anyway)."""
    newest: dict[tuple[str, str | None], int] = {}
    touched: set[str] = set()
    for workspace_id, seq, device_id in announcements:
        if seq == 0:  # a share change (Journal.touch): its own notification, never merged away
            touched.add(workspace_id)
            continue
        key = (workspace_id, device_id)
        newest[key] = max(seq, newest.get(key, seq))
    out = [{"o": origin, "w": w, "s": 0, "d": None} for w in sorted(touched)]
    out += [{"o": origin, "w": w, "s": s, "d": d}
            for (w, d), s in sorted(newest.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]
    return [json.dumps(body, separators=(",", ":")) for body in out]


def parse(payload: str) -> tuple[str, str, int, str | None] | None:
    """(origin, workspace, seq, device) of a notification, or None if it is not ours."""
    try:
        body = json.loads(payload)
        origin, workspace_id, seq, device_id = body["o"], body["w"], body["s"], body["d"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(origin, str) and isinstance(workspace_id, str) and isinstance(seq, int)
            and (device_id is None or isinstance(device_id, str))):
        return None
    return origin, workspace_id, seq, device_id


class JournalListener:
    """One LISTEN connection: other processes' commits, handed to ``on_change`` as the
    journal's post-commit listeners take them (workspace, seq, device)."""

    def __init__(self, url: str, origin: str,
                 on_change: Callable[[str, int, str | None], None],
                 on_gap: Callable[[], None]) -> None:
        self._url, self._origin = url, origin
        self._on_change, self._on_gap = on_change, on_gap
        self._conn: Any = None
        self._closed = False
        self._reconnect: asyncio.Task[None] | None = None
        self.heard = 0  # notifications of other processes handed on (for tests and metrics)
        self.skipped = 0  # this process's own, echoed back and left out
        self.reconnects = 0
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and listen; raises if PostgreSQL cannot be reached now (the server is
        starting: better to fail than to serve long polls that never wake)."""
        await self._connect()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """A half-open connection (a dead peer, a dropped NAT entry) reports nothing: ask it
        something now and then, and treat no answer as a drop."""
        while not self._closed:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            conn = self._conn
            if conn is None or conn.is_closed() or self._reconnecting():
                continue
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), HEARTBEAT_SECONDS)
            except Exception:  # noqa: BLE001  (any failure means the same: listen again)
                conn.terminate()  # the termination listener reconnects
                self._lost(conn)

    def _reconnecting(self) -> bool:
        return self._reconnect is not None and not self._reconnect.done()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            await conn.add_listener(CHANNEL, self._heard)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._lost)
        self._conn = conn

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        parsed = parse(payload)
        if parsed is None:
            return
        if parsed[0] == self._origin:
            self.skipped += 1
            return
        _, workspace_id, seq, device_id = parsed
        self.heard += 1
        self._on_change(workspace_id, seq, device_id)

    def _lost(self, _conn: Any) -> None:
        if self._closed or self._reconnecting():
            return
        log.warning("lost the PostgreSQL connection that listens for other processes' commits;"
                    " reconnecting")
        self._reconnect = asyncio.get_running_loop().create_task(self._come_back())

    async def _come_back(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                await self._connect()
            except Exception as exc:  # noqa: BLE001  (refused, reset, auth, a restart: wait)
                log.warning("cannot listen on PostgreSQL yet (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            # What was committed meanwhile went unheard: every waiter reads the journal again.
            self.reconnects += 1
            self._on_gap()
            return

    def backend_pid(self) -> int | None:
        """The PostgreSQL backend process of the listening connection (None while down)."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else int(conn.get_server_pid())

    async def close(self) -> None:
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.remove_listener(CHANNEL, self._heard)
            await self._conn.close()
        self._conn = None
