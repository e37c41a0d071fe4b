"""Notifications for people: produced from the journal when someone else changes a file a user
owns or can see; listed newest first; marked read.

The tests share through the API, then make another user's change through the same tree code
the routes use (``app[TREE]``), with that user as the actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driveserver import appkeys
from driveserver.meta import accounts
from driveserver.meta.journal import Actor
from driveserver.sync.routes import NOTIFIER
from tests.helpers import ApiClient, RunningServer, start_server, wait_for


async def share(server: RunningServer, file_id: str, grantee: ApiClient, owner: ApiClient,
                permission: str = "edit") -> None:
    """Share through the API; the "shared with you" note is checked in its own test, so it is
    removed here to keep the counts below about the journal's notifications."""
    db = server.app[appkeys.DB]
    email = await db.fetchval("SELECT email FROM users WHERE id = ?", (grantee.user_id,))
    r = await owner.post(f"/api/files/{file_id}/share", {"user_email": email,
                                                         "permission": permission})
    assert r.status == 201, r
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM notifications WHERE action = 'shared'")


async def act_in(server: RunningServer, owner: ApiClient, actor: ApiClient, op: str,
                 *args: Any) -> Any:
    """Change ``owner``'s tree as ``actor`` through the tree operations the routes use."""
    db, tree = server.app[appkeys.DB], server.app[appkeys.TREE]
    who = Actor(actor.user_id or "", actor.device_id)
    async with db.transaction() as tx:
        root = await accounts.root_of(tx, owner.user_id or "")
        if op == "mkdir":
            return await tree.create_folder(tx, root, list(args[0]), who)
        file = await tx.fetchone("SELECT * FROM files WHERE id = ?", (args[0],))
        assert file is not None
        if op == "move":
            return await tree.move(tx, file, root, list(args[1]), who)
        if op == "delete":
            return await tree.trash(tx, file, who)
    raise AssertionError(op)


async def notes(client: ApiClient, **params: str) -> dict[str, Any]:
    r = await client.get("/api/notifications", params=params)
    assert r.status == 200, r
    return r.body


async def wait_notes(client: ApiClient, count: int) -> list[dict[str, Any]]:
    async def enough() -> bool:
        return len((await notes(client))["notifications"]) >= count
    await wait_for(enough, what=f"{count} notification(s)")
    return (await notes(client))["notifications"]


async def test_owner_hears_what_a_grantee_did_and_the_grantee_hears_the_owner(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    shared = await alice.mkdir("/Team/Shared")
    await alice.mkdir("/Private")
    await share(server, shared["file_id"], bob, alice)
    made = await act_in(server, alice, bob, "mkdir", ["Team", "Shared", "from-bob"])
    [note] = await wait_notes(alice, 1)
    assert note["action"] == "added" and note["path"] == "/Team/Shared/from-bob"
    assert note["file_id"] == made["id"] and note["is_directory"] is True
    assert note["actor"] == {"user_id": bob.user_id, "email": "bob@example.com"}
    assert note["read"] is False and note["count"] == 1
    # Alice deletes it: Bob hears, with the path as he sees it (from the shared folder down).
    assert (await alice.delete(f"/api/files/{made['id']}")).status == 204
    [deleted] = await wait_notes(bob, 1)
    assert deleted["action"] == "deleted" and deleted["path"] == "/Shared with me/Shared/from-bob"
    assert deleted["actor"]["email"] == "alice@example.com"
    # Nobody hears of their own changes, or of changes outside what they can see.
    await alice.mkdir("/Private/more")
    await server.app[NOTIFIER].process(alice_workspace := made["workspace_id"])
    assert len((await notes(bob))["notifications"]) == 1
    assert len((await notes(alice))["notifications"]) == 1
    # Processing again is a no-op: the mark moved past these entries.
    assert await server.app[NOTIFIER].process(alice_workspace) == 0


async def test_repeats_fold_into_one_newest_first_and_paging(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    shared = await alice.mkdir("/S")
    await share(server, shared["file_id"], bob, alice)
    a = await act_in(server, alice, bob, "mkdir", ["S", "a"])
    await act_in(server, alice, bob, "move", a["id"], ["S", "a2"])
    await act_in(server, alice, bob, "move", a["id"], ["S", "a3"])
    b = await act_in(server, alice, bob, "mkdir", ["S", "b"])
    await act_in(server, alice, bob, "delete", b["id"])

    async def settled() -> bool:
        body = await notes(alice)
        return [n["action"] for n in body["notifications"]] == ["deleted", "added", "moved",
                                                                 "added"]
    await wait_for(settled, what="four notifications")
    body = await notes(alice)
    moved = body["notifications"][2]
    assert moved["count"] == 2 and moved["path"] == "/S/a3" and body["unread_count"] == 4
    ids = [n["id"] for n in body["notifications"]]
    assert ids == sorted(ids, reverse=True)
    first = await notes(alice, limit="3")
    assert first["has_more"] is True and len(first["notifications"]) == 3
    rest = await notes(alice, limit="3", before=str(first["next_before"]))
    assert [n["id"] for n in first["notifications"] + rest["notifications"]] == ids
    assert rest["has_more"] is False


async def test_mark_read_by_ids_or_all(server: RunningServer, alice: ApiClient,
                                       bob: ApiClient) -> None:
    shared = await alice.mkdir("/S")
    await share(server, shared["file_id"], bob, alice)
    for name in ("x", "y", "z"):
        await act_in(server, alice, bob, "mkdir", ["S", name])
    listed = await wait_notes(alice, 3)
    newest = listed[0]["id"]
    # Bob cannot mark Alice's notifications.
    r = await bob.post("/api/notifications/read", {"ids": [newest]})
    assert r.status == 200 and r.body["marked"] == 0
    r = await alice.post("/api/notifications/read", {"ids": [newest, 999999]})
    assert r.status == 200 and r.body == {"marked": 1, "unread_count": 2}
    unread = await notes(alice, unread="true")
    assert [n["id"] for n in unread["notifications"]] == [n["id"] for n in listed[1:]]
    read = (await notes(alice))["notifications"][0]
    assert read["read"] is True and read["read_at"] is not None
    r = await alice.post("/api/notifications/read", {"all": True})
    assert r.body == {"marked": 2, "unread_count": 0}
    assert (await notes(alice, unread="1"))["notifications"] == []


@pytest.mark.parametrize("body, code", [
    ({}, "missing_field"),
    ({"all": False}, "missing_field"),
    ({"all": True, "ids": [1]}, "missing_field"),
    ({"ids": "1"}, "invalid_field"),
    ({"ids": [1.5]}, "invalid_field"),
    ({"ids": [True]}, "invalid_field"),
    ({"ids": [2**70]}, "invalid_field"),
    ({"ids": list(range(1001))}, "invalid_field"),
    ({"all": "yes"}, "invalid_field"),
])
async def test_bad_read_requests_are_400(alice: ApiClient, body: Any, code: str) -> None:
    r = await alice.post("/api/notifications/read", body)
    assert r.status == 400 and r.error_code() == code, r


@pytest.mark.parametrize("params", [{"limit": "x"}, {"before": "y"}, {"unread": "maybe"}])
async def test_bad_list_requests_are_400(alice: ApiClient, params: dict[str, str]) -> None:
    r = await alice.get("/api/notifications", params=params)
    assert r.status == 400 and r.error_code() == "invalid_query", r


async def test_notifications_need_a_token(server: RunningServer) -> None:
    assert (await server.anonymous().get("/api/notifications")).status == 401


async def test_marks_survive_a_restart_without_duplicates(tmp_path: Path,
        database: dict[str, Any]) -> None:
    srv = await start_server(tmp_path / "data", **database)
    try:
        await srv.register("alice@example.com")
        await srv.register("bob@example.com")
        alice = await srv.login("alice@example.com", device="a")
        bob = await srv.login("bob@example.com", device="b")
        shared = await alice.mkdir("/S")
        await share(srv, shared["file_id"], bob, alice)
        await act_in(srv, alice, bob, "mkdir", ["S", "one"])
        await wait_notes(alice, 1)
        await alice.mkdir("/unshared-change")  # read by the notifier, produces nothing
        workspace = await srv.app[appkeys.DB].fetchval(
            "SELECT workspace_id FROM files WHERE id = ?", (shared["file_id"],))
        await srv.app[NOTIFIER].process(workspace)
    finally:
        await srv.stop()
    srv = await start_server(tmp_path / "data", **database)
    try:
        alice = ApiClient(srv.url, srv.anonymous().session, token=alice.token)
        assert await srv.app[NOTIFIER].process(workspace) == 0
        stored = await srv.app[appkeys.DB].fetchval(
            "SELECT seq FROM notify_marks WHERE workspace_id = ?", (workspace,))
        assert stored == await srv.app[appkeys.DB].fetchval(
            "SELECT seq FROM workspaces WHERE id = ?", (workspace,))
        assert len((await notes(alice))["notifications"]) == 1
    finally:
        await srv.stop()


async def test_sharing_notifies_the_recipient(server: RunningServer, alice: ApiClient,
                                              bob: ApiClient) -> None:
    folder = await alice.mkdir("/Thesis")
    r = await alice.post(f"/api/files/{folder['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "view"})
    assert r.status == 201
    [note] = await wait_notes(bob, 1)
    assert note["action"] == "shared" and note["path"] == "/Shared with me/Thesis"
    assert note["actor"]["email"] == "alice@example.com"
