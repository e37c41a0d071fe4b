"""Two faults of the metadata database found by running it hard (issue 14's search benchmark).

* ``_private`` made the file 0600 by opening it; closing that descriptor dropped every POSIX
  lock this process held on the file, its SQLite connections' too, so a second process (an
  admin's ``drive-server user add`` beside a running server) could checkpoint and delete the
  WAL under the first: its next read was "database disk image is malformed".
* An offloaded ``executemany`` (``Journal.record_subtree`` of more than 64 entries) returned its
  cursor to the loop's thread, where it could be freed while the next offloaded statement ran in
  a worker: SQLite's "bad parameter or other API misuse", about 3 % of the time. The test
  below is a race detector: on the code before the fix it failed in about half the runs (300
  rounds), after it never.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from driveserver.meta.db import Database, Tx

ROOT = Path(__file__).resolve().parents[1]

SECOND_PROCESS = """
import asyncio, sys
from pathlib import Path
from driveserver.meta.db import Database

async def main():
    db = Database(Path(sys.argv[1]))
    await db.open()
    async def fill(tx):
        await tx.execute("CREATE TABLE IF NOT EXISTS other (x)")
        await tx.executemany("INSERT INTO other VALUES (?)", [("x" * 200,)] * 20000)
    await db.write(fill)
    await db.close()

asyncio.run(main())
"""


async def test_another_process_opening_the_database_leaves_this_one_intact(tmp_path: Path
                                                                           ) -> None:
    path = tmp_path / "meta.sqlite3"
    db = Database(path)
    await db.open()
    try:
        async def mine(tx: Tx) -> None:
            await tx.execute("CREATE TABLE mine (x)")
            await tx.executemany("INSERT INTO mine VALUES (?)", [(i,) for i in range(1000)])
        await db.write(mine)
        for _ in range(3):
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", SECOND_PROCESS, str(path)], cwd=ROOT,
                capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert await asyncio.to_thread(os.path.exists, f"{path}-wal"), \
                "the other process deleted our WAL"
            assert await db.fetchval("SELECT COUNT(*) FROM mine") == 1000
            assert await db.fetchval("SELECT COUNT(*) FROM other") > 0
            async with db.snapshot() as snap:
                assert await snap.fetchval("SELECT COUNT(*) FROM mine") == 1000
    finally:
        await db.close()


async def test_offloaded_statements_between_inline_ones_never_misuse_the_connection(
        tmp_path: Path) -> None:
    db = Database(tmp_path / "meta.sqlite3")
    await db.open()
    try:
        async def work(tx: Tx) -> None:
            await tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY, a, b)")
            await tx.execute("CREATE TABLE f (id TEXT PRIMARY KEY, x)")
            for j in range(300):
                await tx.execute("INSERT INTO f VALUES (?, ?)", (f"f{j}", j))
                await tx.executemany("INSERT INTO t VALUES (?, ?, ?)",
                                     [(f"{j}-{i}", "x" * 30, i) for i in range(1000)],
                                     offload=True)
                await tx.execute("UPDATE f SET x = x + 1 WHERE id = ?", (f"f{j}",), offload=True)
        await db.write(work)
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 300 * 1000
        assert await db.fetchval("SELECT SUM(x) FROM f") == sum(range(300)) + 300
    finally:
        await db.close()
