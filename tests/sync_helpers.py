"""Helpers for the sync client's end-to-end tests: devices driven through the real CLI.

Each :class:`Device` has its own ``--config-dir`` and folder, as on separate laptops. The CLI's
``main()`` runs in a worker thread (its own event loop) while the server runs in the test's
loop, so the real code talks HTTP over a real port; daemons run as ``python -m syncclient``
subprocesses.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from driveserver.app import build_app, start_site
from driveserver.config import load_config
from syncclient.cli import main
from syncclient.commands.run import open_engine
from syncclient.engine import Engine
from tests.helpers import METRICS_AUTH, METRICS_TOKEN, PASSWORD, RunningServer

EMAIL = "alice@example.com"
T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Device:
    name: str
    config_dir: Path
    folder: Path
    daemon: subprocess.Popen[bytes] | None = None

    def argv(self, *args: str) -> list[str]:
        return [*args, "--config-dir", str(self.config_dir)]

    async def cli(self, *args: str, stdin: str = "") -> int:
        return await asyncio.to_thread(main, self.argv(*args), io.StringIO(stdin))

    async def init(self, server: RunningServer, email: str = EMAIL) -> None:
        rc = await self.cli("init", "--server", server.url, "--email", email,
                            "--password-stdin", "--folder", str(self.folder),
                            "--device-name", self.name, stdin=PASSWORD + "\n")
        assert rc == 0

    async def sync(self, expect: int = 0) -> None:
        rc = await self.cli("run", "--once")
        assert rc == expect, f"{self.name}: run --once exited {rc}"

    def write(self, rel: str, data: bytes | str) -> Path:
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def read(self, rel: str) -> bytes:
        return (self.folder / rel).read_bytes()

    def tree(self) -> dict[str, bytes | None]:
        return folder_tree(self.folder)

    def start_daemon(self, log: Path, wrapper: tuple[str, ...] = ()) -> None:
        """``drive-sync run`` in its own process (``wrapper`` runs it, e.g. in a namespace)."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(log, "wb") as out:
            self.daemon = subprocess.Popen(
                [*wrapper, sys.executable, "-m", "syncclient", "run", "--config-dir",
                 str(self.config_dir)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int:
        assert self.daemon is not None
        self.daemon.send_signal(sig)
        rc = self.daemon.wait(timeout=20)
        self.daemon = None
        return rc


async def restart_server(data_dir: Path, port: int) -> RunningServer:
    """Start the server again on the same port (as after a reboot), so clients find it."""
    config = load_config(None, env={}, overrides={"data_dir": data_dir, "port": port,
                                                  "registration_open": True,
                                                  "max_connections_per_client": 0,
                                                  "metrics_token": METRICS_TOKEN})
    app = build_app(config)
    runner, bound = await start_site(app, "127.0.0.1", port)
    return RunningServer(config, app, runner, bound)


def folder_tree(root: Path) -> dict[str, bytes | None]:
    """Relative path → content (None for folders), without the client's own ``.drive-sync``."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] == (".drive-sync",):
            continue
        for d in dirnames:
            if not (rel / d).parts[0] == ".drive-sync":
                out[(rel / d).as_posix()] = None
        for f in filenames:
            out[(rel / f).as_posix()] = (Path(dirpath) / f).read_bytes()
    return out


async def converge(*devices: Device) -> None:
    """Sync each device twice, in turn: whatever one sends, the others have after it."""
    for d in (*devices, *devices):
        await d.sync()


def make_devices(tmp_path: Path, *names: str) -> list[Device]:
    return [Device(n, tmp_path / f"{n}-config", tmp_path / f"{n}-folder") for n in names]


async def metric(server: RunningServer, name: str, direction: str) -> float:
    """One sample of the server's /metrics (block counters by direction)."""
    r = await server.anonymous().get("/metrics", headers=METRICS_AUTH)
    text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
    m = re.search(rf'^{name}\{{direction="{direction}"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def with_engine(device: Device, body: Callable[[Engine], Awaitable[T]]) -> T:
    """Run ``body`` with the device's engine, opened as ``drive-sync run`` opens it, in a thread
    with an event loop of its own (as the CLI runs), and close it after."""
    def run() -> T:
        async def go() -> T:
            _, state, remote, engine = open_engine(device.config_dir)
            try:
                return await body(engine)
            finally:
                await remote.close()
                state.close()
        return asyncio.run(go())
    return await asyncio.to_thread(run)


def act_after_planning(monkeypatch: pytest.MonkeyPatch, act: Callable[[], None],
                       kind: str = "delete_local") -> list[bool]:
    """The user acts between the scan and the execution: ``act`` runs once, right after the
    first plan holding an operation of ``kind``. The returned list says whether it ran."""
    real_plan = Engine.plan
    acted: list[bool] = []

    async def plan_then_act(self: Engine, *args: Any, **kwargs: Any) -> Any:
        ops, local = await real_plan(self, *args, **kwargs)
        if not acted and any(op.kind == kind for op in ops):
            acted.append(True)
            act()
        return ops, local
    monkeypatch.setattr(Engine, "plan", plan_then_act)
    return acted
