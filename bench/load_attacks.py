"""The load test's attackers: a slowloris (request heads a byte at a time) and bomb attempts
(nested JSON, huge bodies, a zstd block that inflates far past a block), each of which must be
refused quickly with a 4xx while the honest users carry on."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass

import aiohttp
import zstandard

from bench.load_common import LoadConfig, Stats
from bench.load_users import api

ATTACK_BOUND_SECONDS = 10.0  # an attack must be answered (refused) within this


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
