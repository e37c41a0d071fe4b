"""A throwaway PostgreSQL 15 cluster for the test session (../shared/TESTING.md shows the steps).

One cluster per session, in a temp directory, listening on 127.0.0.1 on a free port only,
owned by the ``postgres`` account (initdb refuses to run as root), stopped by its postmaster's
PID at the end. Each test gets a fresh database copied from a template that already holds the
migrated schema, which takes a few tens of milliseconds where migrating from scratch takes
longer (and the migrations themselves are tested once, on the template and in test_pg_db).

Where PostgreSQL is not installed the fixtures skip, or fail under ``CI`` (tests/needs.py);
``.ci/run`` installs Debian's ``postgresql`` when it is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from driveserver.meta.backend import open_database
from tests.needs import need

PGROOT = Path("/usr/lib/postgresql")  # Debian's: one <major>/bin per installed version


def pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl of the newest installed PostgreSQL, or None."""
    found = [d / "bin" for d in PGROOT.glob("*") if d.name.isdigit()
             and (d / "bin" / "initdb").exists() and (d / "bin" / "pg_ctl").exists()]
    return max(found, key=lambda b: int(b.parent.name)) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL program as the ``postgres`` account when we are root (initdb and the
    postmaster refuse root), as ourselves otherwise."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload, no-any-return]


@dataclass
class Cluster:
    """A running cluster: its base URL (no database name) and a counter for fresh databases."""

    host: str
    port: int
    root: Path
    pid: int
    _names: Iterator[int]

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def next_name(self) -> str:
        return f"t{next(self._names)}"


def start_cluster(durable: bool = False) -> Cluster:
    """initdb + pg_ctl start in a fresh temp directory; returns once it accepts connections.
    ``durable``: fsync and synchronous commits on, as in production (bench/scale_bench.py)."""
    binary = pg_bin()
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="drive-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    _as_postgres([str(binary / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
    port = _free_port()
    # fsync off: a test cluster is thrown away, and fsyncs would cost the suite its budget
    # (the durability of PostgreSQL itself is not what these tests check).
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=300"
               " -c shared_buffers=64MB")
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    _as_postgres([str(binary / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                  "-o", options, "start"])
    pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    return Cluster("127.0.0.1", port, root, pid, itertools.count(1))


def stop_cluster(cluster: Cluster) -> None:
    """Fast shutdown by the postmaster's PID, then wait for it to go; remove the directory."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(cluster.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(cluster.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    need(pg_bin() is not None,
         "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


TEMPLATE = "drive_template"


def run_async(coro: Any) -> Any:
    """Run ``coro`` to its end on an event loop of its own, in a worker thread: fixtures set up
    outside any test's loop and inside one alike can use it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


async def _admin(cluster: Cluster, *statements: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(cluster.url("postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    from driveserver.meta.pg import PgDatabase

    db = PgDatabase(url)
    await db.open()
    await db.close()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: Cluster) -> str:
    """A database with every migration applied, which each test's database is copied from."""
    run_async(_admin(pg_cluster, f"CREATE DATABASE {TEMPLATE}"))
    run_async(_migrate(pg_cluster.url(TEMPLATE)))
    return TEMPLATE


def fresh_database(cluster: Cluster, template: str = TEMPLATE) -> str:
    """A new database copied from ``template`` (migrated); its URL."""
    name = cluster.next_name()
    run_async(_admin(cluster, f"CREATE DATABASE {name} TEMPLATE {template}"))
    return cluster.url(name)


def drop_database(cluster: Cluster, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    run_async(_admin(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_url(pg_cluster: Cluster, pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped after it."""
    url = fresh_database(pg_cluster, pg_template)
    try:
        yield url
    finally:
        drop_database(pg_cluster, url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_on_each_backend(request: pytest.FixtureRequest, tmp_path: Path
                             ) -> AsyncIterator[Any]:
    """An open metadata Database, migrated and empty: SQLite in ``tmp_path``, then a fresh
    PostgreSQL database (the same test runs once on each)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else ""
    database = open_database(url, tmp_path / "meta.sqlite3")
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def pg_empty_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh database with no schema at all (for the migrations themselves)."""
    url = fresh_database(pg_cluster, "template0")
    try:
        yield url
    finally:
        drop_database(pg_cluster, url)
