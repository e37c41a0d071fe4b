"""Shared fixtures: a real server on a real port over a temp data directory, and API clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ApiClient, RunningServer, start_server
from tests.sync_helpers import EMAIL, Device, make_devices

pytest_plugins = ["tests.s3server", "tests.browser", "tests.pg_cluster"]

# DRIVE_TEST_DATABASE=postgresql runs the servers of the fixtures below on a fresh database of
# the session's throwaway PostgreSQL cluster (tests/pg_cluster.py) instead of SQLite; .ci/run
# runs the database-facing tests that way after the main suite (pytest_collection_modifyitems;
# docs/scale-out.md says what it costs).
TEST_DATABASE = os.environ.get("DRIVE_TEST_DATABASE", "sqlite").strip().lower() or "sqlite"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): a database-facing test that the PostgreSQL pass leaves"
        " out, for the reason given (it reads SQLite's own internals, or it is a volume test"
        " that takes minutes there)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With DRIVE_TEST_DATABASE=postgresql, the session is the second pass of the database-facing
    tests: those whose servers take the ``database`` fixture, but for the ones marked
    ``sqlite_only``. Everything else would only repeat the first pass: deselected, and counted
    as such in pytest's summary."""
    if TEST_DATABASE != "postgresql":
        return
    keep, drop = [], []
    for item in items:
        facing = "database" in getattr(item, "fixturenames", ())
        (keep if facing and item.get_closest_marker("sqlite_only") is None else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def database(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The server overrides that choose the metadata database of this test's servers."""
    if TEST_DATABASE == "postgresql":
        return {"database_url": request.getfixturevalue("pg_url")}
    assert TEST_DATABASE == "sqlite", f"DRIVE_TEST_DATABASE={TEST_DATABASE}: sqlite or postgresql"
    return {}


@pytest.fixture
async def server(tmp_path: Path, database: dict[str, Any]) -> AsyncIterator[RunningServer]:
    srv = await start_server(tmp_path / "data", **database)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def alice(server: RunningServer) -> AsyncIterator[ApiClient]:
    async with server.user("alice@example.com", device="alice-laptop") as client:
        yield client


@pytest.fixture
async def bob(server: RunningServer) -> AsyncIterator[ApiClient]:
    async with server.user("bob@example.com", device="bob-laptop") as client:
        yield client


@pytest.fixture
async def srv(tmp_path: Path, database: dict[str, Any]) -> AsyncIterator[RunningServer]:
    """A server for sync tests, with the sync devices' account (``EMAIL``) registered."""
    server = await start_server(tmp_path / "data", **database)
    await server.register(EMAIL)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def two(tmp_path: Path, srv: RunningServer) -> tuple[Device, Device]:
    """Two devices of ``EMAIL``'s, set up with ``drive-sync init`` on ``srv``."""
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    return a, b
