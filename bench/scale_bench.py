"""Several server processes on PostgreSQL beside one on SQLite (issue 18): small-file commits
per second and long-poll fan-out, with 1, 2 and 4 ``drive-server serve`` processes over one
PostgreSQL database (fsync and synchronous commit on, as in production) and one data directory,
beside SQLite with one process, all in one run on this machine.

* commits: ``--clients`` clients, each a user of its own, uploading batches of ``--batch`` small
  files (1–4 KB) with ``upload-init/batch``, ``blocks/batch`` and ``complete/batch``, client i
  talking to process i mod N, for ``--files`` files in all; files committed per second. (One
  user's commits take turns on that user's journal counter, whatever the number of processes:
  spreading one user over processes only adds serialization retries.)
* fan-out: ``--polls`` long polls spread evenly over the processes, then one commit on the first
  process; p50 / p99 / max from the commit request to each answer.

The clients run on the same two cores as the servers and PostgreSQL, so the figures say how
the server scales here, not on a bigger machine. Run: ``python bench/scale_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from syncclient.batch_upload import BatchItem, upload_batch  # noqa: E402
from syncclient.errors import ApiError  # noqa: E402
from syncclient.remote import Remote  # noqa: E402
from tests.helpers import METRICS_AUTH, METRICS_TOKEN, PASSWORD  # noqa: E402
from tests.pg_cluster import _admin, run_async, start_cluster, stop_cluster  # noqa: E402

EMAIL = "bench@example.com"
REPO = Path(__file__).resolve().parents[1]


class Servers:
    """N ``drive-server serve`` processes on one data directory (and database)."""

    def __init__(self, work: Path, n: int, database_url: str, users: int) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}
        self.env.update(PYTHONPATH=str(REPO), DRIVE_METRICS_TOKEN=METRICS_TOKEN,
                        DRIVE_DATABASE_URL=database_url,
                        DRIVE_LIMITS_MAX_CONNECTIONS_PER_CLIENT="0")
        self.data = work / "data"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for email in [EMAIL, *(writer_email(i) for i in range(users))]:
            subprocess.run([sys.executable, "-m", "driveserver", "user", "add", email,
                            "--password-stdin", "--data-dir", str(self.data)],
                           input=(PASSWORD + "\n").encode(), check=True, capture_output=True,
                           env=self.env)
        for i in range(n):
            log = work / f"server-{n}-{i}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "driveserver", "serve", "--port",
                                         "0", "--data-dir", str(self.data)],
                                        stderr=out, env=self.env)
            self.procs.append(proc)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                m = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
                if m:
                    self.urls.append(m.group(1))
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"server {i} did not start")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)


def _cpu_by_group(servers: list[int]) -> dict[str, float]:
    """CPU seconds so far of the server processes, of PostgreSQL's processes and of this
    benchmark (its clients), and the machine's busy and total seconds (``/proc/stat``, over all
    cores, so that work of processes that have exited is counted too)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"servers": 0.0, "postgres": 0.0, "clients": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(text.split(" ", 1)[0])
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if pid in servers:
            out["servers"] += cpu
        elif comm.startswith("postgres"):
            # With its backends that have exited (the postmaster reaps them: their time is
            # in its children's fields).
            out["postgres"] += cpu + (int(fields[13]) + int(fields[14])) / tick
        elif pid == os.getpid():
            out["clients"] += cpu
    jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = jiffies[3] + jiffies[4]
    out["machine_busy"] = (sum(jiffies[:8]) - idle) / tick
    out["machine_total"] = sum(jiffies[:8]) / tick
    return out


def cpu_summary(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    """Where the commit phase's CPU went, and how full the machine's cores were."""
    d = {k: after[k] - before[k] for k in before}
    cores = os.cpu_count() or 1
    busy = d["machine_busy"] / d["machine_total"] * 100 if d["machine_total"] else 0.0
    return (f"CPU-s in {wall:.1f} s: servers {d['servers']:.1f}, PostgreSQL"
            f" {d['postgres']:.1f}, clients {d['clients']:.1f}, the rest"
            f" {d['machine_busy'] - d['servers'] - d['postgres'] - d['clients']:.1f};"
            f" the {cores} cores"
            f" {busy:.0f}% busy")


def writer_email(i: int) -> str:
    return f"writer-{i}@example.com"


async def _login(url: str, device: str, email: str = EMAIL) -> str:
    async with aiohttp.ClientSession() as s, s.post(url + "/api/auth/login", json={
            "email": email, "password": PASSWORD, "device_name": device,
            "new_device": True}) as r:
        return str((await r.json())["token"])


async def commits(srv: Servers, files: Path, total: int, clients: int, batch: int
                  ) -> tuple[float, list[str], str]:
    remotes = []
    for i in range(clients):
        r = Remote(srv.urls[i % len(srv.urls)])
        r.token = await _login(srv.urls[i % len(srv.urls)], f"writer-{i}", writer_email(i))
        remotes.append(r)
    queue = list(range(0, total, batch))
    per_client = [queue[i::clients] for i in range(clients)]

    failed: list[str] = []
    done = 0

    async def run(i: int) -> None:
        nonlocal done
        for k in per_client[i]:
            items = [BatchItem(f"/c{i}/f{j}.txt", files / f"f{j % 2000}.txt", None, None)
                     for j in range(k, min(k + batch, total))]
            try:
                results = await upload_batch(remotes[i], items)
            except ApiError as exc:  # the whole batch refused (reported, not retried here)
                failed.append(f"{exc.status} {exc.code}")
                continue
            bad = [x for x in results if isinstance(x, Exception)]
            failed.extend(str(x)[:80] for x in bad)
            done += len(results) - len(bad)

    for i, r in enumerate(remotes):  # each client's folder exists first (not timed)
        await r.call("POST", "/api/folders", json={"path": f"/c{i}"})
    pids = [p.pid for p in srv.procs]
    cpu_before = _cpu_by_group(pids)
    start = time.monotonic()
    await asyncio.gather(*(run(i) for i in range(clients)))
    took = time.monotonic() - start
    cpu = cpu_summary(cpu_before, _cpu_by_group(pids), took)
    for r in remotes:
        await r.close()
    return done / took, failed, cpu


async def _open_polls(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics", headers=METRICS_AUTH) as r:
        m = re.search(r"^drive_longpoll_open ([0-9.]+)$", await r.text(), re.M)
    return float(m.group(1)) if m else 0.0


async def fan_out(srv: Servers, polls: int) -> list[float]:
    reader = await _login(srv.urls[0], "reader")
    writer = await _login(srv.urls[0], "writer")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as s:
        auth = {"Authorization": f"Bearer {reader}"}
        async with s.get(srv.urls[0] + "/api/sync/cursor", headers=auth) as r:
            cursor = (await r.json())["cursor"]
        answered: list[float] = []

        async def poll(url: str) -> None:
            async with s.get(url + "/api/sync/changes", headers=auth,
                             params={"cursor": cursor, "timeout": "60"}) as r:
                await r.read()
            answered.append(time.monotonic())

        tasks = [asyncio.create_task(poll(srv.urls[i % len(srv.urls)])) for i in range(polls)]
        deadline = time.monotonic() + 60
        while sum([await _open_polls(s, u) for u in srv.urls]) < polls:
            if time.monotonic() > deadline:
                raise RuntimeError("the polls did not all wait")
            await asyncio.sleep(0.1)
        start = time.monotonic()
        async with s.post(srv.urls[0] + "/api/folders", json={"path": "/wake"},
                          headers={"Authorization": f"Bearer {writer}"}) as r:
            assert r.status == 201, await r.text()
        await asyncio.gather(*tasks)
    return sorted(t - start for t in answered)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--polls", type=int, default=1000)
    ap.add_argument("--processes", default="1,2,4")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    files = work / "files"
    files.mkdir()
    rnd = random.Random(1)
    for j in range(2000):
        (files / f"f{j}.txt").write_bytes(os.urandom(rnd.randint(1024, 4096)))
    cluster = start_cluster(durable=True)
    try:
        rows = []
        setups = [("SQLite", 1, "")] + [("PostgreSQL", int(n), "pg")
                                        for n in args.processes.split(",")]
        for k, (label, n, kind) in enumerate(setups):
            url = ""
            if kind:
                name = f"bench{k}"
                run_async(_admin(cluster, f"CREATE DATABASE {name}"))
                url = cluster.url(name)
            run_dir = work / f"run{k}"
            run_dir.mkdir()
            srv = Servers(run_dir, n, url, args.clients)
            try:
                rate, failed, cpu = await commits(srv, files, args.files, args.clients, args.batch)
                lat = await fan_out(srv, args.polls)
            except Exception:
                for log in sorted(run_dir.glob("server-*.log")):  # what went wrong, server-side
                    text = log.read_text(errors="replace")
                    if "Traceback" in text:
                        print(f"--- {log.name}:\n{text[text.index('Traceback'):][:6000]}")
                raise
            finally:
                srv.stop()
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            rows.append((label, n, rate, statistics.median(lat), p99, lat[-1]))
            refused = f" ({len(failed)} refused: {sorted(set(failed))[:3]})" if failed else ""
            print(f"{label:<10} {n} process(es): {rate:7.0f} files/s committed{refused};"
                  f" {args.polls} long polls answered p50 {statistics.median(lat) * 1000:.0f}"
                  f" / p99 {p99 * 1000:.0f} / max {lat[-1] * 1000:.0f} ms\n    commits: {cpu}",
                  flush=True)
        one = next((r[2] for r in rows if r[0] == "PostgreSQL" and r[1] == 1), None)
        for label, n, rate, *_ in rows:
            if label == "PostgreSQL" and one:
                print(f"  PostgreSQL x{n}: {rate / one:.2f}x one process (target for 2: 1.6x)")
    finally:
        stop_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
