"""The metadata database's transaction machinery, against a real SQLite file.

Statements of a write transaction run on the loop's thread (see ``driveserver.meta.db``); these
tests pin down the parts that must still never block the loop or leave the connection broken.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from driveserver.meta.db import Database, Tx, writing


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "meta.sqlite3")
    await database.open()
    await database.fetchval("SELECT 1")
    try:
        yield database
    finally:
        await database.close()


async def test_commit_is_visible_to_readers_and_rollback_leaves_nothing(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE t (v INTEGER)")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("abandon")
    assert [r[0] for r in await db.fetchall("SELECT v FROM t")] == [1]


async def test_waiting_for_another_process_keeps_the_loop_running(db: Database) -> None:
    """Another process (here: another connection) holds the write lock: BEGIN IMMEDIATE waits
    for it in a worker thread, so the loop keeps serving while the transaction waits."""
    other = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    entered = asyncio.Event()

    async def write() -> None:
        async with db.transaction() as tx:
            entered.set()
            await tx.execute("CREATE TABLE waited (v INTEGER)")

    task = asyncio.create_task(write())
    # Had BEGIN blocked the loop's thread, these 20 short sleeps would last the whole
    # busy_timeout (10 s): the loop's own clock shows whether it kept turning meanwhile.
    loop = asyncio.get_running_loop()
    lags = []
    for _ in range(20):
        before = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - before - 0.01)
    assert max(lags) < 1.0, lags
    assert not entered.is_set() and not task.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(task, 15)
    assert await db.fetchval("SELECT COUNT(*) FROM waited") == 0


async def test_cancelled_while_waiting_leaves_no_open_transaction(db: Database) -> None:
    other = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE never (v INTEGER)")

    task = asyncio.create_task(write())
    await asyncio.sleep(0.1)  # it is now waiting in BEGIN IMMEDIATE
    task.cancel()
    # Release the lock from a thread while the cancelled task is still seeing BEGIN through.
    threading.Timer(0.2, lambda: (other.execute("COMMIT"), other.close())).start()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)
    # The cancelled transaction was rolled back, and the connection takes new work.
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE after (v INTEGER)")
    tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
    assert "after" in tables and "never" not in tables


async def test_cancelled_after_the_body_still_commits(db: Database) -> None:
    """A handler cancelled (client gone) during COMMIT: the commit and its hooks finish."""
    hooked = asyncio.Event()
    started = asyncio.Event()

    async def write() -> None:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE kept (v INTEGER)")
            tx.on_commit(hooked.set)
            started.set()

    task = asyncio.create_task(write())
    await started.wait()
    await asyncio.sleep(0)  # now in the commit, which runs in a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooked.is_set()
    assert await db.fetchval("SELECT COUNT(*) FROM kept") == 0


async def test_offloaded_statements_run_off_the_loop_thread(db: Database) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    for offload in (False, True):
        async with db.transaction(offload=offload) as tx:
            tx.conn.create_function("whoami", 0, lambda: seen.append(threading.get_ident()) or 1)
            await tx.fetchval("SELECT whoami()")
    assert seen[0] == loop_thread and seen[1] != loop_thread


async def test_a_cancellation_in_the_same_pass_as_begin_still_rolls_back() -> None:
    """BEGIN finished in its thread and the handler was cancelled before the loop ran the
    completion callback: the transaction BEGIN opened must still be ended."""
    from driveserver.meta.db import _see_through

    loop = asyncio.get_running_loop()
    began: asyncio.Future[None] = loop.create_future()
    rolled_back: list[bool] = []

    async def caller() -> None:
        await _see_through(began, on_cancel=lambda: rolled_back.append(True))

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # now waiting on the shielded BEGIN
    began.set_result(None)
    task.cancel()  # same loop pass: the work is done, the caller is cancelled
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rolled_back == [True]


async def test_a_failed_commit_leaves_the_connection_usable(db: Database) -> None:
    """A COMMIT that fails (here: a deferred foreign key still violated) keeps SQLite's
    transaction open; it is rolled back, nothing of it stays, and the next one works."""
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await tx.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id)"
                         " DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO child VALUES (42)")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO parent VALUES (1)")
        await tx.execute("INSERT INTO child VALUES (1)")
    assert await db.fetchval("SELECT COUNT(*) FROM child") == 1


async def test_write_runs_a_function_as_one_transaction(db: Database) -> None:
    """``db.write(fn)``: ``fn(tx)``'s result comes back after the commit and its post-commit
    hooks; an exception rolls all of it back and reaches the caller; ``writing()`` is true only
    inside (and in tasks started inside), which is what the store guard of
    tests/test_gc_race.py relies on."""
    await db.write(lambda tx: tx.execute("CREATE TABLE w (v INTEGER)"))
    seen: list[str] = []

    async def unit(tx: Tx) -> int:
        assert writing()
        assert await asyncio.ensure_future(_writing_in_a_task())
        await tx.execute("INSERT INTO w VALUES (1)")
        tx.on_commit(lambda: seen.append("hook"))
        return 7

    assert not writing()
    assert await db.write(unit) == 7 and seen == ["hook"]
    assert not writing()

    async def failing(tx: Tx) -> None:
        await tx.execute("INSERT INTO w VALUES (2)")
        tx.on_commit(lambda: seen.append("never"))
        raise LookupError("abandon")

    with pytest.raises(LookupError):
        await db.write(failing)
    assert not writing() and seen == ["hook"]
    assert [r[0] for r in await db.fetchall("SELECT v FROM w")] == [1]
    assert await db.write(lambda tx: tx.fetchval("SELECT count(*) FROM w"), offload=True) == 1


async def _writing_in_a_task() -> bool:
    return writing()
