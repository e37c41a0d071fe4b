"""Long-poll fan-out benchmark: N waiting long polls, one commit, how fast are all N answered?

Starts ``drive-server`` as a subprocess on 127.0.0.1 (fresh data directory), registers a user
with two devices, opens N concurrent ``GET /api/sync/changes`` long polls as one device (spread
over a few client processes, so the client's own event loop does not dominate the figure),
waits until the server reports all N waiting (``drive_longpoll_open`` on /metrics), then makes
one commit (``POST /api/folders``) as the other device and records when each poll is answered.

It prints, for each N: p50 / p99 / max from just before the commit request was sent until each
answer arrived (an upper bound: it includes the commit request itself and the client processes'
scheduling), the server's own commit-to-answer figure (from the ``drive_longpoll_wake_seconds``
histogram), and the server process's RSS now and at its peak (VmRSS / VmHWM).

    python bench/longpoll_bench.py                 # N = 1000 and 5000
    python bench/longpoll_bench.py -n 20000 --client-procs 4

Targets (issue 4): all of 5,000 answered within 1 s of the commit; server RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

PASSWORD = "benchmark password"
METRICS_TOKEN = "benchmark-metrics-token"  # /metrics answers only with it


def raise_fd_limit() -> int:
    """Every poll is a socket on both sides: lift the soft limit to the hard one (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- client worker processes ------------------------------------------------------------------

async def _wait_all(url: str, token: str, cursor: str, count: int) -> list[tuple[float, int]]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one() -> tuple[float, int]:
            async with session.get(f"{url}/api/sync/changes",
                                   params={"cursor": cursor, "timeout": "90"},
                                   headers={"Authorization": f"Bearer {token}"}) as resp:
                body = await resp.json()
                return time.time(), len(body.get("changes", []))

        return await asyncio.gather(*(one() for _ in range(count)))


def worker(url: str, token: str, cursor: str, count: int, out: Any) -> None:
    out.put(asyncio.run(_wait_all(url, token, cursor, count)))


# --- the run ----------------------------------------------------------------------------------

async def api(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
              **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, headers=headers, **kw) as resp:
        if resp.status >= 400:
            raise RuntimeError(f"{method} {url}: {resp.status} {await resp.text()}")
        return await resp.json() if resp.content_type == "application/json" else await resp.text()


async def wait_ready(session: aiohttp.ClientSession, url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await api(session, "GET", f"{url}/healthz")
            return
        except (aiohttp.ClientError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def run(ns: list[int], client_procs: int, pid: int, url: str) -> list[dict[str, Any]]:
    results = []
    async with aiohttp.ClientSession() as s:
        await wait_ready(s, url)
        await api(s, "POST", f"{url}/api/auth/register",
                  json={"email": "bench@example.com", "password": PASSWORD})
        tokens = {}
        for device in ("poller", "writer"):
            body = await api(s, "POST", f"{url}/api/auth/login",
                             json={"email": "bench@example.com", "password": PASSWORD,
                                   "device_name": device})
            tokens[device] = body["token"]
        ctx = mp.get_context("spawn")
        for n in ns:
            cursor = (await api(s, "GET", f"{url}/api/sync/cursor", tokens["poller"]))["cursor"]
            before = await api(s, "GET", f"{url}/metrics", METRICS_TOKEN)
            queue = ctx.Queue()
            shares = [n // client_procs + (1 if i < n % client_procs else 0)
                      for i in range(client_procs)]
            procs = [ctx.Process(target=worker, args=(url, tokens["poller"], cursor, k, queue))
                     for k in shares if k]
            for p in procs:
                p.start()
            deadline = time.monotonic() + 300
            while metric(await api(s, "GET", f"{url}/metrics", METRICS_TOKEN), "drive_longpoll_open") < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("the polls did not all start waiting")
                await asyncio.sleep(0.05)
            rss_waiting = proc_status(pid)
            t0 = time.time()
            await api(s, "POST", f"{url}/api/folders", tokens["writer"],
                      json={"path": f"/bench-{n}"})
            t1 = time.time()
            answers: list[tuple[float, int]] = []
            for _ in procs:
                answers += await asyncio.to_thread(queue.get, True, 300)
            for p in procs:
                p.join()
            after = await api(s, "GET", f"{url}/metrics", METRICS_TOKEN)
            latencies = [done - t0 for done, _ in answers]
            woken = (metric(after, "drive_longpoll_wake_seconds_count")
                     - metric(before, "drive_longpoll_wake_seconds_count"))
            wake_sum = (metric(after, "drive_longpoll_wake_seconds_sum")
                        - metric(before, "drive_longpoll_wake_seconds_sum"))
            results.append({
                "n": n, "answered": len(answers),
                "with_the_change": sum(1 for _, k in answers if k == 1),
                "commit_request_ms": round((t1 - t0) * 1000, 1),
                "p50_ms": round(statistics.median(latencies) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
                "server_mean_wake_ms": round(wake_sum / woken * 1000, 1) if woken else None,
                "rss_waiting_mb": round(rss_waiting["VmRSS"] / 1024, 1),
                "rss_peak_mb": round(proc_status(pid)["VmHWM"] / 1024, 1),
            })
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1000, 5000],
                        help="numbers of concurrent long polls (default: 1000 5000)")
    parser.add_argument("--client-procs", type=int, default=2,
                        help="client processes the polls are spread over (default 2)")
    args = parser.parse_args()
    limit = raise_fd_limit()
    if limit < 2 * max(args.n) + 100:
        print(f"RLIMIT_NOFILE is {limit}: too low for {max(args.n)} polls", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="drive-bench-") as tmp:
        env = {**os.environ, "DRIVE_SERVER_LOG_LEVEL": "WARNING",
               "DRIVE_ACCOUNTS_REGISTRATION_OPEN": "true",  # it registers its user by API
               # every poll comes from 127.0.0.1: no cap per client; /metrics needs its token
               "DRIVE_LIMITS_MAX_CONNECTIONS_PER_CLIENT": "0", "DRIVE_METRICS_TOKEN": METRICS_TOKEN,
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        server = subprocess.Popen(
            [sys.executable, "-m", "driveserver", "serve", "--data-dir", f"{tmp}/data",
             "--host", "127.0.0.1", "--port", str(port)], env=env)
        try:
            results = asyncio.run(run(args.n, args.client_procs, server.pid,
                                      f"http://127.0.0.1:{port}"))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"{'N':>6} {'answered':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'server wake ms':>14} {'RSS MB':>7} {'peak MB':>8}")
    for r in results:
        print(f"{r['n']:>6} {r['answered']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8}"
              f" {r['server_mean_wake_ms']!s:>14} {r['rss_waiting_mb']:>7} {r['rss_peak_mb']:>8}")
    print(json.dumps(results))
    ok = all(r["answered"] == r["n"] == r["with_the_change"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
