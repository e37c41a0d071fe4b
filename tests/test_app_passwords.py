"""App passwords (issue 16): made, listed and revoked over the API and the CLI, shown once,
stored hashed, each a device; HTTP Basic on /dav/ with them, and only with them unless the
admin allows the account password; wrong passwords throttled as logins are."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stdout
from pathlib import Path

import aiohttp
import pytest

from driveserver import appkeys
from driveserver.cli import main as server_main
from tests.dav_helpers import DavClient, app_password, dav_user
from tests.helpers import PASSWORD, RunningServer, start_server


async def test_made_once_listed_as_a_device_and_stored_hashed(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    assert (await dav.propfind("/dav/", "0")).status == 207
    listed = (await api.get("/api/app-passwords")).body["app_passwords"]
    assert [a["name"] for a in listed] == ["tests"]
    assert "password" not in listed[0]
    devices = (await api.get("/api/devices")).body["devices"]
    mine = [d for d in devices if d["device_id"] == listed[0]["device_id"]]
    assert mine and mine[0]["type"] == "app" and mine[0]["name"] == "tests"
    stored = await server.app[appkeys.DB].fetchval("SELECT password_hash FROM app_passwords")
    assert stored.startswith("scrypt$") and dav.password not in stored


async def test_revoking_the_password_or_its_device_ends_it(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    assert (await dav.propfind("/dav/", "0")).status == 207  # checked once, then cached
    listed = (await api.get("/api/app-passwords")).body["app_passwords"]
    assert (await api.delete(f"/api/app-passwords/{listed[0]['app_password_id']}")).status == 204
    gone = await dav.propfind("/dav/", "0")
    assert gone.status == 401 and gone.headers["WWW-Authenticate"].startswith(
        'Basic realm="drive"')
    assert (await api.get("/api/app-passwords")).body["app_passwords"] == []
    assert (await api.delete(f"/api/app-passwords/{listed[0]['app_password_id']}")).status == 404
    # The other way round: remove the device of a second one.
    second = await app_password(api, "phone")
    dav2 = DavClient(server.url, dav.email, second["password"], dav.session)
    assert (await dav2.propfind("/dav/", "0")).status == 207
    assert (await api.delete(f"/api/devices/{second['device_id']}")).status == 204
    assert (await dav2.propfind("/dav/", "0")).status == 401
    assert (await api.get("/api/app-passwords")).body["app_passwords"] == []


async def test_a_password_change_ends_app_passwords(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    assert (await dav.propfind("/dav/", "0")).status == 207
    r = await api.post("/api/auth/password", {"old_password": PASSWORD,
                                              "new_password": "another good password"})
    assert r.status == 204
    assert (await dav.propfind("/dav/", "0")).status == 401


async def test_another_users_password_or_id_gets_nothing(server: RunningServer) -> None:
    alice, dav = await dav_user(server)
    bob, _ = await dav_user(server, "bob@example.com")
    mine = (await alice.get("/api/app-passwords")).body["app_passwords"][0]
    assert (await bob.delete(f"/api/app-passwords/{mine['app_password_id']}")).status == 404
    as_bob = DavClient(server.url, "bob@example.com", dav.password, dav.session)
    assert (await as_bob.propfind("/dav/", "0")).status == 401


async def test_account_password_refused_unless_allowed(server: RunningServer,
                                                       tmp_path: Path) -> None:
    await server.register("alice@example.com")
    async with aiohttp.ClientSession() as s:
        plain = DavClient(server.url, "alice@example.com", PASSWORD, s)
        r = await plain.propfind("/dav/", "0")
        assert r.status == 401 and "WWW-Authenticate" in r.headers
        no_auth = await s.request("PROPFIND", server.url + "/dav/", headers={"Depth": "0"})
        assert no_auth.status == 401 and no_auth.headers["WWW-Authenticate"].startswith("Basic")
    allowing = await start_server(tmp_path / "open", dav_allow_account_password=True)
    try:
        await allowing.register("alice@example.com")
        async with aiohttp.ClientSession() as s:
            plain = DavClient(allowing.url, "alice@example.com", PASSWORD, s)
            assert (await plain.propfind("/dav/", "0")).status == 207
            wrong = DavClient(allowing.url, "alice@example.com", "not the password", s)
            assert (await wrong.propfind("/dav/", "0")).status == 401
    finally:
        await allowing.stop()


async def test_wrong_passwords_are_throttled(server: RunningServer) -> None:
    _, dav = await dav_user(server)
    wrong = DavClient(server.url, dav.email, "aaaaa-bbbbb-ccccc-ddddd-eeeee", dav.session)
    statuses = [(await wrong.propfind("/dav/", "0")).status for _ in range(6)]
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:], statuses
    throttled = await wrong.propfind("/dav/", "0")
    assert throttled.status == 429 and int(throttled.headers["Retry-After"]) >= 1


async def test_the_cli_creates_lists_and_revokes(server: RunningServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await server.register("alice@example.com")
    data = str(server.config.data_dir)
    if server.config.database_url:  # the server's database is PostgreSQL: so is the CLI's
        monkeypatch.setenv("DRIVE_DATABASE_URL", server.config.database_url)

    def in_thread(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                rc = server_main(["app-password", *argv, "--data-dir", data])
        except SystemExit as exc:  # what a shell sees as the exit status
            return 1, str(exc)
        return rc, out.getvalue()

    async def run(*argv: str) -> tuple[int, str]:  # the CLI runs its own event loop
        return await asyncio.to_thread(in_thread, *argv)

    rc, out = await run("create", "alice@example.com", "rclone")
    assert rc == 0
    password = out.splitlines()[1]
    async with aiohttp.ClientSession() as s:
        dav = DavClient(server.url, "alice@example.com", password, s)
        assert (await dav.propfind("/dav/", "0")).status == 207
        rc, out = await run("list", "alice@example.com")
        assert rc == 0 and "\trclone\t" in out
        app_id = out.split("\t")[0]
        assert (await run("revoke", "alice@example.com", app_id))[0] == 0
        assert (await dav.propfind("/dav/", "0")).status == 401
    assert await run("list", "alice@example.com") == (0, "")
    assert (await run("create", "nobody@example.com", "x"))[0] != 0


async def test_many_first_requests_at_once_share_one_check(server: RunningServer) -> None:
    """A client that opens with many parallel requests (rclone's transfers) is not throttled:
    simultaneous requests with the same new credentials wait on one password check."""
    _, dav = await dav_user(server)
    statuses = await asyncio.gather(*(dav.propfind("/dav/", "0") for _ in range(20)))
    assert [r.status for r in statuses] == [207] * 20
