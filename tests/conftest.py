"""Shared fixtures: a real server on a real port over a temp data directory, and API clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import ApiClient, RunningServer, start_server
from tests.sync_helpers import EMAIL, Device, make_devices

pytest_plugins = ["tests.s3server", "tests.browser"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    srv = await start_server(tmp_path / "data")
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
async def srv(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server for sync tests, with the sync devices' account (``EMAIL``) registered."""
    server = await start_server(tmp_path / "data")
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
