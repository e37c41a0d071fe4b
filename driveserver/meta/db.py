"""The metadata database: one writer, one reader, numbered migrations, post-commit hooks.

SQLite allows one writer at a time, and aiosqlite serialises statements but not whole
transactions, so every unit of work runs as one function inside ``BEGIN IMMEDIATE`` on the single
writer connection, behind an asyncio lock. Reads use a separate connection, which in WAL mode sees
the last committed state and never waits for the writer. Hooks registered during a transaction
(e.g. "wake the long-poll hub") run only after it commits, so nobody is told about a change that
was rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from .migrations import MIGRATIONS

log = logging.getLogger("driveserver.meta")

Row = aiosqlite.Row


class SchemaError(Exception):
    """The database was written by a newer version of the server."""


async def connect(path: Path) -> aiosqlite.Connection:
    """Open a connection with the settings every connection needs (the only place that does)."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Tx:
    """A write transaction in progress: statements plus hooks that run after commit."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.after_commit: list[Callable[[], None]] = []
        self.now = time.time()
        # Values computed once per transaction (e.g. a user's used bytes while a batch of
        # 1,000 files is completed), kept current by the code that changes them.
        self.memo: dict[Any, Any] = {}

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Cursor:
        return await self.conn.execute(sql, tuple(params))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchval(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    def on_commit(self, hook: Callable[[], None]) -> None:
        self.after_commit.append(hook)


class Database:
    """Owns the connections. ``open()`` applies migrations; ``close()`` is safe to call twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await connect(self.path)
        await self._migrate()
        self._reader = await connect(self.path)

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def schema_version(self) -> int:
        assert self._writer is not None
        async with self._writer.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        latest = len(MIGRATIONS)
        if current > latest:
            raise SchemaError(
                f"database {self.path} has schema {current}, this server knows only up to {latest}")
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            log.info("applying metadata migration %d", number)
            async with self.transaction() as tx:
                for statement in _statements(script):
                    await tx.execute(statement)
                # user_version is part of the transaction, so a crash never leaves a
                # half-applied migration recorded as done.
                await tx.execute(f"PRAGMA user_version={number}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One unit of work: BEGIN IMMEDIATE, commit on success, roll back on any exception."""
        assert self._writer is not None, "database is not open"
        async with self._write_lock:
            tx = Tx(self._writer)
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            # Handlers are cancelled when their client disconnects. Once the body has run, the
            # commit and its hooks must finish anyway (and before the lock is released), or a
            # committed change could go unannounced to the long-poll hub.
            done = asyncio.ensure_future(self._commit(tx))
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                await done
                raise

    async def _commit(self, tx: Tx) -> None:
        assert self._writer is not None
        await self._writer.execute("COMMIT")
        for hook in tx.after_commit:
            try:
                hook()
            except Exception:  # a failing hook must not turn a committed write into an error
                log.exception("post-commit hook failed")

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        assert self._reader is not None, "database is not open"
        async with self._reader.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        assert self._reader is not None, "database is not open"
        async with self._reader.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchval(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]
