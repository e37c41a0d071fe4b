"""The metadata database's interface on both backends (SQLite and PostgreSQL), and what only
PostgreSQL has: migrations taken by one of several processes, serialization failures retried
as whole units of work, placeholders and schema translated by meta/dialect.py.

The PostgreSQL cases run on the session's throwaway cluster (tests/pg_cluster.py), each on a
fresh database.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from driveserver.errors import Conflict
from driveserver.meta import dialect
from driveserver.meta.accounts import create_user
from driveserver.meta.db import Database, SchemaError, Tx, writing
from driveserver.meta.migrations import MIGRATIONS
from driveserver.meta.pg import PgDatabase, PgTx


@pytest.fixture
def db(db_on_each_backend: Database) -> Database:
    return db_on_each_backend


async def _table(db: Database) -> None:
    await db.write(lambda tx: tx.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))


async def test_both_backends_reach_the_same_schema_version(db: Database) -> None:
    assert await db.schema_version() == len(MIGRATIONS)
    # Every table of the SQLite schema is there (the search index's own tables aside).
    for table in ("users", "files", "file_versions", "journal", "shares", "links",
                  "upload_grants", "block_tombstones", "search_owners", "file_search_keys",
                  "app_passwords", "dav_locks"):
        assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") is not None


async def test_commit_is_visible_and_rollback_leaves_nothing(db: Database) -> None:
    await _table(db)
    await db.write(lambda tx: tx.execute("INSERT INTO t VALUES (?, ?)", ("a", 1)))

    async def abandoned(tx: Tx) -> None:
        await tx.execute("INSERT INTO t VALUES (?, ?)", ("b", 2))
        raise RuntimeError("abandon")

    with pytest.raises(RuntimeError):
        await db.write(abandoned)
    assert [tuple(r) for r in await db.fetchall("SELECT k, v FROM t")] == [("a", 1)]


async def test_hooks_run_after_commit_only_and_writing_is_true_inside(db: Database) -> None:
    await _table(db)
    ran: list[str] = []

    async def unit(tx: Tx) -> int:
        assert writing()
        await tx.execute("INSERT INTO t VALUES ('x', 1)")
        tx.on_commit(lambda: ran.append("committed"))
        assert ran == []
        return 7

    assert await db.write(unit) == 7 and ran == ["committed"] and not writing()

    async def failing(tx: Tx) -> None:
        tx.on_commit(lambda: ran.append("never"))
        raise ValueError

    with pytest.raises(ValueError):
        await db.write(failing)
    assert ran == ["committed"]


async def test_rows_read_by_name_and_index_and_counts_come_back_as_ints(db: Database) -> None:
    await _table(db)
    await db.write(lambda tx: tx.executemany("INSERT INTO t VALUES (?, ?)",
                                             [("a", 1), ("b", 2), ("c", 3)]))
    row = await db.fetchone("SELECT k, v FROM t WHERE k = ?", ("b",))
    assert row is not None and row["k"] == row[0] == "b" and row["v"] == row[1] == 2
    assert dict(zip(row.keys(), tuple(row), strict=True)) == {"k": "b", "v": 2}
    total = await db.fetchval("SELECT COALESCE(SUM(v), 0) FROM t")
    assert total == 6 and type(total) is int  # PostgreSQL's SUM is numeric
    # A "?" inside a literal is no placeholder.
    assert await db.fetchval("SELECT '?' || k FROM t WHERE v = ?", (3,)) == "?c"


async def test_execute_reports_rowcount_and_the_new_rows_id(db: Database) -> None:
    await _table(db)

    async def unit(tx: Tx) -> tuple[int, int, int, int]:
        await tx.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1), ("b", 1), ("c", 2)])
        changed = (await tx.execute("UPDATE t SET v = v + 10 WHERE v = ?", (1,))).rowcount
        ignored = (await tx.execute("INSERT INTO t VALUES ('a', 0) ON CONFLICT DO NOTHING")).rowcount
        deleted = (await tx.execute("DELETE FROM t WHERE v > ?", (5,))).rowcount
        return changed, ignored, deleted, 0

    assert await db.write(unit) == (2, 0, 2, 0)
    user = await create_user(db, "ids@example.com", "correct horse battery", 1 << 30)

    async def notify(tx: Tx) -> tuple[int, int]:
        ids = []
        for _ in range(2):
            cur = await tx.execute(
                "INSERT INTO notifications (user_id, workspace_id, file_id, actor_id, action,"
                " path, is_directory, seq, count, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (user["id"], "w", "f", user["id"], "modify", "/p", 0, 1, 1, tx.now))
            ids.append(int(cur.lastrowid or 0))
        return ids[0], ids[1]

    first, second = await db.write(notify)
    assert 0 < first < second
    assert await db.fetchval("SELECT COUNT(*) FROM notifications WHERE id IN (?, ?)",
                             (first, second)) == 2


async def test_a_snapshot_keeps_the_state_it_first_read(db: Database) -> None:
    await _table(db)
    await db.write(lambda tx: tx.execute("INSERT INTO t VALUES ('a', 1)"))
    async with db.snapshot() as snap:
        assert await snap.fetchval("SELECT v FROM t WHERE k = 'a'") == 1
        await db.write(lambda tx: tx.execute("UPDATE t SET v = 2 WHERE k = 'a'"))
        assert await snap.fetchval("SELECT v FROM t WHERE k = 'a'") == 1
    assert await db.fetchval("SELECT v FROM t WHERE k = 'a'") == 2


def test_the_postgresql_classes_have_the_sqlite_interface() -> None:
    """PgDatabase and PgTx stand in for Database and Tx (meta.backend casts them): every
    public method of the SQLite classes exists on the PostgreSQL ones with the same
    parameters."""
    for sqlite_cls, pg_cls in ((Database, PgDatabase), (Tx, PgTx)):
        for name, member in inspect.getmembers(sqlite_cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            assert hasattr(pg_cls, name), f"{pg_cls.__name__}.{name} missing"
            ours = list(inspect.signature(getattr(pg_cls, name)).parameters)
            theirs = list(inspect.signature(member).parameters)
            assert ours == theirs, (name, ours, theirs)
    for attribute in ("after_commit", "now", "memo"):
        assert attribute in inspect.getsource(PgTx.__init__)


# --- PostgreSQL only --------------------------------------------------------------------------

async def test_migrations_from_scratch_by_two_processes_at_once(pg_empty_url: str) -> None:
    """Two servers starting together on an empty database: one applies each migration, the
    other waits on the advisory lock and finds it done; both end on the latest schema."""
    a, b = PgDatabase(pg_empty_url), PgDatabase(pg_empty_url)
    await asyncio.gather(a.open(), b.open())
    try:
        assert await a.schema_version() == await b.schema_version() == len(MIGRATIONS)
        assert await a.fetchval("SELECT dropped FROM gc_epoch WHERE id = 1") == 0
    finally:
        await a.close()
        await b.close()


async def test_a_database_from_a_newer_server_is_refused(pg_url: str) -> None:
    db = PgDatabase(pg_url)
    await db.open()
    await db.write(lambda tx: tx.execute("UPDATE drive_schema SET version = ?",
                                         (len(MIGRATIONS) + 1,)))
    await db.close()
    with pytest.raises(SchemaError, match="knows only up to"):
        await PgDatabase(pg_url).open()


async def test_conflicting_units_of_work_are_run_again_and_none_is_lost(pg_url: str) -> None:
    """Two PgDatabase objects (two processes) increment one counter by read-then-write, 20
    times in all at once: SERIALIZABLE refuses the interleavings that would lose an update,
    write() runs those units again, and the counter ends at 20; each unit's hook ran once,
    after its commit (the hooks of failed attempts are dropped)."""
    a, b = PgDatabase(pg_url), PgDatabase(pg_url)
    await a.open()
    await b.open()
    try:
        await a.write(lambda tx: tx.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY,"
                                            " n INTEGER NOT NULL)"))
        await a.write(lambda tx: tx.execute("INSERT INTO counter VALUES (1, 0)"))
        hooks: list[int] = []

        async def bump(tx: Tx) -> None:
            n = await tx.fetchval("SELECT n FROM counter WHERE id = 1")
            await asyncio.sleep(0.01)  # let the other process read the same value meanwhile
            await tx.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))
            tx.on_commit(lambda: hooks.append(n + 1))

        await asyncio.gather(*(db.write(bump) for db in [a, b] * 10))
        assert await a.fetchval("SELECT n FROM counter WHERE id = 1") == 20
        assert sorted(hooks) == list(range(1, 21))
        assert a.retries + b.retries > 0  # the two did collide, and were retried
    finally:
        await a.close()
        await b.close()


def test_placeholders_are_numbered_outside_literals_comments_and_bodies() -> None:
    assert dialect.numbered("SELECT ? , '?', \"a?\" -- ?\n FROM t WHERE x = ?") == \
        "SELECT $1 , '?', \"a?\" -- ?\n FROM t WHERE x = $2"
    assert dialect.numbered("SELECT ?2, ?1, ?2") == "SELECT $2, $1, $2"
    assert dialect.numbered("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', $1"


def test_the_schema_is_translated_number_for_number() -> None:
    scripts = dialect.pg_migrations()
    assert len(scripts) == len(MIGRATIONS)
    first = scripts[0]
    assert "created_at DOUBLE PRECISION NOT NULL" in first and " REAL" not in first
    assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in first
    assert "WITHOUT ROWID" not in scripts[5] and "fts5" not in scripts[9]
    body = dialect.statements("CREATE FUNCTION f() RETURNS trigger AS $$\nBEGIN\n x;\n"
                              "END $$;\nSELECT 1;\nSELECT 2")
    assert len(body) == 3 and body[0].endswith("END $$")


def test_returning_id_only_for_identity_tables() -> None:
    sql = "INSERT INTO notifications (user_id) VALUES (?)"
    assert dialect.returning_id(sql) == sql + " RETURNING id"
    assert dialect.returning_id("INSERT INTO files (id) VALUES (?)") is None
    assert dialect.returning_id(sql + " RETURNING id, user_id") is None


def _no_password(url: str) -> Any:
    return PgDatabase(url.replace("postgres@", "postgres:hunter2@")).path


def test_messages_never_show_the_password() -> None:
    assert "hunter2" not in _no_password("postgresql://postgres@127.0.0.1:5432/x")


async def test_two_processes_checking_one_quota_at_once_cannot_both_pass(pg_url: str) -> None:
    """The write skew SERIALIZABLE is there for: two units of work (one per process) each
    read the owner's used bytes, see room for 600 more of a 1,000-byte quota, and add a file
    of 600, overlapping on purpose. Under READ COMMITTED both would commit (1,200 used);
    here one commits and the other, run again, sees the first file and is refused."""
    from driveserver.errors import InsufficientStorage
    from driveserver.meta.accounts import check_quota, used_bytes

    a, b = PgDatabase(pg_url), PgDatabase(pg_url)
    await a.open()
    await b.open()
    try:
        user = await create_user(a, "skew@example.com", "correct horse battery", 1000)
        root = await a.fetchval("SELECT root_id FROM workspaces WHERE id = ?",
                                (user["workspace_id"],))
        both_read = asyncio.Barrier(2)
        attempts: list[str] = []

        def unit(name: str) -> Any:
            async def fn(tx: Tx) -> str:
                await check_quota(tx, user["id"], 1000, 600, "over quota")
                attempts.append(name)
                if attempts.count(name) == 1:  # first attempts: both have read, then write
                    await asyncio.wait_for(both_read.wait(), 5)
                await tx.execute(
                    "INSERT INTO files (id, workspace_id, parent_id, name, name_key,"
                    " is_directory, version, size, created_at, modified_at)"
                    " VALUES (?,?,?,?,?,0,1,600,?,?)",
                    (f"f-{name}", user["workspace_id"], root, name, name, tx.now, tx.now))
                return name
            return fn

        results = await asyncio.gather(a.write(unit("a")), b.write(unit("b")),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["InsufficientStorage", "str"], \
            results
        assert any(isinstance(r, InsufficientStorage) for r in results)
        assert await used_bytes(a, user["id"]) == 600
        assert a.retries + b.retries == 1
    finally:
        await a.close()
        await b.close()


async def test_accounts_created_at_once_by_two_processes_all_get_in(pg_url: str) -> None:
    """Sign-ups on two processes at once: each reads every address (the look-alike check) and
    inserts, which SERIALIZABLE cannot order, so some must be run again; every distinct
    address gets its account, none answers a 500, and two look-alikes racing still let one
    in and refuse the other with 409 ``email_taken``."""
    a, b = PgDatabase(pg_url), PgDatabase(pg_url)
    await a.open()
    await b.open()
    try:
        made = await asyncio.gather(*(create_user(db, f"racer{i}@example.com", "a long password",
                                                  10**9, cost=10)
                                      for i, db in enumerate([a, b] * 8)))
        assert len({row["id"] for row in made}) == 16
        assert a.retries + b.retries > 0  # they did collide, and were run again
        twins = await asyncio.gather(
            create_user(a, "twin@example.com", "a long password", 10**9, cost=10),
            create_user(b, "Twin@Example.com", "a long password", 10**9, cost=10),
            return_exceptions=True)
        refused = [t for t in twins if isinstance(t, Exception)]
        assert len(refused) == 1 and isinstance(refused[0], Conflict), twins
        assert refused[0].code == "email_taken"
    finally:
        await a.close()
        await b.close()
