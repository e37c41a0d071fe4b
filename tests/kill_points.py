"""The kill -9 sweep's harness: a server (``drive-server serve``) and two daemons (``drive-sync
run``) as subprocesses of one account, killed with SIGKILL at seeded points while they upload,
download, move, resolve conflicts and collect garbage, then restarted.

A *kill point* is ``(seed, index)``: ``random.Random(f"{seed}:{index}")`` picks the scenario,
the victim, the sizes and the delay between the start of the operation and the SIGKILL, and the
point's files live under ``/p<index>/``, so a point does the same thing whether it runs alone or
in a sweep (``scripts/kill_sweep.py --seed S --only I`` reruns one). What the victim had done
when the signal landed still depends on the machine's speed: the delay is reproduced, the
instruction it interrupts can differ.

After each point the victim is restarted and the harness waits until both daemons are in sync
(``drive-sync wait``) and their folders agree; then every content a user saved must be on the
server: its checksum is that of a version (current, older, trashed or a conflicted copy). At
the end the server is stopped and, in-process, every block of every committed version is read
back and verified (``tests.test_s3_faults.verify_committed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from driveproto.blocks import BLOCK_SIZE, block_hash, content_checksum
from driveproto.chunking import SCHEMES, split_bytes
from tests.helpers import PASSWORD
from tests.sync_helpers import EMAIL, REPO, Device, folder_tree, make_devices, restart_server
from tests.test_s3_faults import Outcome, verify_committed

SCENARIOS = ("upload", "download", "move", "conflict", "gc")
SERVER_ENV = {"DRIVE_VERSIONS_GC_GRACE_DAYS": "0"}  # GC races every unfinished upload


def checksums_of(data: bytes) -> frozenset[str]:
    """The checksums a version of ``data`` may have: one per chunking scheme (a file over
    4 MiB that drive-sync cuts by content has another than one the server cut in 4 MiB
    blocks; docs/chunking.md)."""
    return frozenset(content_checksum(block_hash(b) for b in split_bytes(data, scheme))
                     for scheme in SCHEMES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """``drive-server serve`` on a fixed port, killed and restarted by PID."""

    data_dir: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), **SERVER_ENV}

    def command(self, *args: str, stdin: str = "") -> None:
        subprocess.run([sys.executable, "-m", "driveserver", *args, "--data-dir",
                        str(self.data_dir)], input=stdin.encode(), env=self._env(), cwd=REPO,
                       check=True, capture_output=True, timeout=120)

    def start_gc(self) -> subprocess.Popen[bytes]:
        """``drive-server gc`` beside the running server (grace 0: see SERVER_ENV)."""
        return subprocess.Popen([sys.executable, "-m", "driveserver", "gc", "--data-dir",
                                 str(self.data_dir)], env=self._env(), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "driveserver", "serve", "--data-dir", str(self.data_dir),
                 "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                env=self._env(), cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("server did not answer /healthz within 30 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
            self.proc = None


@dataclass
class KillSweep:
    """One server, two devices (``a``, ``b``) of one account, and what the user saved."""

    work: Path
    seed: int
    server: ServerProcess = field(init=False)
    a: Device = field(init=False)
    b: Device = field(init=False)
    saved: dict[frozenset[str], str] = field(default_factory=dict)  # checksums -> who saved
    survived: list[tuple[int, int, str, str]] = field(default_factory=list)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.server = ServerProcess(self.work / "data", _free_port(), self.work / "server.log")
        self.a, self.b = make_devices(self.work, "a", "b")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.server.command, "user", "add", EMAIL, "--password-stdin",
                                stdin=PASSWORD + "\n")
        await asyncio.to_thread(self.server.start)
        url = f"http://127.0.0.1:{self.server.port}"
        for d in (self.a, self.b):
            rc = await d.cli("init", "--server", url, "--email", EMAIL, "--password-stdin",
                             "--folder", str(d.folder), "--device-name", d.name,
                             stdin=PASSWORD + "\n")
            assert rc == 0, f"init of {d.name} failed"
            self._start_daemon(d)

    def _start_daemon(self, d: Device) -> None:
        d.start_daemon(self.work / f"{d.name}-{self.restarts}.log")
        self.restarts += 1

    async def stop(self) -> None:
        for d in (self.a, self.b):
            if d.daemon is not None:
                d.stop_daemon(signal.SIGKILL)
        await asyncio.to_thread(self.server.kill, signal.SIGTERM)

    # -- one kill point --------------------------------------------------------------------

    def _write(self, d: Device, rel: str, data: bytes, why: str) -> None:
        d.write(rel, data)
        self.saved.setdefault(checksums_of(data), why)

    async def point(self, index: int, log: Callable[[str], None] = print) -> None:
        rng = random.Random(f"{self.seed}:{index}")
        scenario = rng.choice(SCENARIOS)
        victims = ["a", "b", "server"] + (["gc"] if scenario == "gc" else [])
        victim = rng.choice(victims)
        delay = rng.uniform(0.0, 1.0)
        p = f"p{index}"
        what = f"kill point ({self.seed}, {index}): {scenario}, SIGKILL {victim} after " \
               f"{delay:.2f} s"

        def size() -> int:
            return rng.choice([rng.randrange(0, 4096), rng.randrange(4096, 300_000),
                               rng.randrange(BLOCK_SIZE // 2, 2 * BLOCK_SIZE + 999)])
        gc_proc: subprocess.Popen[bytes] | None = None
        if scenario in ("move", "gc"):  # something synced to work on first
            for j in range(2):
                self._write(self.a, f"{p}/d/f{j}.bin", rng.randbytes(size()), what)
            await self.settle(what + " (before)")
        if scenario in ("upload", "download"):
            writer = self.a if scenario == "upload" or rng.random() < 0.5 else self.b
            for j in range(rng.randrange(1, 4)):
                self._write(writer, f"{p}/f{j}.bin", rng.randbytes(size()), what)
        elif scenario == "move":
            src, dst = self.a.folder / p / "d", self.a.folder / p / "moved"
            os.rename(src, dst)
            self._write(self.a, f"{p}/moved/new.bin", rng.randbytes(size()), what)
        elif scenario == "conflict":
            self._write(self.a, f"{p}/c.txt", b"base " + rng.randbytes(100), what)
            await self.settle(what + " (before)")
            self._write(self.a, f"{p}/c.txt", b"from a " + rng.randbytes(size()), what)
            self._write(self.b, f"{p}/c.txt", b"from b " + rng.randbytes(size()), what)
        else:  # gc: delete a file (its blocks stay referenced by the trash), upload, collect
            os.unlink(self.a.folder / p / "d" / "f0.bin")
            self._write(self.b, f"{p}/d/g.bin", rng.randbytes(size()), what)
            gc_proc = self.server.start_gc()
        await asyncio.sleep(delay)
        if victim == "server":
            await asyncio.to_thread(self.server.kill)
            await asyncio.to_thread(self.server.start)
        elif victim == "gc":
            assert gc_proc is not None
            if gc_proc.poll() is None:
                gc_proc.kill()
            await asyncio.to_thread(gc_proc.wait, 30)
            gc_proc = self.server.start_gc()  # and once more, to the end
        else:
            d = self.a if victim == "a" else self.b
            d.stop_daemon(signal.SIGKILL)
            self._start_daemon(d)
        if gc_proc is not None:
            await asyncio.to_thread(gc_proc.wait, 120)
        await self.settle(what)
        self.check_saved(what)
        self.survived.append((self.seed, index, scenario, victim))
        log(f"survived {what}")

    # -- what must hold ----------------------------------------------------------------------

    async def settle(self, what: str, within: float = 90.0) -> None:
        """Both daemons in sync and their folders equal (a daemon that is still catching up with
        the other's last change is waited on again)."""
        deadline = time.monotonic() + within
        while True:
            for d in (self.a, self.b, self.a):
                left = max(5.0, deadline - time.monotonic())
                with contextlib.redirect_stdout(io.StringIO()):  # its "In sync: ..." lines
                    rc = await d.cli("wait", "--timeout", f"{left:.0f}")
                if rc != 0:
                    raise AssertionError(f"{what}: {d.name} not in sync (drive-sync wait {rc}); "
                                         f"logs in {self.work}")
            ta, tb = folder_tree(self.a.folder), folder_tree(self.b.folder)
            if ta == tb:
                return
            if time.monotonic() > deadline:
                only = sorted(set(ta).symmetric_difference(tb))
                differ = sorted(k for k in set(ta) & set(tb) if ta[k] != tb[k])
                raise AssertionError(f"{what}: folders differ: only on one {only[:10]}, "
                                     f"different {differ[:10]}; logs in {self.work}")
            await asyncio.sleep(0.2)

    def server_checksums(self) -> set[str]:
        """Checksums of every version the server keeps (current, old, trashed, conflicted)."""
        db = sqlite3.connect(f"file:{self.server.data_dir / 'meta.sqlite3'}?mode=ro", uri=True)
        try:
            return {row[0] for row in db.execute("SELECT checksum FROM file_versions")}
        finally:
            db.close()

    def check_saved(self, what: str) -> None:
        kept = self.server_checksums()
        lost = {c: w for c, w in self.saved.items() if not c & kept}
        assert not lost, f"{what}: saved content lost: {sorted(lost.values())[:5]}"

    async def verify_blocks(self) -> Outcome:
        """With the server stopped: every block of every committed version reads back verified
        (an in-process server on the same data directory)."""
        await asyncio.to_thread(self.server.kill, signal.SIGTERM)
        srv = await restart_server(self.server.data_dir, _free_port())
        out = Outcome()
        try:
            await verify_committed(srv, out)
        finally:
            await srv.stop()
        return out


async def run_sweep(work: Path, seed: int, points: range | list[int],
                    log: Callable[[str], None] = print) -> KillSweep:
    """Run ``points`` of ``seed`` in one sweep; raise at the first that does not survive."""
    sweep = KillSweep(work, seed)
    await sweep.start()
    try:
        for index in points:
            await sweep.point(index, log)
        out = await sweep.verify_blocks()
        assert out.lost == [], out.lost
        log(f"verified {out.versions_verified} versions, {out.blocks_verified} blocks")
    finally:
        await sweep.stop()
    return sweep
