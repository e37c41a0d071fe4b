"""The load test's honest users: each from an address of its own, a short think time between
requests (upload, new version, download checked byte for byte, listing), and a long poll on a
second device that their own commits wake."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.load_common import LoadConfig, Stats, address

PASSWORD = "load bench password"


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
