"""The metadata database on PostgreSQL (asyncpg), behind the interface of :mod:`.db`.

Chosen by ``[database] url = "postgresql://…"`` (or ``DRIVE_DATABASE_URL``); SQLite stays the
embedded default. Every unit of work, reader and migration of meta/ runs unchanged: a
:class:`PgTx` has the methods of :class:`.db.Tx` (``execute`` returns something with
``.rowcount``; rows are asyncpg Records, read by name and by index as ``sqlite3.Row`` is), and
:class:`PgDatabase` those of :class:`.db.Database`. What differs in the SQL is in
:mod:`.dialect` (placeholders, column types, the search index).

**Isolation.** Every write transaction is ``SERIALIZABLE``: PostgreSQL then guarantees that
the transactions that commit had the effect of some serial order, which is exactly what the
units of work were written against (SQLite's one writer at a time). Where two transactions
cannot be ordered (two completes on the same base version, two charges of one grant…), one
fails with a serialization failure, or a deadlock, and :meth:`PgDatabase.write` runs the whole
unit of work again on a fresh transaction, a bounded number of times: units of work are plain
functions of the transaction, safe to run again, and the post-commit hooks of a failed attempt
are dropped with its ``PgTx``. ``docs/scale-out.md`` says which unit relies on what.

**One writer per process**, for now: write transactions of one :class:`PgDatabase` take turns
(an asyncio lock, as on SQLite), so retries happen only between processes (or between two
``PgDatabase`` objects, as the tests make them). Reads go through a pool, each statement in
autocommit (it sees the last committed state, as SQLite's WAL reader does); :meth:`snapshot`
is a ``REPEATABLE READ READ ONLY`` transaction on one pooled connection.

The ``offload`` flags of the SQLite backend (run a long statement in a worker thread) mean
nothing here: asyncpg never blocks the loop.
"""

from __future__ import annotations

import asyncio
import decimal
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]

from ..errors import BadRequest, Busy
from . import dialect, pg_listen
from .db import _WRITING, SchemaError, Tx, _see_through, run_hooks
from .shared_reads import SharedReads

log = logging.getLogger("driveserver.meta")
T = TypeVar("T")

# A unit of work that keeps losing to others is given up after this many attempts (the error
# goes to the caller, as a 503 would): under any sane load a retry wins within two or three.
MAX_ATTEMPTS = 10
_RETRYABLE = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)
# Migrations of several processes starting at once take turns on this advisory lock.
_MIGRATION_LOCK = 0x64726976  # "driv"


class Result:
    """What ``execute`` returns, as a cursor would: the number of rows the statement changed,
    and the id of the row an INSERT into an identity table made (see
    :func:`.dialect.returning_id`)."""

    __slots__ = ("rowcount", "lastrowid")

    def __init__(self, rowcount: int, lastrowid: int | None = None) -> None:
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    @classmethod
    def of_status(cls, status: str) -> Result:
        last = status.rsplit(" ", 1)[-1]
        return cls(int(last) if last.isdigit() else -1)


def _numeric(text: str) -> int | float:
    """``numeric`` results (PostgreSQL's ``SUM`` of a ``BIGINT``) as the int or float SQLite
    gives: callers add them to ints and put them in JSON, where a ``Decimal`` would not go."""
    value = decimal.Decimal(text)
    return int(value) if value == value.to_integral_value() else float(value)


async def _setup(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("numeric", encoder=str, decoder=_numeric, schema="pg_catalog",
                              format="text")


def _args(params: Iterable[Any]) -> tuple[Any, ...]:
    """The statement's parameters, refused with a 400 if a text holds NUL: PostgreSQL's text
    cannot (SQLite's can), and the server would answer 500 for what is bad input. Checked
    before the statement, so no transaction is left aborted by it (the fuzzer on PostgreSQL
    found a device name with U+0000)."""
    args = tuple(params)
    for a in args:
        if isinstance(a, str) and "\x00" in a:
            raise BadRequest("text may not contain NUL characters (U+0000)",
                             code="invalid_field")
    return args


class PgTx:
    """A transaction in progress on one connection: statements plus hooks run after commit."""

    dialect = dialect.POSTGRESQL

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.after_commit: list[Callable[[], None]] = []
        self.now = time.time()
        self.memo: dict[Any, Any] = {}
        self.announcements: set[tuple[str, int, str | None]] = set()

    async def execute(self, sql: str, params: Iterable[Any] = (), *,
                      offload: bool = False) -> Result:
        with_id = dialect.returning_id(sql)
        if with_id is not None:
            rows = await self.conn.fetch(dialect.numbered(with_id), *_args(params))
            return Result(len(rows), rows[-1][0] if rows else None)
        return Result.of_status(await self.conn.execute(dialect.numbered(sql), *_args(params)))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]], *,
                          offload: bool = False) -> None:
        args = [_args(r) for r in rows]
        if args:
            await self.conn.executemany(dialect.numbered(sql), args)

    async def fetchone(self, sql: str, params: Iterable[Any] = (), *,
                       offload: bool = False) -> Any:
        return await self.conn.fetchrow(dialect.numbered(sql), *_args(params))

    async def fetchall(self, sql: str, params: Iterable[Any] = (), *,
                       offload: bool = False) -> list[Any]:
        return cast(list[Any], await self.conn.fetch(dialect.numbered(sql), *_args(params)))

    async def fetchval(self, sql: str, params: Iterable[Any] = (), *,
                       offload: bool = False) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    def on_commit(self, hook: Callable[[], None]) -> None:
        self.after_commit.append(hook)

    def announce(self, workspace_id: str, seq: int, device_id: str | None) -> None:
        """A journal change the other server processes must hear of: sent with the commit
        (:mod:`.pg_listen`)."""
        self.announcements.add((workspace_id, seq, device_id))


class PgDatabase:
    """Owns a connection pool. ``open()`` applies migrations; ``close()`` is safe to call twice.

    ``url`` is a libpq-style ``postgresql://user:password@host:port/database``."""

    dialect = dialect.POSTGRESQL

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        # Names this object's commits in the notifications it sends, so that its own listener
        # skips them (its post-commit hooks told this process already).
        self.origin = secrets.token_hex(8)
        self.path = _safe_url(url)  # what messages name the database by (SQLite's is a file)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._write_lock = asyncio.Lock()
        self.retries = 0  # units of work run again after a serialization failure (tests read it)
        self.shared_reads = SharedReads()  # what many callers read at once (the revoke mark)

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self._pool_size,
                                               init=_setup)
        try:
            await self._migrate()
        except BaseException:  # a schema from a newer server, a failed migration: no leak
            await self._pool.close()
            self._pool = None
            raise

    async def close(self) -> None:
        if self._pool is not None:
            async with self._write_lock:  # never under a running transaction's feet
                await self._pool.close()
        self._pool = None

    async def schema_version(self) -> int:
        assert self._pool is not None, "database is not open"
        exists = await self._pool.fetchval("SELECT to_regclass('drive_schema') IS NOT NULL")
        if not exists:
            return 0
        return int(await self._pool.fetchval("SELECT version FROM drive_schema") or 0)

    async def _migrate(self) -> None:
        assert self._pool is not None
        scripts = dialect.pg_migrations()
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                # One process migrates; the others wait here, then find nothing left to do.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute("CREATE TABLE IF NOT EXISTS drive_schema"
                                   " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
                await conn.execute("INSERT INTO drive_schema (id, version) VALUES (1, 0)"
                                   " ON CONFLICT DO NOTHING")
            current = int(await conn.fetchval("SELECT version FROM drive_schema"))
            if current > len(scripts):
                raise SchemaError(f"database {self.path} has schema {current}, this"
                                  f" server knows only up to {len(scripts)}")
            for number, script in enumerate(scripts[current:], start=current + 1):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    done = int(await conn.fetchval("SELECT version FROM drive_schema"))
                    if done >= number:
                        continue  # another process applied it meanwhile
                    log.info("applying metadata migration %d (PostgreSQL)", number)
                    for statement in dialect.statements(script):
                        await conn.execute(statement)
                    # In the same transaction: a crash never leaves a half-applied migration
                    # recorded as done (PostgreSQL's DDL is transactional).
                    await conn.execute("UPDATE drive_schema SET version = $1", number)

    @asynccontextmanager
    async def transaction(self, *, offload: bool = False) -> AsyncIterator[Tx]:
        """One SERIALIZABLE transaction: commit on success, roll back on any exception.

        No retry here (a ``with`` body cannot be run again): a serialization failure goes to the
        caller. Units of work use :meth:`write`, which retries."""
        assert self._pool is not None, "database is not open"
        async with self._write_lock, self._pool.acquire() as conn:
            # Cancelled while BEGIN runs, the connection goes back to the pool, whose reset
            # rolls back whatever was begun.
            pg = conn.transaction(isolation="serializable")
            await pg.start()
            tx = PgTx(conn)
            marker = _WRITING.set(True)
            try:
                try:
                    yield cast(Tx, tx)
                except BaseException:
                    try:
                        await _see_through(pg.rollback())
                    except Exception:  # a broken connection: the pool replaces it; the
                        log.exception("rollback failed")  # body's own error goes on
                    raise
                await _see_through(self._commit(conn, pg, tx))
            finally:
                _WRITING.reset(marker)

    async def _commit(self, conn: asyncpg.Connection, pg: Any, tx: PgTx) -> None:
        try:
            if tx.announcements:
                # NOTIFY is transactional: delivered to every listening process at COMMIT,
                # never for a transaction that rolls back, and in commit order.
                await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                                   pg_listen.CHANNEL,
                                   pg_listen.payloads(self.origin, tx.announcements))
            await pg.commit()
        except BaseException:
            # A COMMIT that failed (a serialization failure found at commit) has ended the
            # transaction in PostgreSQL; anything else (a cut connection) must not leave one.
            if not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            raise
        run_hooks(tx.after_commit)

    async def write(self, fn: Callable[[Tx], Awaitable[T]], *, offload: bool = False) -> T:
        """Run the unit of work ``fn(tx)`` as one transaction and return its result; run it
        again, on a fresh transaction, when PostgreSQL could not serialize it with another
        (see the module docstring). The hooks of a failed attempt never run."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.transaction(offload=offload) as tx:
                    return await fn(tx)
            except _RETRYABLE as exc:
                if attempt == MAX_ATTEMPTS:
                    # Nothing was committed: a clear 503 the client retries, not a 500.
                    log.warning("a write lost %d serialization races in a row: %s",
                                MAX_ATTEMPTS, exc)
                    raise Busy("the server is busy with other writes; try again",
                               retry_after=1) from exc
                self.retries += 1
                # Spread the retries so that the same two do not collide again at once.
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Tx]:
        """Many lookups on one consistent, committed state (a read-only transaction)."""
        assert self._pool is not None, "database is not open"
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield cast(Tx, PgTx(conn))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        assert self._pool is not None, "database is not open"
        return await self._pool.fetchrow(dialect.numbered(sql), *_args(params))

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        assert self._pool is not None, "database is not open"
        return cast(list[Any], await self._pool.fetch(dialect.numbered(sql), *_args(params)))

    async def fetchval(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


def _safe_url(url: str) -> str:
    """The URL without its password (in the user part or a ``?password=`` query), for
    messages."""
    url, _, query = url.partition("?")
    kept = "&".join(p for p in query.split("&") if p and not p.lower().startswith("password="))
    head, sep, tail = url.rpartition("@")
    if sep:
        scheme, _, creds = head.partition("://")
        url = f"{scheme}://{creds.split(':', 1)[0]}@{tail}"
    return f"{url}?{kept}" if kept else url
