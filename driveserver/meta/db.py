"""The metadata database: one writer, one reader, numbered migrations, post-commit hooks.

SQLite allows one writer at a time, so every unit of work runs as one function inside
``BEGIN IMMEDIATE`` on the single writer connection, behind an asyncio lock. Reads use a separate
connection, which in WAL mode sees the last committed state and never waits for the writer.
Hooks registered during a transaction (e.g. "wake the long-poll hub") run only after it commits,
so nobody is told about a change that was rolled back.

Inside a write transaction, statements run directly on the event loop's thread. A thread
hand-off per statement (what aiosqlite does) costs about 300 µs, against 5 µs for an indexed
statement itself, and a batch of 100 small files runs thousands of statements: hand-offs were
most of the time of a 10,000-file sync. Once ``BEGIN IMMEDIATE`` holds the write lock, no
statement waits on another connection (WAL readers never block the writer), so the only waits
left are ``BEGIN IMMEDIATE`` itself (another process, e.g. ``drive-server user add``, may hold the
lock) and ``COMMIT`` (it fsyncs the WAL); those two run in a worker thread. Maintenance work whose
statements scan whole tables asks for ``transaction(offload=True)``, which runs every statement
in a worker thread so that the loop stays responsive; a single statement that may touch a whole
subtree (trash, restore, a move into a shared folder, their journal entries) asks for it with
``offload=True``. For the same reason, routes that look up metadata for a whole batch of files
read through :meth:`Database.snapshot`: a third connection, read-only, used on the loop's thread
for indexed lookups only.

A unit of work is a plain function of the transaction: ``await db.write(fn)`` runs ``fn(tx)``
inside one transaction and returns what it returns. Such a function does SQL and nothing else:
no network and no block-store I/O, which would hold the single writer (every other writer of
the server) across round trips. What needs the store asks it before the transaction and
re-checks inside it against what the database records (``complete`` and GC do this with
tombstones, see :mod:`driveserver.gc`). :func:`writing` says whether the current task is inside
a write transaction, so that a store wrapper can refuse to be called there (the tests do).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .migrations import MIGRATIONS

log = logging.getLogger("driveserver.meta")

Row = sqlite3.Row
T = TypeVar("T")

# synchronous=FULL, not NORMAL, although WAL makes NORMAL tempting (a commit would then append
# to the WAL without an fsync; a 10,000-file sync commits three times per hundred files, a few
# milliseconds each): under NORMAL a power cut can undo the last commits after their answers
# went out, and a client that was told "version 7 committed" records it as synced. The server
# then holds version 6 while the client believes both sides agree on 7, which is exactly the
# "reported as synced but lost" the durability rule forbids (and the journal, quotas and
# receipts would rewind with it). The cost is paid per transaction, not per file: batches keep
# the commits few. (The sync client's own state database may use NORMAL: it records only what is
# already durable elsewhere, and a lost record just makes the next round check again.)
_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=10000")


# True in the task (and the tasks it starts) that holds the writer, from BEGIN to the end of
# the post-commit hooks. Per task rather than "is the lock held": a block PUT storing bytes
# while another request's transaction runs is no store call inside a transaction.
_WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("drive_writing", default=False)


def writing() -> bool:
    """Whether the calling task is inside a write transaction (see the module docstring)."""
    return _WRITING.get()


def run_hooks(hooks: Iterable[Callable[[], None]]) -> None:
    """A committed transaction's post-commit hooks, each whatever the others do: a failing
    hook must not turn a committed write into an error (both backends call this)."""
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("post-commit hook failed")


class SchemaError(Exception):
    """The database was written by a newer version of the server."""


def _private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would make it 0644, readable by
    every account on the machine); its -wal and -shm files take the same mode.

    Never by opening a file that exists: closing *any* descriptor of a file drops every POSIX
    lock this process holds on it, the locks of its open SQLite connections included, and a
    second process (``drive-server user add`` beside a running server) could then take the
    database for its own and delete the WAL under the first one. A file that exists is only
    chmodded, by name."""
    if str(path) == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # made 0644 by older ones
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass


async def connect(path: Path) -> aiosqlite.Connection:
    """Open a reading connection with the settings every connection needs."""
    _private(path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn


def connect_inline(path: Path) -> sqlite3.Connection:
    """A plain connection for statements run on the loop's thread (the writer's, the snapshot
    reader's), and for those that may block, from a worker thread: never two at once, since
    each connection has its own lock."""
    _private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


class Tx:
    """A write transaction in progress: statements plus hooks that run after commit."""

    dialect = "sqlite"  # meta.dialect.SQLITE; meta.pg.PgTx says "postgresql"

    def __init__(self, conn: sqlite3.Connection, offload: bool = False) -> None:
        self.conn = conn
        self._offload = offload
        self.after_commit: list[Callable[[], None]] = []
        self.now = time.time()
        # Values computed once per transaction (e.g. a user's used bytes while a batch of
        # 1,000 files is completed), kept current by the code that changes them.
        self.memo: dict[Any, Any] = {}

    async def _run(self, fn: Callable[[], T], offload: bool) -> T:
        if not (offload or self._offload):
            return fn()
        # Seen through: the connection must not be rolled back (or closed) under a statement
        # still running in its thread.
        return await _see_through(asyncio.to_thread(fn))

    # ``offload=True`` on one statement: it may touch a whole subtree (a trash, a restore, a
    # move into a shared folder), so it runs in a worker thread while the loop goes on.

    async def execute(self, sql: str, params: Iterable[Any] = (), *,
                      offload: bool = False) -> sqlite3.Cursor:
        """Run one statement; the cursor's ``rowcount`` says what it changed. Run in a worker,
        the cursor is closed there (see :meth:`executemany`); read results with ``fetch*``."""
        args = tuple(params)
        if offload or self._offload:
            return await self._run(lambda: _closed(self.conn.execute(sql, args)), True)
        return self.conn.execute(sql, args)

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]], *,
                          offload: bool = False) -> None:
        args = [tuple(r) for r in rows]
        # Closed where it ran: a cursor left to be freed later on the loop's thread could reset
        # its statement while the next offloaded statement runs in a worker (SQLite's "bad
        # parameter or other API misuse").
        await self._run(lambda: self.conn.executemany(sql, args).close(), offload)

    async def fetchone(self, sql: str, params: Iterable[Any] = (), *,
                       offload: bool = False) -> Row | None:
        args = tuple(params)
        return await self._run(lambda: self.conn.execute(sql, args).fetchone(), offload)

    async def fetchall(self, sql: str, params: Iterable[Any] = (), *,
                       offload: bool = False) -> list[Row]:
        args = tuple(params)
        return await self._run(lambda: self.conn.execute(sql, args).fetchall(), offload)

    async def fetchval(self, sql: str, params: Iterable[Any] = (), *,
                       offload: bool = False) -> Any:
        row = await self.fetchone(sql, params, offload=offload)
        return None if row is None else row[0]

    def on_commit(self, hook: Callable[[], None]) -> None:
        self.after_commit.append(hook)

    def announce(self, workspace_id: str, seq: int, device_id: str | None) -> None:
        """A journal change other server processes must hear of (their long polls wake).
        Nothing to send on SQLite, which one process serves; see :mod:`.pg_listen`."""


class Database:
    """Owns the connections. ``open()`` applies migrations; ``close()`` is safe to call twice."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._snapshot_reader: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._snapshot_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await asyncio.to_thread(connect_inline, self.path)
        await self._migrate()
        self._reader = await connect(self.path)
        self._snapshot_reader = await asyncio.to_thread(connect_inline, self.path)
        self._snapshot_reader.execute("PRAGMA query_only=ON")

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        if self._snapshot_reader is not None:
            async with self._snapshot_lock:
                self._snapshot_reader.close()
        if self._writer is not None:
            async with self._write_lock:  # never under a running transaction's feet
                self._writer.close()
        self._reader = self._writer = self._snapshot_reader = None

    async def schema_version(self) -> int:
        assert self._writer is not None
        row = self._writer.execute("PRAGMA user_version").fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        latest = len(MIGRATIONS)
        if current > latest:
            raise SchemaError(
                f"database {self.path} has schema {current}, this server knows only up to {latest}")
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            log.info("applying metadata migration %d", number)
            async with self.transaction(offload=True) as tx:
                for statement in _statements(script):
                    await tx.execute(statement)
                # user_version is part of the transaction, so a crash never leaves a
                # half-applied migration recorded as done.
                await tx.execute(f"PRAGMA user_version={number}")

    @asynccontextmanager
    async def transaction(self, *, offload: bool = False) -> AsyncIterator[Tx]:
        """One unit of work: BEGIN IMMEDIATE, commit on success, roll back on any exception.

        ``offload=True`` runs every statement in a worker thread, for maintenance transactions
        whose statements may scan large tables (see the module docstring)."""
        assert self._writer is not None, "database is not open"
        writer = self._writer
        async with self._write_lock:
            # BEGIN waits (up to busy_timeout) while another process writes. A cancellation
            # meanwhile must not leave a transaction open on the connection once the lock is
            # released, so the statement is seen through, then rolled back below.
            await _see_through(asyncio.to_thread(writer.execute, "BEGIN IMMEDIATE"),
                               on_cancel=lambda: writer.execute("ROLLBACK"))
            tx = Tx(writer, offload)
            marker = _WRITING.set(True)
            try:
                try:
                    yield tx
                except BaseException:
                    if writer.in_transaction:  # SQLite ends it by itself after some errors
                        writer.execute("ROLLBACK")
                    raise
                # Handlers are cancelled when their client disconnects. Once the body has run,
                # the commit and its hooks must finish anyway (and before the lock is
                # released), or a committed change could go unannounced to the long-poll hub.
                await _see_through(self._commit(tx))
            finally:
                _WRITING.reset(marker)

    async def write(self, fn: Callable[[Tx], Awaitable[T]], *, offload: bool = False) -> T:
        """Run the unit of work ``fn(tx)`` as one transaction and return its result.

        Commits when ``fn`` returns, rolls back when it raises (the exception goes on to the
        caller), and keeps :meth:`transaction`'s guarantees: post-commit hooks run after the
        commit, and a commit that has begun finishes even if the caller is cancelled. ``fn``
        must not touch the network or the block store (see the module docstring)."""
        async with self.transaction(offload=offload) as tx:
            return await fn(tx)

    async def _commit(self, tx: Tx) -> None:
        try:
            await asyncio.to_thread(tx.conn.execute, "COMMIT")
        except BaseException:
            # SQLite keeps the transaction open when COMMIT fails (a deferred constraint, a busy
            # or full disk): end it, or the next unit of work could never begin.
            if tx.conn.in_transaction:
                tx.conn.execute("ROLLBACK")
            raise
        run_hooks(tx.after_commit)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Tx]:
        """Many indexed lookups on one consistent, committed state, without a thread hand-off
        each (see the module docstring). Only one caller at a time holds the snapshot, so the
        block should do its lookups and nothing else (no network waits); it gets a ``Tx``
        whose writes fail (the connection is ``query_only``)."""
        assert self._snapshot_reader is not None, "database is not open"
        conn = self._snapshot_reader
        async with self._snapshot_lock:
            conn.execute("BEGIN")
            try:
                yield Tx(conn)
            finally:
                conn.execute("COMMIT")  # ends the read; there is nothing to write

    # Each read runs to its end in one hop to the reader's thread (execute_fetchall). An
    # execute and a fetch as two awaits left the statement open in between, and every read
    # that other tasks ran on the connection meanwhile shared its snapshot: under load the
    # reader kept seeing the state from before recent commits (a user just registered could
    # not log in). Found by bench/load_bench.py; tests/test_sim_regressions.py holds it.
    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        assert self._reader is not None, "database is not open"
        rows = list(await self._reader.execute_fetchall(sql, tuple(params)))
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        assert self._reader is not None, "database is not open"
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def fetchval(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


async def _see_through(work: Awaitable[T], on_cancel: Callable[[], Any] | None = None) -> T:
    """Run ``work`` to its end even if the caller is cancelled meanwhile, and return its result.
    If the caller was cancelled and ``work`` succeeded, call ``on_cancel`` (e.g. roll back what
    ``work`` began) and re-raise the cancellation. A cancellation that arrives in the same loop
    pass as ``work``'s completion counts as a cancellation too."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    result = task.result()  # re-raises work's own error or cancellation
    if cancelled:
        if on_cancel is not None:
            on_cancel()
        raise asyncio.CancelledError
    return result


def _closed(cursor: sqlite3.Cursor) -> sqlite3.Cursor:
    cursor.close()
    return cursor


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]
