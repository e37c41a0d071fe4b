"""Load test: many honest users and a few attackers against one ``drive-server serve``.

Starts the server as a subprocess (fresh data directory, its default limits), registers the
users, then for ``--minutes`` runs, in this process, on asyncio and aiohttp:

- **honest users** (``--users``, each from an address of its own in 127.0.0.0/8, as real users
  are, so the per-address connection cap applies to them as in production), each in a loop with
  a short think time: upload a new file (upload-init, blocks, complete), save a new version of
  one of their files (on the version they know), download one and compare every byte with what
  they saved, list their folder; and each holds a long poll on a second device, which must be
  answered with the changes their first device commits;
- **a slowloris** (``--slowloris`` connections from one other address) sending a request head
  a byte at a time, reconnecting when the server drops or refuses it (past the per-address
  cap of 256 connections it is refused at once);
- **bomb attempts**, one every ``--bomb-every`` seconds from another address, in turn: a JSON
  nested 100,000 deep, a 64 MiB body to the login route, a zstd block that inflates to 256 MiB,
  a 12 MiB JSON body to an authenticated route.

It prints every honest error (there should be none), p50/p99/max latency per kind of request,
what each attack got back and how long the server took to answer it, and the server's RSS
before and after the load (and its peak). Exit status 1 if an honest user saw an error, an
attack got a 5xx or no answer within its bound, or a long poll missed a change.

    python bench/load_bench.py                       # 200 users for 1 minute
    python bench/load_bench.py --minutes 5
    python bench/load_bench.py --users 30 --minutes 0.25 --slowloris 100

``tests/test_load_small.py`` runs the same harness at a small size. The
parts: bench/load_users.py (honest users), bench/load_attacks.py (attackers),
bench/load_common.py (settings and figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: bench.* is importable

from bench.load_attacks import bomber, make_payloads, slowloris  # noqa: E402
from bench.load_common import LoadConfig, Stats, percentile  # noqa: E402
from bench.load_users import User, honest_user, setup_user  # noqa: E402


def proc_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# --- the server -------------------------------------------------------------------------------

@asynccontextmanager
async def serve(workdir: Path, header_timeout: float) -> AsyncIterator[tuple[str, int]]:
    """``drive-server serve`` on a free port with its default limits (registration opened for
    the setup, the head timeout as given): yields (url, pid); stopped by its PID."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DRIVE_SERVER_LOG_LEVEL": "WARNING",
           "DRIVE_ACCOUNTS_REGISTRATION_OPEN": "true",
           "DRIVE_LIMITS_HEADER_TIMEOUT_SECONDS": str(header_timeout),
           "PYTHONPATH": str(REPO)}
    log = await asyncio.to_thread(open, workdir / "server.log", "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "driveserver", "serve", "--data-dir", str(workdir / "data"),
        "--host", "127.0.0.1", "--port", str(port),
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with s.get(url + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {workdir / 'server.log'}")
                await asyncio.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


# --- the run ----------------------------------------------------------------------------------

async def run_load(url: str, pid: int, cfg: LoadConfig) -> Stats:
    stats = Stats()
    users = [User(i, f"user{i}@example.com") for i in range(cfg.users)]
    sem = asyncio.Semaphore(8)

    async def setup(u: User) -> None:
        async with sem:
            await setup_user(url, u, cfg)
    await asyncio.gather(*(setup(u) for u in users))
    attacker = User(10_000, "attacker@example.com")
    await setup_user(url, attacker, cfg)
    payloads = await asyncio.to_thread(make_payloads)
    stats.rss_kb["before"] = proc_kb(pid)["VmRSS"]
    stats.started = time.monotonic()
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    stop_at = time.monotonic() + cfg.seconds
    rnd = random.Random(cfg.seed)
    tasks = [asyncio.create_task(honest_user(url, u, cfg, stats, stop_at)) for u in users]
    # All from one address: past the per-address cap (256 by default) the server refuses them.
    tasks += [asyncio.create_task(slowloris(host, port, "127.0.0.2", stats, stop_at,
                                            random.Random(rnd.random())))
              for _ in range(cfg.slowloris)]
    tasks.append(asyncio.create_task(bomber(url, attacker.web, cfg, stats, stop_at,
                                            payloads)))
    await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)  # let the server finish closing what the run left
    kb = proc_kb(pid)
    stats.rss_kb["after"], stats.rss_kb["peak"] = kb["VmRSS"], kb["VmHWM"]
    if any(u.files for u in users) and not stats.polls_with_changes:
        stats.error("every user", "no long poll was answered with a change")
    return stats


def report(stats: Stats, cfg: LoadConfig) -> str:
    lines = [f"{cfg.users} honest users, {cfg.seconds:.0f} s, slowloris {cfg.slowloris} "
             f"connections, a bomb every {cfg.bomb_every} s"]
    lines.append(f"{'request':<16} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind, values in sorted(stats.latencies.items()):
        lines.append(f"{kind:<16} {len(values):>7} {percentile(values, 0.5) * 1000:>8.1f} "
                     f"{percentile(values, 0.99) * 1000:>8.1f} {max(values) * 1000:>8.1f}")
    lines.append("slowest honest requests: " + ", ".join(
        f"{kind} {t * 1000:.0f} ms at {at:.1f} s" for t, kind, at in
        sorted(stats.slowest, reverse=True)[:5]))
    lines.append(f"honest errors: {len(stats.errors)}" +
                 "".join(f"\n  {e}" for e in stats.errors[:20]))
    lines.append(f"long polls answered with changes: {stats.polls_with_changes}")
    lines.append("slowloris: " + ", ".join(f"{k} {v}" for k, v in stats.loris.items()))
    for name, results in sorted(stats.attacks.items()):
        statuses = sorted({st for st, _ in results})
        slowest = max(t for _, t in results)
        lines.append(f"attack {name}: {len(results)} times, answered {statuses}, "
                     f"slowest {slowest * 1000:.0f} ms")
    lines.append(f"attack failures: {len(stats.attack_failures)}" +
                 "".join(f"\n  {e}" for e in stats.attack_failures[:20]))
    mb = {k: v / 1024 for k, v in stats.rss_kb.items()}
    lines.append(f"server RSS: before {mb['before']:.0f} MB, after {mb['after']:.0f} MB, "
                 f"peak {mb['peak']:.0f} MB")
    return "\n".join(lines)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def bench(cfg: LoadConfig) -> Stats:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="drive-load-") as tmp:
        async with serve(Path(tmp), cfg.header_timeout) as (url, pid):
            return await run_load(url, pid, cfg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--slowloris", type=int, default=300, help="slow connections at once")
    ap.add_argument("--bomb-every", type=float, default=2.0, help="seconds between bombs")
    ap.add_argument("--header-timeout", type=float, default=60.0,
                    help="the server's limits.header_timeout_seconds (its default: 60)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg = LoadConfig(users=args.users, seconds=args.minutes * 60, slowloris=args.slowloris,
                     bomb_every=args.bomb_every, seed=args.seed,
                     header_timeout=args.header_timeout)
    stats = asyncio.run(bench(cfg))
    print(report(stats, cfg))
    return 1 if stats.errors or stats.attack_failures else 0


if __name__ == "__main__":
    sys.exit(main())
