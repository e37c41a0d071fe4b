"""Progress of long transfers and long rounds: a bar on a terminal, log lines otherwise, and
``drive-sync status`` either way."""

from __future__ import annotations

import asyncio
import logging
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from driveproto.blocks import BLOCK_SIZE
from syncclient import progress as progress_module
from syncclient.engine import Engine
from tests.helpers import RunningServer
from tests.sync_helpers import REPO, Device, make_devices, with_engine


def run_once_on_a_terminal(device: Device) -> tuple[int, str]:
    """``drive-sync run --once`` with its stderr on a pseudo-terminal; what the terminal got."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run([sys.executable, "-m", "syncclient", *device.argv("run", "--once")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=120)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return done.returncode, b"".join(chunks).decode(errors="replace")


async def test_a_terminal_shows_a_bar_for_a_big_file(tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("big.bin", os.urandom(3 * BLOCK_SIZE))
    rc, screen = await asyncio.to_thread(run_once_on_a_terminal, a)
    assert rc == 0, screen
    assert re.search(r"\ruploading /big\.bin \[#{30}\] 100%", screen), screen
    rc, screen = await asyncio.to_thread(run_once_on_a_terminal, b)
    assert rc == 0, screen
    assert re.search(r"\rdownloading /big\.bin \[#{30}\] 100%", screen), screen
    assert b.read("big.bin") == a.read("big.bin")


async def sync_with_progress(tmp_path: Path, srv: RunningServer, small_files: int,
                             caplog: pytest.LogCaptureFixture
                             ) -> tuple[list[str], list[dict[str, Any]]]:
    """One sync of a 12 MiB file and ``small_files`` small ones: the engine's log lines and
    the statuses it reported."""
    a, _ = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    a.write("big.bin", os.urandom(3 * BLOCK_SIZE))
    for i in range(small_files):
        a.write(f"small/s{i}.txt", f"small {i}")
    statuses: list[dict[str, Any]] = []

    async def sync_reporting(engine: Engine) -> bool:
        engine.on_status = statuses.append
        return (await engine.sync_once()).in_sync

    with caplog.at_level(logging.INFO, logger="syncclient"):
        assert await with_engine(a, sync_reporting)
    return [r.getMessage() for r in caplog.records], statuses


async def test_without_a_terminal_progress_goes_to_the_log_and_status(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Lines every PROGRESS_LOG_SECONDS (shortened here so that a quick transfer shows some):
    for a big file, bytes so far; for a long round, operations so far."""
    monkeypatch.setattr(progress_module, "PROGRESS_LOG_SECONDS", progress_module.PROGRESS_FLOOR_SECONDS)
    lines, statuses = await sync_with_progress(tmp_path, srv, 150, caplog)
    assert any(re.fullmatch(r"uploading /big\.bin: \d+\.\d of 12\.0 MiB transferred", m)
               for m in lines), lines
    assert any(re.fullmatch(r"\d+ of \d+ operation\(s\) done", m) for m in lines), lines
    progress = [s["progress"] for s in statuses if s.get("progress")]
    assert any("MiB transferred" in p for p in progress)
    assert any("operation(s) done" in p for p in progress)
    assert statuses[-1]["state"] == "idle" and statuses[-1]["progress"] is None


async def test_no_period_makes_progress_spin(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A period of zero (or any other) cannot turn a reporter into a busy loop: the round's
    count is reported only when it moved, at most once per operation, and the sync ends."""
    monkeypatch.setattr(progress_module, "PROGRESS_LOG_SECONDS", 0.0)
    lines, _ = await sync_with_progress(tmp_path, srv, 20, caplog)
    counts = [m for m in lines if re.fullmatch(r"\d+ of \d+ operation\(s\) done", m)]
    assert len(counts) == len(set(counts)), counts
    total = int(counts[0].split(" of ")[1].split()[0]) if counts else 0
    assert len(counts) <= total + 1
    transferred = [m for m in lines if "MiB transferred" in m]
    assert len(transferred) == len(set(transferred)) and len(transferred) < 100, transferred
