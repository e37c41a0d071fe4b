"""Sharing folders with people: the API, what each role may do, quota, and the change feed of
the recipient (the shared folder appears under /Shared with me, follows edits, and leaves on
revoke)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from driveproto.blocks import block_hash
from driveserver import appkeys
from tests.helpers import ApiClient, RunningServer, content, upload, wait_for


async def share(owner: ApiClient, file_id: str, email: str, permission: str = "edit") -> str:
    r = await owner.post(f"/api/files/{file_id}/share", {"user_email": email,
                                                         "permission": permission})
    assert r.status == 201, r
    return r.body["share_id"]


async def changes(client: ApiClient, cursor: str, wait: str = "0") -> dict[str, Any]:
    r = await client.get("/api/sync/changes", params={"cursor": cursor, "timeout": wait})
    assert r.status == 200, r
    return r.body


async def drain(client: ApiClient, cursor: str) -> tuple[list[tuple[str, str]], str]:
    """All changes after ``cursor`` as (action, path), and the cursor after them."""
    out: list[tuple[str, str]] = []
    while True:
        body = await changes(client, cursor)
        out += [(c["action"], c["path"]) for c in body["changes"]]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return out, cursor


async def cursor_of(client: ApiClient) -> str:
    return (await client.get("/api/sync/cursor")).body["cursor"]


async def test_share_list_and_shared_with_me(alice: ApiClient, bob: ApiClient) -> None:
    proj = await alice.mkdir("/Work/Proj")
    share_id = await share(alice, proj["file_id"], "bob@example.com", "view")
    r = await alice.get(f"/api/files/{proj['file_id']}/shares")
    assert [(s["email"], s["permission"]) for s in r.body["shares"]] == [
        ("bob@example.com", "view")]
    r = await bob.get("/api/shared-with-me")
    assert [(s["name"], s["path"], s["permission"], s["owner"]["email"])
            for s in r.body["shares"]] == [("Proj", "/Shared with me/Proj", "view",
                                           "alice@example.com")]
    assert r.body["shares"][0]["share_id"] == share_id
    assert await bob.listdir("/") == ["Shared with me"]
    assert await bob.listdir("/Shared with me") == ["Proj"]
    # The same name shared by two owners gets two mount names.
    async with _third(alice) as carol:
        other = await carol.mkdir("/Proj")
        await share(carol, other["file_id"], "bob@example.com")
    assert await bob.listdir("/Shared with me") == ["Proj", "Proj (2)"]


class _third:
    """A third user on the same server, as an async context manager."""

    def __init__(self, like: ApiClient) -> None:
        self.like = like

    async def __aenter__(self) -> ApiClient:
        import aiohttp

        from tests.helpers import PASSWORD
        self.session = aiohttp.ClientSession()
        anon = ApiClient(self.like.base_url, self.session)
        await anon.post("/api/auth/register", {"email": "carol@example.com",
                                               "password": PASSWORD})
        r = await anon.post("/api/auth/login", {"email": "carol@example.com",
                                                "password": PASSWORD})
        anon.token, anon.user_id = r.body["token"], r.body["user_id"]
        return anon

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()


@pytest.mark.parametrize("body, status, code", [
    ({"user_email": "nobody@example.com", "permission": "edit"}, 404, "unknown_user"),
    ({"user_email": "alice@example.com", "permission": "edit"}, 400, "invalid_share"),
    ({"user_email": "bob@example.com", "permission": "admin"}, 400, "invalid_field"),
    ({"user_email": "bob@example.com"}, 400, "missing_field"),
])
async def test_share_bad_input(alice: ApiClient, bob: ApiClient, body, status, code) -> None:
    folder = await alice.mkdir("/F")
    r = await alice.post(f"/api/files/{folder['file_id']}/share", body)
    assert (r.status, r.error_code()) == (status, code)


async def test_share_rules(alice: ApiClient, bob: ApiClient) -> None:
    outer = await alice.mkdir("/Outer/Inner")
    outer_id = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]["file_id"]
    f = await upload(alice, "/file.txt", b"a file")
    r = await alice.post(f"/api/files/{f['file_id']}/share", {"user_email": "bob@example.com",
                                                              "permission": "view"})
    assert r.status == 400 and r.error_code() == "not_a_folder"
    await share(alice, outer["file_id"], "bob@example.com")
    r = await alice.post(f"/api/files/{outer_id}/share", {"user_email": "bob@example.com",
                                                          "permission": "view"})
    assert r.status == 409 and r.error_code() == "nested_share"
    r = await alice.post(f"/api/files/{outer['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "view"})
    assert r.status == 409 and r.error_code() == "exists"
    # Bob (an editor) may not re-share, nor see the share list; a stranger gets 404.
    r = await bob.post(f"/api/files/{outer['file_id']}/share",
                       {"user_email": "alice@example.com", "permission": "view"})
    assert r.status == 403
    assert (await bob.get(f"/api/files/{outer['file_id']}/shares")).status == 403
    # Nobody can create "/Shared with me" in their own drive.
    r = await alice.post("/api/folders", {"path": "/Shared with me"})
    assert r.status == 409 and r.error_code() == "reserved_name"


async def test_editor_and_viewer_rights(server: RunningServer, alice: ApiClient,
                                        bob: ApiClient) -> None:
    proj = await alice.mkdir("/Proj")
    doc = await upload(alice, "/Proj/doc.txt", b"alice wrote this")
    share_id = await share(alice, proj["file_id"], "bob@example.com", "edit")
    # Editor: read, new versions, new files, folders, moves within, delete (into Alice's trash).
    assert (await content(bob, doc["file_id"])).body == b"alice wrote this"
    v2 = await upload(bob, "/Shared with me/Proj/doc.txt", b"bob edited this")
    assert v2["version"] == 2 and v2["file_id"] == doc["file_id"]
    assert (await content(alice, doc["file_id"])).body == b"bob edited this"
    versions = (await alice.get(f"/api/files/{doc['file_id']}/versions")).body["versions"]
    assert versions[0]["modified_by"] == "bob@example.com"
    new = await upload(bob, "/Shared with me/Proj/from-bob.txt", b"x" * 1000)
    assert sorted(await alice.listdir("/Proj")) == ["doc.txt", "from-bob.txt"]
    await bob.mkdir("/Shared with me/Proj/sub")
    r = await bob.patch(f"/api/files/{new['file_id']}", {"path": "/Shared with me/Proj/sub/b.txt"})
    assert r.status == 200 and r.body["path"] == "/Shared with me/Proj/sub/b.txt"
    meta = (await alice.get(f"/api/files/{new['file_id']}")).body
    assert meta["path"] == "/Proj/sub/b.txt"
    # Bytes in the shared folder count against the owner.
    assert (await alice.get("/api/quota")).body["used"] == len(b"bob edited this") + 1000
    assert (await bob.get("/api/quota")).body["used"] == 0
    assert (await bob.delete(f"/api/files/{new['file_id']}")).status == 204
    assert [e["name"] for e in (await alice.get("/api/trash")).body["entries"]] == ["b.txt"]
    # The mount itself cannot be moved by the recipient.
    r = await bob.patch(f"/api/files/{proj['file_id']}", {"path": "/Mine"})
    assert r.status == 400
    # Viewer: read only.
    r = await alice.patch(f"/api/shares/{share_id}", {"permission": "view"})
    assert r.status == 200
    assert (await content(bob, doc["file_id"])).status == 200
    r = await bob.post("/api/files/upload-init", {"file_id": doc["file_id"], "size": 3})
    assert r.status == 403
    r = await bob.post("/api/files/upload-init", {"path": "/Shared with me/Proj/n.txt",
                                                  "size": 3})
    assert r.status == 403
    assert (await bob.post("/api/folders", {"path": "/Shared with me/Proj/x"})).status == 403
    assert (await bob.delete(f"/api/files/{doc['file_id']}")).status == 403
    # Revoked: nothing left to see.
    assert (await alice.delete(f"/api/shares/{share_id}")).status == 204
    assert (await bob.get(f"/api/files/{doc['file_id']}")).status == 404
    assert (await bob.get("/api/files", params={"path": "/Shared with me/Proj"})).status == 404
    assert await bob.listdir("/") == []
    assert (await bob.delete(f"/api/shares/{share_id}")).status == 404


async def test_recipient_feed_follows_share_edits_and_revoke(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    bob_cursor = await cursor_of(bob)
    await upload(alice, "/Proj/a.txt", b"first")
    proj = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    alice_cursor = await cursor_of(alice)
    share_id = await share(alice, proj["file_id"], "bob@example.com")
    seen, bob_cursor = await drain(bob, bob_cursor)
    assert seen == [("create", "/Shared with me"), ("create", "/Shared with me/Proj"),
                    ("create", "/Shared with me/Proj/a.txt")]
    # Alice edits: Bob's waiting poll wakes with the change at his path.
    waiting = asyncio.ensure_future(changes(bob, bob_cursor, wait="10"))
    await wait_for(lambda: server.app[appkeys.HUB].waiter_count() == 1, what="the poll waits")
    t0 = time.monotonic()
    await upload(alice, "/Proj/a.txt", b"second")
    body = await asyncio.wait_for(waiting, 10)
    assert time.monotonic() - t0 < 5
    assert [(c["action"], c["path"]) for c in body["changes"]] == [
        ("modify", "/Shared with me/Proj/a.txt")]
    bob_cursor = body["next_cursor"]
    # Bob edits: Alice sees it at her path.
    await upload(bob, "/Shared with me/Proj/b.txt", b"from bob")
    seen, alice_cursor = await drain(alice, alice_cursor)
    assert ("create", "/Proj/b.txt") in seen
    # Revoke: Bob is told to remove the folder.
    await drain(bob, bob_cursor)
    _, bob_cursor = await drain(bob, bob_cursor)
    assert (await alice.delete(f"/api/shares/{share_id}")).status == 204
    seen, bob_cursor = await drain(bob, bob_cursor)
    assert seen == [("delete", "/Shared with me/Proj")]


async def test_a_share_wakes_the_recipients_waiting_poll(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    folder = await alice.mkdir("/Live")
    waiting = asyncio.ensure_future(changes(bob, await cursor_of(bob), wait="20"))
    await wait_for(lambda: server.app[appkeys.HUB].waiter_count() == 1, what="the poll waits")
    t0 = time.monotonic()
    await share(alice, folder["file_id"], "bob@example.com")
    body = await asyncio.wait_for(waiting, 20)
    assert time.monotonic() - t0 < 5
    assert ("create", "/Shared with me/Live") in [(c["action"], c["path"])
                                                  for c in body["changes"]]


async def test_snapshot_of_recipient_lists_the_share_under_its_mount(alice: ApiClient,
                                                                     bob: ApiClient) -> None:
    await upload(alice, "/Team/x/y.txt", b"y")
    team = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    await share(alice, team["file_id"], "bob@example.com", "view")
    await upload(bob, "/own.txt", b"bob's own")
    seen, _ = await drain(bob, "0")
    assert sorted(p for _, p in seen) == sorted([
        "/Shared with me", "/Shared with me/Team", "/Shared with me/Team/x",
        "/Shared with me/Team/x/y.txt", "/own.txt"])
    owner_seen, _ = await drain(alice, "0")
    assert sorted(p for _, p in owner_seen) == ["/Team", "/Team/x", "/Team/x/y.txt"]


async def test_moving_into_and_out_of_a_shared_folder(alice: ApiClient, bob: ApiClient) -> None:
    proj = await alice.mkdir("/Proj")
    await share(alice, proj["file_id"], "bob@example.com")
    bob_cursor = await cursor_of(bob)
    _, bob_cursor = await drain(bob, bob_cursor)
    doc = await upload(alice, "/private.txt", b"was private")
    r = await alice.patch(f"/api/files/{doc['file_id']}", {"path": "/Proj/now-shared.txt"})
    assert r.status == 200
    seen, bob_cursor = await drain(bob, bob_cursor)
    assert seen == [("create", "/Shared with me/Proj/now-shared.txt")]
    assert (await content(bob, doc["file_id"])).body == b"was private"
    r = await alice.patch(f"/api/files/{doc['file_id']}", {"path": "/private-again.txt"})
    assert r.status == 200
    seen, bob_cursor = await drain(bob, bob_cursor)
    assert seen == [("delete", "/Shared with me/Proj/now-shared.txt")]
    assert (await content(bob, doc["file_id"])).status == 404


async def test_review_fixes_editor_limits(server: RunningServer, alice: ApiClient,
                                          bob: ApiClient) -> None:
    """An editor cannot destroy the owner's data or take it out of the share."""
    proj = await alice.mkdir("/Proj")
    doc = await upload(alice, "/Proj/a.txt", b"alice's")
    await share(alice, proj["file_id"], "bob@example.com", "edit")
    assert (await bob.delete(f"/api/files/{proj['file_id']}")).status == 403
    r = await bob.patch(f"/api/files/{doc['file_id']}", {"path": "/stolen.txt"})
    assert r.status == 403
    assert (await bob.delete(f"/api/files/{doc['file_id']}")).status == 204
    assert (await bob.delete(f"/api/trash/{doc['file_id']}")).status == 403
    assert (await bob.post(f"/api/trash/{doc['file_id']}/restore")).status == 403
    assert (await alice.post(f"/api/trash/{doc['file_id']}/restore")).status == 200
    assert (await content(alice, doc["file_id"])).body == b"alice's"


async def test_trashing_a_shared_folder_ends_access(alice: ApiClient, bob: ApiClient) -> None:
    proj = await alice.mkdir("/Proj")
    doc = await upload(alice, "/Proj/a.txt", b"secret")
    await share(alice, proj["file_id"], "bob@example.com", "view")
    assert (await content(bob, doc["file_id"])).status == 200
    assert (await alice.delete(f"/api/files/{proj['file_id']}")).status == 204
    assert (await content(bob, doc["file_id"])).status == 404
    assert (await bob.get(f"/api/files/{doc['file_id']}")).status == 404


async def test_no_shared_folder_inside_another(alice: ApiClient, bob: ApiClient) -> None:
    x = await alice.mkdir("/Outer/X")
    y = await alice.mkdir("/Y")
    outer = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    await share(alice, x["file_id"], "bob@example.com")
    await share(alice, y["file_id"], "bob@example.com")
    r = await alice.patch(f"/api/files/{outer['file_id']}", {"path": "/Y/Outer"})
    assert r.status == 409 and r.error_code() == "nested_share"
    r = await alice.patch(f"/api/files/{x['file_id']}", {"path": "/Y/X"})
    assert r.status == 409 and r.error_code() == "nested_share"


async def test_a_block_below_a_shared_folder_is_known_to_its_recipient_only(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """Upload-init skips a block the user may already read: for a recipient, any version of a
    file below the shared folder (here two folders down), while the folder is not in its
    owner's trash; never for anyone else. (The look-up walks up from each file referencing the
    block, ``meta.access.block_sizes_below_live_shares``.)"""
    proj = await alice.mkdir("/Proj")
    await alice.mkdir("/Proj/deep")
    await alice.mkdir("/Proj/deep/er")
    data = b"the shared draft " * 500
    await upload(alice, "/Proj/deep/er/draft.txt", data)
    await upload(alice, "/elsewhere.txt", b"not shared " * 300)
    h, other = block_hash(data), block_hash(b"not shared " * 300)

    async def known(client: ApiClient, path: str) -> list[str]:
        r = await client.post("/api/files/upload-init", {
            "path": path, "size": len(data) + 3300,
            "blocks": [{"order": 0, "hash": h, "size": len(data)},
                       {"order": 1, "hash": other, "size": 3300}]})
        assert r.status == 200, r
        return r.body["blocks_already_exist"]

    assert await known(bob, "/mine.txt") == []
    await share(alice, proj["file_id"], "bob@example.com", "view")
    assert await known(bob, "/mine2.txt") == [h]  # the unshared file's block stays unknown
    async with server.user("carol@example.com") as carol:
        assert await known(carol, "/hers.txt") == []
    assert (await alice.delete(f"/api/files/{proj['file_id']}")).status == 204
    assert await known(bob, "/mine3.txt") == []
