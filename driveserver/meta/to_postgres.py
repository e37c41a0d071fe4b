"""``drive-server migrate-to-postgres``: an installation's SQLite metadata copied into an empty
PostgreSQL database, and proved the same before anyone uses it.

The copy is one PostgreSQL transaction: it commits only once every row is in and the check
below passes, so a failure (a full disk, a bad URL, a difference) leaves the target as empty as
it was and the SQLite file untouched. SQLite is read inside one ``BEGIN IMMEDIATE``: the state
copied is one committed state, and a server still running on it cannot write meanwhile (its
writes wait, then fail; stop it first, as docs/scale-out.md says).

What is copied: every table both schemas have (PostgreSQL's is made by the same numbered
migrations, :mod:`.dialect`), column by column, parents before children (``files`` by depth, so
each row's parent is already there). Not copied: SQLite's own tables and its FTS5 search index,
and the search key tables, which PostgreSQL's triggers fill again as users and files go in
(:data:`.dialect.PG_SEARCH`). Identity counters are moved past the highest copied id.

The check, inside the same transaction: every table's row count, and for every file its
workspace, parent, name, version, size, checksum, trash state and the list of its versions
(number, size, checksum, chunking, blocks in order) read back from PostgreSQL and compared with
SQLite's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from . import dialect

# Filled by PostgreSQL's triggers, or SQLite's alone.
_NOT_COPIED = frozenset({"search_owners", "search_seq", "file_search_keys", "sqlite_sequence"})
_FIRST = ("users", "workspaces", "files")  # the order foreign keys need; the rest after these
_BATCH = 2000


class MigrationError(Exception):
    """The copy cannot be made, or is not the same: nothing was committed."""


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                        " AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name").fetchall()
    # FTS5's shadow tables (file_names_data, …) belong to the virtual table left out above.
    virtual = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'").fetchall()]
    return [r[0] for r in rows if r[0] not in _NOT_COPIED
            and not any(r[0].startswith(v + "_") for v in virtual)]


def _ordered(tables: list[str], conn: sqlite3.Connection) -> list[str]:
    """Parents first: the three roots, then each table after the tables it references."""
    refs = {t: {r[2] for r in conn.execute(f"PRAGMA foreign_key_list('{t}')")} - {t}
            for t in tables}
    done: list[str] = [t for t in _FIRST if t in tables]
    rest = [t for t in tables if t not in done]
    while rest:
        ready = [t for t in rest if refs[t] <= set(done)]
        if not ready:
            raise MigrationError(f"cyclic references between tables: {sorted(rest)}")
        done += ready
        rest = [t for t in rest if t not in ready]
    return done


def _rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> Any:
    if table == "files":  # each folder before what is in it
        cols = ", ".join(f'f."{c}"' for c in columns)
        return conn.execute(
            "WITH RECURSIVE d(id, depth) AS (SELECT id, 0 FROM files WHERE parent_id IS NULL"
            " UNION ALL SELECT f.id, d.depth + 1 FROM files f JOIN d ON f.parent_id = d.id)"
            f" SELECT {cols} FROM files f JOIN d ON d.id = f.id ORDER BY d.depth, f.id")
    cols = ", ".join(f'"{c}"' for c in columns)
    return conn.execute(f'SELECT {cols} FROM "{table}"')


def _exact(kind: type, ok: tuple[type, ...]) -> Callable[[Any], Any]:
    """A converter to ``kind`` that refuses what would change the value (1.5 into an integer
    column, a number into a text one, a huge integer through a float)."""
    def convert(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, ok) or (kind is int and isinstance(v, float) and
                                     not v.is_integer()):
            raise MigrationError(f"a value {v!r:.40} does not fit a {kind.__name__} column")
        out = kind(v)
        if kind is float and isinstance(v, int) and int(out) != v:
            raise MigrationError(f"the integer {v} would lose digits as a float")
        return out
    return convert


def _converter(pg_type: str) -> Callable[[Any], Any]:
    if pg_type in ("bigint", "integer", "smallint"):
        return _exact(int, (int, float))
    if pg_type in ("double precision", "real", "numeric"):
        return _exact(float, (int, float))
    if pg_type == "bytea":
        return _exact(bytes, (bytes, bytearray, memoryview))
    if pg_type == "boolean":
        return _exact(bool, (int, bool))
    return _exact(str, (str,))


def _file_facts(rows: list[Any]) -> dict[str, tuple[Any, ...]]:
    return {r[0]: tuple(r[1:]) for r in rows}


_FILES_SQL = ("SELECT id, workspace_id, parent_id, name, version, size, checksum,"
              " CASE WHEN trashed_at IS NULL THEN 0 ELSE 1 END FROM files")
_VERSIONS_SQL = ("SELECT v.file_id, v.version, v.size, v.checksum, v.chunking, b.ord,"
                 " b.block_hash FROM file_versions v LEFT JOIN version_blocks b"
                 " ON b.version_id = v.id ORDER BY v.file_id, v.version, b.ord")


def _version_lists(rows: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for file_id, version, size, checksum, chunking, _ord, block in rows:
        versions = out.setdefault(file_id, [])
        if not versions or versions[-1][0] != version:
            versions.append((version, size, checksum, chunking, []))
        if block is not None:
            versions[-1][4].append(block)
    return {f: [(v, s, c, k, tuple(b)) for v, s, c, k, b in vs] for f, vs in out.items()}


async def migrate(sqlite_path: Path, url: str, schema_latest: int) -> dict[str, int]:
    """Copy ``sqlite_path`` into the empty PostgreSQL database at ``url`` (already migrated to
    the same schema by :class:`.pg.PgDatabase`), check it, commit. Returns rows per table."""
    try:
        src = sqlite3.connect(f"file:{sqlite_path}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot open {sqlite_path}: {exc}") from None
    try:
        src.execute("PRAGMA busy_timeout=10000")
        version = src.execute("PRAGMA user_version").fetchone()[0]
        if version != schema_latest:
            raise MigrationError(f"{sqlite_path} has schema {version}, this server {schema_latest}:"
                                 " start this version of the server on it once first")
        src.execute("BEGIN IMMEDIATE")  # one committed state, and no writer meanwhile
        try:
            return await _copy(src, url)
        except (asyncpg.PostgresError, OSError) as exc:
            raise MigrationError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            src.execute("ROLLBACK")
    finally:
        src.close()


async def _copy(src: sqlite3.Connection, url: str) -> dict[str, int]:
    dst = await asyncpg.connect(url)
    try:
        counts: dict[str, int] = {}
        order = _ordered(_sqlite_tables(src), src)
        async with dst.transaction(isolation="serializable"):
            # Nobody else writes these tables until the copy commits (a server started on the
            # target meanwhile waits), and what they hold is checked under that lock.
            await dst.execute("LOCK TABLE " + ", ".join(f'"{t}"' for t in order)
                              + " IN ACCESS EXCLUSIVE MODE")
            for table in ("users", "workspaces", "files", "devices", "sessions"):
                if await dst.fetchval(f'SELECT COUNT(*) FROM "{table}"'):
                    raise MigrationError(f"the PostgreSQL database already has {table}: it must"
                                         " be empty")
            # An empty install still has the rows its migrations put in (the GC epoch, …):
            # the copy replaces them with the installation's own.
            for table in reversed(order):
                await dst.execute(f'DELETE FROM "{table}"')
            for table in order:
                counts[table] = await _copy_table(src, dst, table)
            for table in sorted(dialect.IDENTITY_TABLES & set(counts)):
                # AUTOINCREMENT never hands out an id again, even one whose row was deleted:
                # the counter goes past SQLite's own record of the highest id ever given.
                try:
                    row = src.execute("SELECT seq FROM sqlite_sequence WHERE name = ?",
                                      (table,)).fetchone()
                except sqlite3.OperationalError:  # no AUTOINCREMENT row was ever made
                    row = None
                await dst.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT MAX(id) FROM {table}), $1, 1))", int(row[0]) if row else 0)
            await _check(src, dst, counts)
        return counts
    finally:
        await dst.close()


async def _copy_table(src: sqlite3.Connection, dst: Any, table: str) -> int:
    pg_columns = {r["column_name"]: r["data_type"] for r in await dst.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1", table)}
    if not pg_columns:
        raise MigrationError(f"table {table} is missing in PostgreSQL: is its schema current?")
    columns = [r[1] for r in src.execute(f"PRAGMA table_info('{table}')")]
    missing = [c for c in columns if c not in pg_columns]
    if missing:
        raise MigrationError(f"columns {missing} of {table} are missing in PostgreSQL")
    convert = [_converter(pg_columns[c]) for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    places = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({places})'
    cursor, total = _rows(src, table, columns), 0
    while batch := cursor.fetchmany(_BATCH):
        await dst.executemany(insert, [tuple(f(v) for f, v in zip(convert, row, strict=True))
                                       for row in batch])
        total += len(batch)
    return total


async def _check(src: sqlite3.Connection, dst: Any, counts: dict[str, int]) -> None:
    for table, n in counts.items():
        here = src.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        there = await dst.fetchval(f'SELECT COUNT(*) FROM "{table}"')
        if not here == n == there:
            raise MigrationError(f"{table}: {here} rows in SQLite, {n} copied, {there} in"
                                 " PostgreSQL")
    bad = _differing(_file_facts(src.execute(_FILES_SQL).fetchall()),
                     _file_facts(await dst.fetch(_FILES_SQL)))
    if bad:
        raise MigrationError(f"{len(bad)} file(s) differ after the copy, e.g. {bad[:3]}")
    bad = _differing(_version_lists(src.execute(_VERSIONS_SQL).fetchall()),
                     _version_lists(await dst.fetch(_VERSIONS_SQL)))
    if bad:
        raise MigrationError(f"the versions of {len(bad)} file(s) differ, e.g. {bad[:3]}")


def _differing(here: dict[str, Any], there: dict[str, Any]) -> list[str]:
    """The file ids whose facts differ between the two sides (or are on one side only)."""
    return sorted(k for k in here.keys() | there.keys() if here.get(k) != there.get(k))
