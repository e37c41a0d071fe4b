"""Accounts, sessions, devices: register, login, logout, throttling, revocation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import PASSWORD, RunningServer, start_server


async def test_register_login_and_use_token(server: RunningServer) -> None:
    await server.register("carol@example.com")
    client = await server.login("carol@example.com", device="carol-desktop")
    assert client.device_id and client.user_id
    r = await client.get("/api/files", params={"path": "/"})
    assert r.status == 200 and r.body["entries"] == []


async def test_register_rejects_duplicate_email_in_any_case(server: RunningServer) -> None:
    await server.register("dave@example.com")
    r = await server.anonymous().post("/api/auth/register",
                                      {"email": "DAVE@Example.com", "password": PASSWORD})
    assert r.status == 409 and r.error_code() == "email_taken"


@pytest.mark.parametrize("body, code", [
    ({"email": "x@example.com"}, "missing_field"),
    ({"email": "x@example.com", "password": "short"}, "weak_password"),
    ({"email": "not-an-email", "password": PASSWORD}, "invalid_field"),
    ({"email": 5, "password": PASSWORD}, "invalid_field"),
    ({"email": "x@example.com", "password": "p" * 2000}, "invalid_field"),
])
async def test_register_bad_input(server: RunningServer, body: dict, code: str) -> None:
    r = await server.anonymous().post("/api/auth/register", body)
    assert r.status == 400 and r.error_code() == code


async def test_registration_can_be_closed(tmp_path, database: dict[str, Any]) -> None:
    srv = await start_server(tmp_path / "d", **database, registration_open=False)
    try:
        r = await srv.anonymous().post("/api/auth/register",
                                       {"email": "e@example.com", "password": PASSWORD})
        assert r.status == 403 and r.error_code() == "registration_closed"
    finally:
        await srv.stop()


async def test_wrong_password_and_unknown_user_look_the_same(server: RunningServer) -> None:
    await server.register("erin@example.com")
    anon = server.anonymous()
    r1 = await anon.post("/api/auth/login", {"email": "erin@example.com", "password": "nope nope"})
    r2 = await anon.post("/api/auth/login", {"email": "nobody@example.com",
                                             "password": "nope nope"})
    assert (r1.status, r1.error_code()) == (r2.status, r2.error_code()) == (401, "bad_credentials")


async def test_repeated_failed_logins_are_slowed_down(server: RunningServer) -> None:
    await server.register("frank@example.com")
    anon = server.anonymous()
    for _ in range(3):
        r = await anon.post("/api/auth/login", {"email": "frank@example.com",
                                                "password": "wrong password"})
        assert r.status == 401
    # Even the right password is refused while the back-off runs, so guessing gains nothing.
    r = await anon.post("/api/auth/login", {"email": "frank@example.com", "password": PASSWORD})
    assert r.status == 429 and r.error_code() == "too_many_requests"
    assert int(r.headers["Retry-After"]) >= 1


async def test_login_back_off_expires(server: RunningServer) -> None:
    from driveserver import appkeys

    throttle = server.app[appkeys.THROTTLE]
    await server.register("heidi@example.com")
    anon = server.anonymous()
    for _ in range(3):
        await anon.post("/api/auth/login", {"email": "heidi@example.com", "password": "wrong!!!"})
    r = await anon.post("/api/auth/login", {"email": "heidi@example.com", "password": PASSWORD})
    assert r.status == 429  # the default back-off (1 s) leaves room for a slow machine
    # The delay is computed when asked, from the last failure: shorten it to wait it out here.
    throttle.base = 0.05
    import asyncio
    await asyncio.sleep(0.06)  # the back-off itself is time-based: wait exactly that long
    r = await anon.post("/api/auth/login", {"email": "heidi@example.com", "password": PASSWORD})
    assert r.status == 200


async def test_logout_revokes_the_token(server: RunningServer) -> None:
    await server.register("ivan@example.com")
    c1 = await server.login("ivan@example.com")
    c2 = await server.login("ivan@example.com")
    assert (await c1.post("/api/auth/logout")).status == 204
    r = await c1.get("/api/files")
    assert r.status == 401 and r.error_code() == "unauthorized"
    assert (await c2.get("/api/files")).status == 200  # other sessions live on


async def test_password_change_revokes_every_session(server: RunningServer) -> None:
    await server.register("judy@example.com")
    c1 = await server.login("judy@example.com")
    c2 = await server.login("judy@example.com")
    r = await c1.post("/api/auth/password", {"old_password": "wrong one!", "new_password": "x" * 9})
    assert r.status == 403
    r = await c1.post("/api/auth/password", {"old_password": PASSWORD,
                                             "new_password": "new password 1"})
    assert r.status == 204
    assert (await c1.get("/api/files")).status == 401
    assert (await c2.get("/api/files")).status == 401
    assert (await server.login("judy@example.com", "new password 1")).token


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic abc",
                                    "Bearer eyJzaWQiOiJzX3gifQ.forged.signature"])
async def test_missing_or_forged_tokens_get_401(server: RunningServer, header) -> None:
    anon = server.anonymous()
    r = await anon.get("/api/files", headers={"Authorization": header} if header else None)
    assert r.status == 401 and r.error_code() == "unauthorized"


async def test_token_signed_by_another_server_is_refused(server: RunningServer, tmp_path) -> None:
    other = await start_server(tmp_path / "other")
    try:
        await other.register("kim@example.com")
        foreign = await other.login("kim@example.com")
    finally:
        await other.stop()
    r = await server.anonymous().get("/api/files",
                                     headers={"Authorization": f"Bearer {foreign.token}"})
    assert r.status == 401


async def test_login_with_device_name_reuses_device(server: RunningServer) -> None:
    await server.register("leo@example.com")
    a = await server.login("leo@example.com", device="desk")
    b = await server.login("leo@example.com", device="desk")
    c = await server.login("leo@example.com", device="phone")
    assert a.device_id == b.device_id != c.device_id
    r = await a.get("/api/devices")
    assert sorted(d["name"] for d in r.body["devices"]) == ["desk", "phone"]


async def test_device_register_list_and_remove(server: RunningServer) -> None:
    await server.register("mia@example.com")
    client = await server.login("mia@example.com")
    assert client.device_id is None
    r = await client.post("/api/sync/register", {"device_name": "tablet", "device_type": "ios"})
    assert r.status == 200
    tablet = r.body["device_id"]
    r = await client.post("/api/sync/register", {"device_id": tablet, "device_name": "iPad",
                                                 "device_type": "ios"})
    assert r.body["device_id"] == tablet
    r = await client.post("/api/sync/register", {"device_name": "x", "device_type": "toaster"})
    assert r.status == 400
    r = await client.post("/api/sync/register", {"device_type": "ios"})
    assert r.status == 400 and r.error_code() == "missing_field"
    on_device = await server.login("mia@example.com", device="iPad")
    assert on_device.device_id == tablet
    assert (await client.delete(f"/api/devices/{tablet}")).status == 204
    # The removed device's tokens stop working at once.
    assert (await on_device.get("/api/files")).status == 401
    assert (await client.delete(f"/api/devices/{tablet}")).status == 404


async def test_user_cannot_touch_another_users_device(server: RunningServer) -> None:
    await server.register("ned@example.com")
    await server.register("olga@example.com")
    ned = await server.login("ned@example.com", device="n1")
    olga = await server.login("olga@example.com")
    assert (await olga.delete(f"/api/devices/{ned.device_id}")).status == 404
    r = await olga.post("/api/sync/register", {"device_id": ned.device_id, "device_name": "x"})
    assert r.status == 404
