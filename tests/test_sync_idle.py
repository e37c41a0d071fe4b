"""Idle means idle: a daemon with a problem file, a paused deletion or no server does a bounded
number of rounds and says each thing once, and its retries keep the word of its log."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from syncclient import daemon as daemon_module
from syncclient.commands.run import open_engine
from syncclient.daemon import Daemon
from tests.helpers import RunningServer, wait_for
from tests.sync_helpers import Device, make_devices

pytestmark = pytest.mark.sqlite_only(
    "the daemon's own retry and back-off timing (29 s of waiting); the server's database"
    " plays no part in it")

BAD_NAME = b"bad-\xff-name.txt"  # not UTF-8: a per-file problem at every round


class InProcessDaemon:
    """``drive-sync run`` as a task of the test's own event loop (the server runs there too),
    so a test can count its rounds and read its log records."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.rounds: list[float] = []
        self.daemon: Daemon | None = None
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> InProcessDaemon:
        conf, self.state, self.remote, engine = open_engine(self.device.config_dir)
        real = engine.sync_once

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.rounds.append(time.monotonic())
            return await real(*args, **kwargs)
        engine.sync_once = counted  # type: ignore[method-assign]
        self.daemon = Daemon(conf, self.device.config_dir, engine)
        self.task = asyncio.create_task(self.daemon.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.daemon is not None and self.task is not None
        self.daemon.stop()
        try:
            await asyncio.wait_for(self.task, 30)
        finally:
            await self.remote.close()
            self.state.close()

    def rounds_since(self, t: float) -> int:
        return sum(1 for r in self.rounds if r >= t)


def lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if re.search(pattern, r.getMessage())]


async def idle_for(seconds: float) -> None:
    """Let the daemon be: the length of the observation, not a wait for a result."""
    await asyncio.sleep(seconds)


async def test_a_problem_file_is_retried_on_one_backing_off_schedule(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each round that met the problem used to add another retry timer on top of the others,
    so rounds multiplied (11 → 54 a minute) and each logged the problem again."""
    monkeypatch.setattr(daemon_module, "RESCAN_SECONDS", 3600.0)
    monkeypatch.setattr(daemon_module, "PROBLEM_RETRY_SECONDS", 1.0, raising=False)
    monkeypatch.setattr(daemon_module, "PROBLEM_RETRY_MAX_SECONDS", 8.0, raising=False)
    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    a.write(os.fsdecode(BAD_NAME), "x")
    with caplog.at_level(logging.INFO):
        async with InProcessDaemon(a) as d:
            await wait_for(lambda: len(d.rounds) >= 1, within=30, what="the first round")
            for i in range(6):  # other activity in the folder: each edit is a round
                before = len(d.rounds)
                a.write("other.txt", f"edit {i}")
                await wait_for(lambda b=before: len(d.rounds) > b, within=30, what="a round")
            quiet_from = time.monotonic()
            await idle_for(14)
            retries = d.rounds_since(quiet_from)
    # One schedule, doubling up to 8 s: at most a handful in 14 s (each extra timer of the old
    # code would add one every 10 s: 7 of them here).
    assert retries <= 4, retries
    said = lines(caplog, "bad-.*-name")
    assert len(said) == 1, [r.getMessage() for r in said]


async def test_offline_retries_wait_as_long_as_the_log_says(
        tmp_path: Path, srv: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """With the server gone, 'retrying in N s' is followed by N s of quiet, whatever else
    (the long poll, the folder) wakes the loop meanwhile."""
    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    await a.sync()
    await srv.stop()
    with caplog.at_level(logging.INFO):
        async with InProcessDaemon(a):
            for i in range(20):  # the folder keeps waking the loop
                a.write(f"f{i}.txt", "x")
                await asyncio.sleep(0.35)
    said = lines(caplog, r"retrying in \d+ s")
    assert len(said) >= 3, [r.getMessage() for r in said]
    for earlier, later in zip(said, said[1:], strict=False):
        promised = float(re.search(r"retrying in (\d+) s", earlier.getMessage()).group(1))
        assert later.created - earlier.created >= promised * 0.9, \
            [(r.created, r.getMessage()) for r in said]


async def test_a_paused_deletion_is_said_once_and_resumes_at_once(
        tmp_path: Path, srv: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    for i in range(12):
        a.write(f"doc{i}.txt", f"doc {i}")
    await a.sync()
    for i in range(12):
        (a.folder / f"doc{i}.txt").unlink()
    with caplog.at_level(logging.INFO):
        async with InProcessDaemon(a) as d:
            status = a.config_dir / "status.json"
            await wait_for(lambda: '"paused"' in status.read_text(), within=30, what="the pause")
            paused_at = time.monotonic()
            await idle_for(5)
            assert d.rounds_since(paused_at) == 0  # waiting for `resume`, not re-planning
            assert await a.cli("resume") == 0
            alice = await srv.login("alice@example.com")

            async def deleted() -> bool:
                r = await alice.get("/api/files", params={"path": "/"})
                return not r.body["entries"]
            await wait_for(deleted, within=10, what="the deletions to reach the server")
    assert len(lines(caplog, "^paused")) == 1
