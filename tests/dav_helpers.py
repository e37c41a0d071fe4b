"""Helpers for the WebDAV tests: an account with an app password, and a thin Basic-auth
client for ``/dav/`` on the real server."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.helpers import ApiClient, RunningServer

DAV_NS = "{DAV:}"


@dataclass
class DavReply:
    status: int
    body: bytes
    headers: Any

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)

    def hrefs(self) -> list[str]:
        return [e.text or "" for e in self.xml().iter(f"{DAV_NS}href")
                if not (e.text or "").startswith("opaquelocktoken:")]


@dataclass
class DavClient:
    base_url: str
    email: str
    password: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: bytes | str | None = None,
                   headers: dict[str, str] | None = None) -> DavReply:
        data = body.encode() if isinstance(body, str) else body
        token = base64.b64encode(f"{self.email}:{self.password}".encode()).decode()
        hdrs = {"Authorization": f"Basic {token}", **(headers or {})}
        async with self.session.request(method, self.base_url + path, data=data,
                                        headers=hdrs) as resp:
            return DavReply(resp.status, await resp.read(), resp.headers)

    async def propfind(self, path: str, depth: str = "1", body: str | None = None) -> DavReply:
        return await self.call("PROPFIND", path, body, {"Depth": depth})


async def app_password(client: ApiClient, name: str = "tests") -> dict[str, Any]:
    r = await client.post("/api/app-passwords", {"name": name})
    assert r.status == 201, r
    return r.body


async def dav_user(server: RunningServer, email: str = "alice@example.com",
                   register: bool = True) -> tuple[ApiClient, DavClient]:
    """A logged-in API client of ``email`` and a WebDAV client with a new app password."""
    if register:
        await server.register(email)
    api = await server.login(email, device=f"{email}-laptop")
    made = await app_password(api)
    return api, DavClient(server.url, email, made["password"], api.session)
