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

``tests/test_load_small.py`` runs the same harness at a small size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import zstandard

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "load bench password"
ATTACK_BOUND_SECONDS = 10.0  # an attack must be answered (refused) within this


@dataclass
class LoadConfig:
    users: int = 200
    seconds: float = 60.0
    slowloris: int = 300
    bomb_every: float = 2.0
    longpoll_seconds: float = 20.0
    think: tuple[float, float] = (0.2, 1.0)
    seed: int = 1
    header_timeout: float = 60.0  # the server's limits.header_timeout_seconds


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    attacks: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # status, seconds
    attack_failures: list[str] = field(default_factory=list)
    loris: dict[str, int] = field(default_factory=lambda: {
        "opened": 0, "refused": 0, "dropped": 0, "bytes_sent": 0, "most_at_once": 0})
    loris_open: int = 0
    polls_with_changes: int = 0
    rss_kb: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)  # when the load began
    slowest: list[tuple[float, str, float]] = field(default_factory=list)  # s, kind, at

    def took(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if kind != "longpoll wake":
            self.slowest.append((seconds, kind, time.monotonic() - seconds - self.started))
            if len(self.slowest) > 200:
                self.slowest = sorted(self.slowest, reverse=True)[:20]

    def error(self, who: str, what: str) -> None:
        if len(self.errors) < 10_000:
            self.errors.append(f"{who}: {what}")

    def honest_p99(self) -> float:
        every = [t for k, v in self.latencies.items() if k != "longpoll wake" for t in v]
        return percentile(every, 0.99) if every else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def address(i: int) -> str:
    """User ``i``'s own source address, in 127.1.0.0/16 (all of 127/8 is loopback on Linux)."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


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


# --- honest users -----------------------------------------------------------------------------

@dataclass
class User:
    i: int
    email: str
    web: str = ""  # the token of the device that changes things
    laptop: str = ""  # the token of the device that long-polls
    files: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)  # path -> id, v, data
    last_commit: float = 0.0


def session_for(i: int, cfg: LoadConfig) -> aiohttp.ClientSession:
    # Idle connections are given up before the server's head timeout would close them, so a
    # request never races the server closing its connection.
    connector = aiohttp.TCPConnector(local_addr=(address(i), 0), limit=16,
                                     keepalive_timeout=min(15.0, cfg.header_timeout / 2))
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=cfg.longpoll_seconds + 60))


async def setup_user(url: str, user: User, cfg: LoadConfig) -> None:
    async with session_for(user.i, cfg) as s:
        async with s.post(url + "/api/auth/register",
                          json={"email": user.email, "password": PASSWORD}) as r:
            assert r.status == 201, (r.status, await r.text())
        for device in ("web", "laptop"):
            async with s.post(url + "/api/auth/login", json={
                    "email": user.email, "password": PASSWORD, "device_name": device}) as r:
                assert r.status == 200, (r.status, await r.text())
                setattr(user, device, (await r.json())["token"])


def make_data(rnd: random.Random, tag: str) -> bytes:
    """1 to 64 KiB, half random bytes and half text (so the wire's zstd does some work)."""
    n = rnd.randint(1024, 64 * 1024)
    return (rnd.randbytes(n // 2) + (tag + "\n").encode() * (n // (2 * len(tag) + 2)))[:n]


async def honest_user(url: str, user: User, cfg: LoadConfig, stats: Stats,
                      stop_at: float) -> None:
    rnd = random.Random(cfg.seed * 100_003 + user.i)
    who = user.email
    async with session_for(user.i, cfg) as s:
        poll = asyncio.create_task(long_poll(url, s, user, cfg, stats, stop_at))
        try:
            await asyncio.sleep(rnd.uniform(0, cfg.think[1]))  # not all at once
            n = 0
            while time.monotonic() < stop_at:
                kind = rnd.choice(["upload", "overwrite", "download", "download", "list"])
                if kind in ("overwrite", "download") and not user.files:
                    kind = "upload"
                start = time.monotonic()
                try:
                    await ACTIONS[kind](url, s, user, rnd, f"{who}-{n}")
                    stats.took(kind, time.monotonic() - start)
                except Exception as exc:  # any failure of an honest request is reported
                    stats.error(who, f"{kind}: {exc!r}")
                n += 1
                await asyncio.sleep(rnd.uniform(*cfg.think))
        finally:
            await poll


async def api(s: aiohttp.ClientSession, method: str, url: str, token: str,
              **kw: Any) -> Any:
    async with s.request(method, url, headers={"Authorization": f"Bearer {token}"},
                         **kw) as r:
        body = await r.read()
        assert r.status < 300, f"{method} {url.split('?')[0]}: {r.status} {body[:200]!r}"
        return json.loads(body) if body and r.content_type == "application/json" else body


async def do_upload(url: str, s: aiohttp.ClientSession, user: User, rnd: random.Random,
                    tag: str, path: str | None = None) -> None:
    data = make_data(rnd, tag)
    known = user.files.get(path) if path else None
    target = {"file_id": known[0], "base_version": known[1]} if known else \
        {"path": f"/load/{tag}.bin"}
    init = await api(s, "POST", url + "/api/files/upload-init", user.web,
                     json={**target, "size": len(data)})
    async with s.post(init["upload_url"], data=data) as r:
        assert r.status == 200, f"blocks: {r.status} {(await r.read())[:200]!r}"
        blocks = (await r.json())["blocks"]
    base = {"base_version": known[1]} if known else {}
    done = await api(s, "POST", url + f"/api/files/{init['file_id']}/complete", user.web,
                     json={"blocks": blocks, **base})
    user.files[path or f"/load/{tag}.bin"] = (init["file_id"], done["version"], data)
    user.last_commit = time.monotonic()


async def do_overwrite(url: str, s: aiohttp.ClientSession, user: User, rnd: random.Random,
                       tag: str) -> None:
    await do_upload(url, s, user, rnd, tag, path=rnd.choice(sorted(user.files)))


async def do_download(url: str, s: aiohttp.ClientSession, user: User, rnd: random.Random,
                      tag: str) -> None:
    path = rnd.choice(sorted(user.files))
    file_id, _, data = user.files[path]
    got = await api(s, "GET", url + f"/api/files/{file_id}/content", user.web)
    assert got == data, f"download of {path}: {len(got)} bytes differ from the saved {len(data)}"


async def do_list(url: str, s: aiohttp.ClientSession, user: User, rnd: random.Random,
                  tag: str) -> None:
    body = await api(s, "GET", url + "/api/files", user.web, params={"path": "/load"}) \
        if user.files else await api(s, "GET", url + "/api/files", user.web)
    if user.files:
        names = {e["name"] for e in body["entries"]}
        assert names >= {p.rsplit("/", 1)[1] for p in user.files}, "listing misses a file"


ACTIONS = {"upload": do_upload, "overwrite": do_overwrite, "download": do_download,
           "list": do_list}


async def long_poll(url: str, s: aiohttp.ClientSession, user: User, cfg: LoadConfig,
                    stats: Stats, stop_at: float) -> None:
    """The user's second device waits for changes; each answer with changes times the wake
    from the first device's latest commit (an upper bound: polls are re-armed in between)."""
    cursor = (await api(s, "GET", url + "/api/sync/cursor", user.laptop))["cursor"]
    while time.monotonic() < stop_at:
        wait = max(0.0, min(cfg.longpoll_seconds, stop_at - time.monotonic()))
        try:
            body = await api(s, "GET", url + "/api/sync/changes", user.laptop,
                             params={"cursor": cursor, "timeout": f"{wait:.1f}"})
        except Exception as exc:
            stats.error(user.email, f"long poll: {exc!r}")
            await asyncio.sleep(1)
            continue
        cursor = body["next_cursor"]
        if body["changes"]:
            stats.polls_with_changes += 1
            if user.last_commit:
                stats.took("longpoll wake", time.monotonic() - user.last_commit)


# --- attackers --------------------------------------------------------------------------------

async def slowloris(host: str, port: int, source: str, stats: Stats, stop_at: float,
                    rnd: random.Random) -> None:
    """One connection at a time from ``source``: a request head sent a byte every second or
    so, forever; when the server drops it (or refuses it), open another."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100_000
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            stats.loris["refused"] += 1
            await asyncio.sleep(1)
            continue
        stats.loris["opened"] += 1
        stats.loris_open += 1
        refused = False
        stats.loris["most_at_once"] = max(stats.loris["most_at_once"], stats.loris_open)
        try:
            for b in head:
                if time.monotonic() > stop_at:
                    break
                writer.write(bytes([b]))
                await writer.drain()
                stats.loris["bytes_sent"] += 1
                with suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(512), rnd.uniform(0.5, 1.5))
                    if answer.startswith(b"HTTP/1.1 503"):
                        stats.loris["refused"] += 1
                        refused = True
                        break
                    stats.loris["dropped"] += 1  # closed (b"") or answered: not served slowly
                    break
        except OSError:
            stats.loris["dropped"] += 1
        finally:
            stats.loris_open -= 1
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
        if refused:
            await asyncio.sleep(1)  # and try again, as a patient attacker would


def zstd_bomb(inflated: int = 256 * 1024 * 1024) -> bytes:
    """A zstd frame of a few KB that inflates to ``inflated`` zero bytes (no size declared)."""
    c = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = bytes(1024 * 1024)
    parts = [c.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join(parts) + c.flush()


async def big_stream(total: int) -> AsyncIterator[bytes]:
    chunk = b"x" * (1024 * 1024)
    for _ in range(total // len(chunk)):
        yield chunk


@dataclass
class Payloads:
    """The bombs, made before the load starts (making them takes the client's loop a second)."""
    zstd: bytes
    deep: bytes
    big_json: bytes


def make_payloads() -> Payloads:
    return Payloads(zstd_bomb(), b'{"path": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                    json.dumps({"files": [{"path": f"/x{i}", "size": 1}
                                          for i in range(400_000)]}).encode())


async def bomber(url: str, token: str, cfg: LoadConfig, stats: Stats, stop_at: float,
                 payloads: Payloads) -> None:
    """One attack every ``bomb_every`` seconds, the kinds in turn, from 127.0.0.4."""
    bomb, deep, big_json = payloads.zstd, payloads.deep, payloads.big_json
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.4", 0), force_close=True)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector) as s:
        init = await api(s, "POST", url + "/api/files/upload-init", token,
                         json={"path": "/bomb.bin", "size": 4 * 1024 * 1024})
        block_url = init["block_url"].replace("{hash}", "ab" * 32)

        async def json_depth() -> int:
            async with s.post(url + "/api/folders", data=deep,
                              headers={**auth, "Content-Type": "application/json"}) as r:
                return r.status

        async def huge_body() -> int:
            async with s.post(url + "/api/auth/login", data=big_stream(64 * 1024 * 1024),
                              headers={"Content-Type": "application/json"}) as r:
                return r.status

        async def zstd() -> int:
            async with s.put(block_url, data=bomb, headers={"X-Block-Encoding": "zstd"}) as r:
                return r.status

        async def huge_json() -> int:
            async with s.post(url + "/api/files/upload-init/batch", data=big_json,
                              headers={**auth, "Content-Type": "application/json"}) as r:
                return r.status

        kinds = {"json nested 100,000 deep": json_depth, "64 MiB body to login": huge_body,
                 "zstd block inflating to 256 MiB": zstd,
                 f"{len(big_json) >> 20} MiB JSON": huge_json}
        n = 0
        while time.monotonic() < stop_at:
            name, attack = list(kinds.items())[n % len(kinds)]
            n += 1
            start = time.monotonic()
            try:
                status = await asyncio.wait_for(attack(), ATTACK_BOUND_SECONDS)
            except TimeoutError:
                stats.attack_failures.append(f"{name}: no answer within {ATTACK_BOUND_SECONDS} s")
                continue
            except aiohttp.ClientError:
                status = 0  # the server closed the connection while it was sent: refused
            took = time.monotonic() - start
            stats.attacks.setdefault(name, []).append((status, took))
            if status >= 500 or 200 <= status < 300:
                stats.attack_failures.append(f"{name}: answered {status}")
            await asyncio.sleep(cfg.bomb_every)


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
