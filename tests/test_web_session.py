"""The browser's session (issue 14): an HttpOnly cookie bound to a ``web`` device, and CSRF.

Cookies are sent by hand (``Cookie:`` header) so that each test says exactly what the browser
would send; the real browser's behaviour is covered by the Playwright tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import PASSWORD, ApiClient, Reply, RunningServer, start_server


async def cookie_login(server: RunningServer, email: str = "alice@example.com",
                       **extra: Any) -> tuple[str, str, Reply]:
    """Sign in as a browser: returns (cookie value, csrf token, reply)."""
    async with server.anonymous().session.post(
            f"{server.url}/api/auth/login",
            json={"email": email, "password": PASSWORD, "cookie": True, **extra}) as r:
        body = await r.json()
        assert r.status == 200, body
        morsel = r.cookies["drive_session"]
        return morsel.value, body["csrf_token"], Reply(r.status, body, r.headers)


async def as_browser(server: RunningServer, method: str, path: str, cookie: str,
                     csrf: str | None = None, json: Any = None) -> Reply:
    headers = {"Cookie": f"drive_session={cookie}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    async with server.anonymous().session.request(method, server.url + path, json=json,
                                                  headers=headers) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return Reply(r.status, body, r.headers)


async def test_a_cookie_login_sets_an_httponly_lax_cookie_and_never_returns_the_token(
        server: RunningServer, alice: ApiClient) -> None:
    cookie, csrf, reply = await cookie_login(server)
    set_cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain http on 127.0.0.1
    assert "token" not in reply.body and csrf and cookie
    devices = (await alice.get("/api/devices")).body["devices"]
    web = [d for d in devices if d["device_id"] == reply.body["device_id"]]
    assert web and web[0]["type"] == "web" and web[0]["name"] == "Web browser"
    # A second sign-in gets a device of its own.
    _, _, again = await cookie_login(server)
    assert again.body["device_id"] != reply.body["device_id"]
    names = {d["name"] for d in (await alice.get("/api/devices")).body["devices"]}
    assert {"Web browser", "Web browser 2"} <= names


async def test_reads_work_by_cookie_and_the_session_route_gives_the_csrf_token(
        server: RunningServer, alice: ApiClient) -> None:
    cookie, csrf, reply = await cookie_login(server)
    listing = await as_browser(server, "GET", "/api/files?path=/", cookie)
    assert listing.status == 200, listing
    info = await as_browser(server, "GET", "/api/auth/session", cookie)
    assert info.status == 200 and info.body["email"] == "alice@example.com"
    assert info.body["device_id"] == reply.body["device_id"] and info.body["csrf_token"]
    # A bearer client gets no CSRF token: it needs none.
    assert "csrf_token" not in (await alice.get("/api/auth/session")).body


async def test_a_state_change_by_cookie_without_the_csrf_token_is_refused_and_does_nothing(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    cookie, csrf, _ = await cookie_login(server)
    _, bobs_csrf, _ = await cookie_login(server, "bob@example.com")
    for token in (None, "", "forged", bobs_csrf):
        r = await as_browser(server, "POST", "/api/folders", cookie, token, {"path": "/x"})
        assert r.status == 403 and r.body["error"]["code"] == "csrf_failed", (token, r)
    # ... at once too: many forged requests racing one good one.
    forged = [as_browser(server, "POST", "/api/folders", cookie, bobs_csrf,
                         {"path": f"/forged{i}"}) for i in range(50)]
    good = as_browser(server, "POST", "/api/folders", cookie, csrf, {"path": "/made"})
    *refused, made = await asyncio.gather(*forged, good)
    assert all(r.status == 403 for r in refused)
    assert made.status == 201, made
    assert await alice.listdir("/") == ["made"]
    # A bearer token needs no CSRF token.
    assert (await alice.post("/api/folders", {"path": "/by-bearer"})).status == 201


async def test_logout_by_cookie_clears_it_and_removes_the_web_device(
        server: RunningServer, alice: ApiClient) -> None:
    cookie, csrf, reply = await cookie_login(server)
    assert (await as_browser(server, "POST", "/api/auth/logout", cookie)).status == 403
    out = await as_browser(server, "POST", "/api/auth/logout", cookie, csrf)
    assert out.status == 204
    assert 'drive_session=""' in out.headers["Set-Cookie"] or "Max-Age=0" in out.headers[
        "Set-Cookie"]
    assert (await as_browser(server, "GET", "/api/files?path=/", cookie)).status == 401
    ids = {d["device_id"] for d in (await alice.get("/api/devices")).body["devices"]}
    assert reply.body["device_id"] not in ids


async def test_revoking_the_web_device_ends_the_browser_session(
        server: RunningServer, alice: ApiClient) -> None:
    cookie, _, reply = await cookie_login(server)
    assert (await alice.delete(f"/api/devices/{reply.body['device_id']}")).status == 204
    assert (await as_browser(server, "GET", "/api/files?path=/", cookie)).status == 401


async def test_the_cookie_is_secure_when_the_server_is_reached_over_https(
        tmp_path: Any, database: dict[str, Any]) -> None:
    server = await start_server(tmp_path / "data", **database,
                                public_url="https://drive.example.com")
    try:
        await server.register("alice@example.com")
        _, _, reply = await cookie_login(server)
        assert "Secure" in reply.headers["Set-Cookie"]
    finally:
        await server.stop()
