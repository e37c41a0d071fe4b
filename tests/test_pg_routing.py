"""Any request on any process (issue 18, "stateless request routing"): two servers over one
PostgreSQL database, one block store and one set of secrets, as several processes behind a proxy
would be. A client whose requests a proxy spreads over them must not notice: an upload begun on
one finishes on the other, block by block; a session, a browser cookie with its CSRF token and
a device's place in the change feed made on one work on the other."""

from __future__ import annotations

import os

from driveproto.blocks import block_hash
from driveproto.chunking import split_bytes
from tests.helpers import PASSWORD, ApiClient, RunningServer, download_blocks, upload
from tests.test_pg_concurrency import two_servers  # noqa: F401  (the fixture)

MiB = 1024 * 1024


def on(server: RunningServer, client: ApiClient) -> ApiClient:
    """The same client (its token), talking to another process."""
    return ApiClient(server.url, client.session, client.token, client.user_id)


async def test_an_upload_begun_on_one_process_finishes_on_the_other(
        two_servers: tuple[RunningServer, RunningServer]) -> None:  # noqa: F811
    a, b = two_servers
    await a.register("mover@example.com")
    client_a = await a.login("mover@example.com", device="laptop")
    client_b = on(b, client_a)
    data = os.urandom(5 * MiB)
    chunks = split_bytes(data)
    assert len(chunks) >= 3
    r = await client_a.post("/api/files/upload-init", {"path": "/moved.bin", "size": len(data)})
    assert r.status == 200, r
    grant = r.body
    receipts = []
    for i, chunk in enumerate(chunks):  # the blocks alternate between the processes
        base = (a if i % 2 == 0 else b).url
        url = grant["block_url"].replace(a.url, base, 1).replace("{hash}", block_hash(chunk))
        async with client_a.session.put(url, data=chunk) as resp:
            assert resp.status == 200, await resp.text()
            receipts.append(await resp.json())
    done = await client_b.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
    assert done.status == 200, done
    assert await download_blocks(client_a, grant["file_id"]) == data
    assert await download_blocks(client_b, grant["file_id"]) == data


async def test_sessions_cookies_and_feed_cursors_work_on_either_process(
        two_servers: tuple[RunningServer, RunningServer]) -> None:  # noqa: F811
    a, b = two_servers
    await a.register("roamer@example.com")
    laptop_a = await a.login("roamer@example.com", device="laptop")
    phone_a = await a.login("roamer@example.com", device="phone")
    phone_b = on(b, phone_a)
    r = await phone_a.get("/api/sync/cursor")  # the phone's place, taken on A ...
    assert r.status == 200, r
    await upload(laptop_a, "/note.txt", b"written through process A")
    r = await phone_b.get("/api/sync/changes", params={"cursor": r.body["cursor"],
                                                      "timeout": "5"})  # ... read on B
    assert r.status == 200 and [c["path"] for c in r.body["changes"]] == ["/note.txt"], r
    # A browser signs in on A and works on B: the cookie and its CSRF token verify there.
    async with a.anonymous().session.post(
            f"{a.url}/api/auth/login", json={"email": "roamer@example.com",
                                             "password": PASSWORD, "cookie": True}) as resp:
        assert resp.status == 200
        cookie, csrf = resp.cookies["drive_session"].value, (await resp.json())["csrf_token"]
    browser_b = b.anonymous()
    headers = {"Cookie": f"drive_session={cookie}", "X-CSRF-Token": csrf}
    async with browser_b.session.post(f"{b.url}/api/folders", json={"path": "/From B"},
                                      headers=headers) as resp:
        assert resp.status == 201, await resp.text()
    async with browser_b.session.post(f"{b.url}/api/folders", json={"path": "/No CSRF"},
                                      headers={"Cookie": f"drive_session={cookie}"}) as resp:
        assert resp.status == 403, await resp.text()
    # Signing out on B ends the token on A too.
    assert (await phone_b.post("/api/auth/logout")).status == 204
    assert (await phone_a.get("/api/files", params={"path": "/"})).status == 401
    assert (await laptop_a.get("/api/files", params={"path": "/"})).status == 200
