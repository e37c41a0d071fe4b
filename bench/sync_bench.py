"""Sync client benchmarks on loopback (a benchmark, not a test: figures on a shared machine vary).

Starts ``drive-server serve`` as a subprocess (its own process, as in production; a temp data
dir) and two devices with their own config dirs, then measures:

1. propagation latency: a 1 MB file saved in folder A until it is complete in folder B, with
   both ``drive-sync run`` daemons running (p50/p95 over ``--saves`` saves);
2. ``--files`` files of 1–16 KB created in A until all are in B (daemons running);
3. bytes uploaded (server metric ``drive_block_bytes_total{direction="in"}``) for edits of a
   ``--big-mib`` file — 100 bytes overwritten in the middle, 1 MB appended, 4 MiB rewritten —
   with ``drive-sync run --once``, beside ``rsync --no-whole-file --stats`` for the same edits
   (when rsync is installed).

Run: ``python bench/sync_bench.py`` (defaults: 20 saves, 10,000 files, 100 MiB); ``--parts files``
runs only the second part. The many-files figure is printed with the CPU seconds the server and
each daemon spent on it and beside ``rsync -a`` of the same tree; ``--profile DIR`` records
py-spy profiles of the three processes during it (collapsed stacks, one file each, for any flame graph tool) (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from tests.helpers import METRICS_AUTH, METRICS_TOKEN, PASSWORD  # noqa: E402
from tests.sync_helpers import EMAIL, Device, make_devices  # noqa: E402

MiB = 1024 * 1024


class Server:
    """``drive-server serve`` in a subprocess; ``url`` from its log line."""

    def __init__(self, data: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}
        env["DRIVE_METRICS_TOKEN"] = METRICS_TOKEN  # /metrics answers only with it
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this tree's code
        self.log = open(data.parent / "server.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "driveserver", "serve", "--port",
                                      "0", "--data-dir", str(data)], stderr=self.log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.log.seek(0)
            m = re.search(r"listening on (http://\S+)", self.log.read())
            if m:
                self.url = m.group(1)
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not start")
        subprocess.run([sys.executable, "-m", "driveserver", "user", "add", EMAIL,
                        "--password-stdin", "--data-dir", str(data)], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True, env=env)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def start_profiles(pids: dict[str, int], out: Path) -> list[subprocess.Popen]:
    """py-spy recording each named process until stopped (SIGINT writes its collapsed stacks)."""
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [subprocess.Popen([spy, "record", "--rate", "50", "--nonblocking", "--format", "raw", "-o",
                              str(out / f"{name}.txt"), "--pid", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


def stop_profiles(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(timeout=60)


async def metric(srv: Server, name: str, direction: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(srv.url + "/metrics",
                                                   headers=METRICS_AUTH) as r:
        text = await r.text()
    m = re.search(rf'^{name}\{{direction="{direction}"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def wait_until(predicate, within: float, interval: float = 0.005) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)
    return time.monotonic() - start


def same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


async def latency(a: Device, b: Device, saves: int) -> list[float]:
    out = []
    for i in range(saves):
        data = os.urandom(1_000_000)
        start = time.monotonic()
        a.write("latency.bin", data)
        await wait_until(lambda d=data: same_bytes(b.folder / "latency.bin", d), 60)
        out.append(time.monotonic() - start)
        await asyncio.sleep(0.2)  # let both daemons settle before the next save
        del i
    return out


async def many_files(a: Device, b: Device, count: int) -> float:
    rnd = random.Random(1)
    start = time.monotonic()
    names = []
    for i in range(count):
        rel = f"many/{i % 100}/f{i}.txt"
        a.write(rel, os.urandom(rnd.randint(1024, 16 * 1024)))
        names.append(rel)
    last = b.folder / names[-1]

    def all_there() -> bool:
        if not last.exists():
            return False
        return sum(len(fs) for _, _, fs in os.walk(b.folder / "many")) >= count

    await wait_until(all_there, 600, interval=0.25)
    return time.monotonic() - start


def rsync_copy_seconds(src: Path, work: Path) -> float | None:
    """The same files copied by ``rsync -a`` into an empty folder on the same disk (no network,
    no server): what copying them costs this machine at all, beside the sync figure."""
    if shutil.which("rsync") is None:
        return None
    dest = work / "rsync-copy"
    start = time.monotonic()
    subprocess.run(["rsync", "-a", f"{src}/", str(dest)], check=True, capture_output=True)
    took = time.monotonic() - start
    shutil.rmtree(dest, ignore_errors=True)
    return took


def rsync_literal(old: Path, new: Path, work: Path) -> int | None:
    """Literal (sent) bytes of ``rsync --no-whole-file --ignore-times --stats`` updating a copy of old to new."""
    if shutil.which("rsync") is None:
        return None
    dest = work / "rsync-dest.bin"
    shutil.copyfile(old, dest)
    r = subprocess.run(["rsync", "--no-whole-file", "--ignore-times", "--stats", str(new), str(dest)],
                       capture_output=True, text=True, check=True)
    m = re.search(r"Literal data: ([\d,.]+)", r.stdout)
    return int(m.group(1).replace(",", "").replace(".", "")) if m else None


async def edits(srv, a: Device, b: Device, big_mib: int, work: Path) -> list[tuple]:
    size = big_mib * MiB
    data = bytearray(os.urandom(size))
    a.write("big.bin", bytes(data))
    await a.sync()
    await b.sync()
    rows = []
    mid = size // 2

    def hundred_bytes(d: bytearray) -> None:
        d[mid:mid + 100] = os.urandom(100)

    def append_mb(d: bytearray) -> None:
        d.extend(os.urandom(1_000_000))

    def rewrite_4mib(d: bytearray) -> None:
        d[mid:mid + 4 * MiB] = os.urandom(4 * MiB)

    for label, edit in [("100 bytes overwritten in the middle", hundred_bytes),
                        ("1 MB appended", append_mb), ("4 MiB rewritten", rewrite_4mib)]:
        old = work / "old.bin"
        old.write_bytes(bytes(data))
        edit(data)
        new = work / "new.bin"
        new.write_bytes(bytes(data))
        before = await metric(srv, "drive_block_bytes_total", "in")
        a.write("big.bin", bytes(data))
        await a.sync()
        sent = await metric(srv, "drive_block_bytes_total", "in") - before
        before_out = await metric(srv, "drive_block_bytes_total", "out")
        await b.sync()
        fetched = await metric(srv, "drive_block_bytes_total", "out") - before_out
        assert b.read("big.bin") == bytes(data)
        rows.append((label, int(sent), int(fetched), rsync_literal(old, new, work)))
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saves", type=int, default=20)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big-mib", type=int, default=100)
    ap.add_argument("--parts", default="latency,files,edits",
                    help="comma-separated: latency, files, edits (default: all three)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="py-spy profiles (collapsed stacks) of the server and both daemons during the files part")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    srv = Server(work / "data")
    try:
        a, b = make_devices(work, "bench-a", "bench-b")
        await a.init(srv)
        await b.init(srv)
        a.start_daemon(work / "a.log")
        b.start_daemon(work / "b.log")
        try:
            await asyncio.sleep(1.0)  # both daemons did their start-up sync
            if "latency" in parts:
                lat = await latency(a, b, args.saves)
                q = statistics.quantiles(lat, n=20)
                print(f"1 MB propagation A→B over {len(lat)} saves: p50"
                      f" {statistics.median(lat):.3f} s, p95 {q[18]:.3f} s"
                      f" (targets: p50 ≤ 0.35 s, p95 ≤ 0.6 s)", flush=True)
            if "files" in parts:
                assert a.daemon is not None and b.daemon is not None
                pids = {"server": srv.proc.pid, "daemon-a": a.daemon.pid,
                        "daemon-b": b.daemon.pid}
                cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                spies = start_profiles(pids, args.profile) if args.profile else []
                try:
                    took = await many_files(a, b, args.files)
                finally:
                    stop_profiles(spies)
                    if args.profile:  # the daemons' logs say when each round ran
                        for log in ("a.log", "b.log", "server.log"):
                            shutil.copyfile(work / log, args.profile / log)
                cpu = {k: [t - t0 for t, t0 in zip(cpu_seconds(p), cpu0[k], strict=True)]
                       for k, p in pids.items()}
                ref = rsync_copy_seconds(a.folder / "many", work)
                ref_text = f"; rsync -a of the same tree on this disk: {ref:.1f} s" \
                    if ref is not None else "; rsync not installed"
                print(f"{args.files} files of 1–16 KB A→B: {took:.1f} s (target < 12 s){ref_text}")
                print("  CPU seconds (user + system): " + ", ".join(
                    f"{k} {u + s:.1f} ({u:.1f} + {s:.1f})" for k, (u, s) in cpu.items()),
                    flush=True)
        finally:
            a.stop_daemon()
            b.stop_daemon()
        if "edits" not in parts:
            return
        print(f"Edits of a {args.big_mib} MiB file (bytes uploaded by drive-sync vs rsync):")
        for label, sent, fetched, rs in await edits(srv, a, b, args.big_mib, work):
            rs_text = f"{rs:,}" if rs is not None else "rsync not installed"
            print(f"  {label:<36} drive-sync up {sent:>12,}  down {fetched:>12,}"
                  f"  rsync literal {rs_text}")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
