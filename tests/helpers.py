"""Test helpers: start the real app on a free port, and a thin JSON client for it."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from driveserver import appkeys
from driveserver.app import build_app, start_site
from driveserver.config import Config, load_config
from driveserver.meta.integrity import misplaced_items

PASSWORD = "correct horse battery"
# /metrics answers only with its bearer token (issue 12, finding 16); test servers set this one.
METRICS_TOKEN = "test-metrics-token-0123456789"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any = None

    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


@dataclass
class ApiClient:
    base_url: str
    session: aiohttp.ClientSession
    token: str | None = None
    user_id: str | None = None
    device_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method: str, path: str, json: Any = None, data: Any = None,
                   params: Any = None, headers: dict[str, str] | None = None) -> Reply:
        hdrs = {**self.headers, **(headers or {})}
        async with self.session.request(method, self.base_url + path, json=json, data=data,
                                        params=params, headers=hdrs) as resp:
            raw = await resp.read()
            # JSON only when the server says so: a downloaded file whose bytes happen to parse
            # (b"7", b"[]") stays bytes.
            body: Any = raw or None
            if raw and (resp.content_type == "application/json"
                        or resp.content_type.endswith("+json")):
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = raw
            return Reply(resp.status, body, resp.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)

    async def mkdir(self, path: str) -> dict[str, Any]:
        r = await self.post("/api/folders", {"path": path})
        assert r.status == 201, r
        return r.body

    async def listdir(self, path: str = "/") -> list[str]:
        r = await self.get("/api/files", params={"path": path})
        assert r.status == 200, r
        return [e["name"] for e in r.body["entries"]]


@dataclass
class RunningServer:
    config: Config
    app: web.Application
    runner: web.AppRunner
    port: int
    _sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    _stopped: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop the server, after checking the invariants no single test looks at
        (:mod:`driveserver.meta.integrity`): whatever state a test reached must keep them. A
        second call (a test that stopped its server, then the fixture) does nothing."""
        if self._stopped:
            return
        self._stopped = True
        for s in self._sessions:
            await s.close()
        try:
            misplaced = await misplaced_items(self.app[appkeys.DB])
        finally:
            await self.runner.cleanup()
        assert not misplaced, misplaced

    def anonymous(self) -> ApiClient:
        s = aiohttp.ClientSession()
        self._sessions.append(s)
        return ApiClient(self.url, s)

    async def register(self, email: str, password: str = PASSWORD) -> None:
        r = await self.anonymous().post("/api/auth/register", {"email": email,
                                                               "password": password})
        assert r.status == 201, r

    async def login(self, email: str, password: str = PASSWORD,
                    device: str | None = None) -> ApiClient:
        client = self.anonymous()
        body: dict[str, Any] = {"email": email, "password": password}
        if device:
            body["device_name"] = device
        r = await client.post("/api/auth/login", body)
        assert r.status == 200, r
        client.token, client.user_id = r.body["token"], r.body["user_id"]
        client.device_id = r.body["device_id"]
        return client

    @asynccontextmanager
    async def user(self, email: str, device: str | None = None) -> AsyncIterator[ApiClient]:
        await self.register(email)
        yield await self.login(email, device=device)


async def start_server(data_dir: Path, **overrides: Any) -> RunningServer:
    # Registration is closed on a fresh install; these servers open it (tests register users
    # through the API) unless a test says otherwise.
    overrides.setdefault("registration_open", True)
    # Passwords hashed with scrypt N = 2**10, not the default 2**14: the same code at a sixteenth
    # of the work. Registering and signing in took a third of the API tests' time at 2**14;
    # tests/test_password_cost.py checks the default cost on a server that keeps it.
    overrides.setdefault("password_hash_cost", 10)
    # Every test client is 127.0.0.1, and some open a thousand long polls at once: no cap per
    # client unless a test sets one (tests/test_hardening_connections.py does).
    overrides.setdefault("max_connections_per_client", 0)
    overrides.setdefault("metrics_token", METRICS_TOKEN)
    config = load_config(None, env={}, overrides={"data_dir": data_dir, "port": 0, **overrides})
    app = build_app(config)
    runner, port = await start_site(app, "127.0.0.1", 0)
    return RunningServer(config, app, runner, port)


async def wait_for(predicate: Callable[[], Awaitable[bool] | bool], within: float = 10.0,
                   interval: float = 0.02, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def upload(client: ApiClient, path: str, data: bytes, **init: Any) -> dict[str, Any]:
    """The 3-step upload: upload-init, stream the body to upload_url, complete."""
    r = await client.post("/api/files/upload-init", {"path": path, "size": len(data), **init})
    assert r.status == 200, r
    file_id, url = r.body["file_id"], r.body["upload_url"]
    async with client.session.post(url, data=data) as resp:
        assert resp.status == 200, await resp.text()
        blocks = (await resp.json())["blocks"]
    base = {"base_version": init["base_version"]} if "base_version" in init else {}
    r = await client.post(f"/api/files/{file_id}/complete", {"blocks": blocks, **base})
    assert r.status == 200, r
    return r.body


async def download_blocks(client: ApiClient, file_id: str, version: int | None = None) -> bytes:
    """Fetch a version block by block through the signed block URLs, verifying each hash."""
    from driveproto.blocks import block_hash
    from driveproto.wire import decompress_from_wire

    params = {"version": str(version)} if version is not None else None
    r = await client.get(f"/api/files/{file_id}/download", params=params)
    assert r.status == 200, r
    out = bytearray()
    for b in r.body["blocks"]:
        async with client.session.get(b["url"]) as resp:
            assert resp.status == 200, await resp.text()
            data = decompress_from_wire(resp.headers["X-Block-Encoding"], await resp.read())
        assert block_hash(data) == b["hash"] and len(data) == b["size"]
        out += data
    assert len(out) == r.body["size"]
    return bytes(out)


async def content(client: ApiClient, file_id: str, **kw: Any) -> Reply:
    return await client.get(f"/api/files/{file_id}/content", **kw)


class HealthzProbe:
    """Another client asking ``GET /healthz`` again and again, from a thread of its own, and
    timing every answer: what the hardening tests use to show a heavy request stalls nobody. (The server runs on the test's event loop: a poller on that loop would
    stall with it and notice nothing.)"""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.times: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-poller", daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                self.times.append(time.monotonic() - start)
                if resp.status != 200:
                    self.errors.append(f"status {resp.status}")
                self._stop.wait(0.01)  # a poll interval; the answers are what is measured
        except Exception as exc:  # reported by the test, not as a stray thread exception
            self.errors.append(repr(exc))
        finally:
            conn.close()

    async def __aenter__(self) -> HealthzProbe:
        self._thread.start()
        await wait_for(lambda: bool(self.times or self.errors), what="a first /healthz answer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        seen = len(self.times)
        # At least one answer that was asked for after the last request under test.
        await wait_for(lambda: len(self.times) > seen + 1 or bool(self.errors),
                       what="a last /healthz answer")
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)

    @property
    def slowest(self) -> float:
        return max(self.times, default=0.0)

    def check(self, within: float = 1.0) -> None:
        assert not self.errors, self.errors
        assert len(self.times) >= 3, self.times
        assert max(self.times) < within, f"/healthz took {max(self.times):.2f} s"


def count_inflated(monkeypatch: Any) -> list[int]:
    """Count what the batch parser inflates: the decoded size of every frame it decodes is
    appended to the returned list (the decompression-bomb tests assert on its sum)."""
    from driveproto import frames

    decoded: list[int] = []
    real = frames.decompress_from_wire

    def counting(*args: Any, **kwargs: Any) -> bytes:
        out = real(*args, **kwargs)
        decoded.append(len(out))
        return out
    monkeypatch.setattr(frames, "decompress_from_wire", counting)
    return decoded
