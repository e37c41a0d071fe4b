"""Sharing end to end with real daemons' code (issue: sharing, acceptance 2): Alice shares a
folder with Bob (edit), Bob's device gets it; Bob's edit reaches Alice's device; after a
downgrade to view, Bob's next edit becomes a conflicted copy in his own space and Alice's file
is unchanged; after a revoke the folder leaves Bob's device and his unsynced edit survives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncclient.remote import Remote
from tests.helpers import RunningServer, start_server, upload
from tests.sync_helpers import EMAIL, make_devices


async def test_share_edit_downgrade_revoke_end_to_end(tmp_path: Path, capsys,
        database: dict[str, Any]) -> None:
    srv: RunningServer = await start_server(tmp_path / "data", **database)
    try:
        await srv.register(EMAIL)
        await srv.register("bob@example.com")
        alice_pc, bob_pc = make_devices(tmp_path, "alice-pc", "bob-pc")
        await alice_pc.init(srv)
        await bob_pc.init(srv, email="bob@example.com")
        alice_pc.write("Thesis/chapter1.txt", "alice's chapter one")
        alice_pc.write("Thesis/notes/todo.txt", "todo")
        await alice_pc.sync()
        assert await alice_pc.cli("share", "Thesis", "--with", "bob@example.com",
                                  "--permission", "edit") == 0

        # Bob's device downloads the shared folder.
        await bob_pc.sync()
        assert bob_pc.read("Shared with me/Thesis/chapter1.txt") == b"alice's chapter one"
        assert bob_pc.read("Shared with me/Thesis/notes/todo.txt") == b"todo"

        # Bob edits; Alice's device gets the change.
        bob_pc.write("Shared with me/Thesis/chapter1.txt", "bob's review of chapter one")
        await bob_pc.sync()
        await alice_pc.sync()
        assert alice_pc.read("Thesis/chapter1.txt") == b"bob's review of chapter one"

        # Alice downgrades Bob to view. His next edit becomes a conflicted copy in his own
        # space; Alice's file is unchanged.
        alice = await srv.login(EMAIL)
        folder_id = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0][
            "file_id"]
        [the_share] = (await alice.get(f"/api/files/{folder_id}/shares")).body["shares"]
        r = await alice.patch(f"/api/shares/{the_share['share_id']}", {"permission": "view"})
        assert r.status == 200
        bob_pc.write("Shared with me/Thesis/chapter1.txt", "bob edits while view-only")
        await bob_pc.sync()
        copies = [p for p in bob_pc.tree() if "conflicted copy" in p]
        assert len(copies) == 1 and "/" not in copies[0], copies  # at the root of his space
        assert bob_pc.read(copies[0]) == b"bob edits while view-only"
        assert bob_pc.read("Shared with me/Thesis/chapter1.txt") == \
            b"bob's review of chapter one"
        await alice_pc.sync()
        assert alice_pc.read("Thesis/chapter1.txt") == b"bob's review of chapter one"
        assert not any("conflicted" in p for p in alice_pc.tree())
        bob = await srv.login("bob@example.com")
        assert copies[0] in await bob.listdir("/")  # uploaded to Bob's own drive
        capsys.readouterr()
        assert await bob_pc.cli("status") == 0
        assert "view only" in capsys.readouterr().out

        # Bob edits again (not synced yet); Alice revokes; the folder leaves Bob's device and
        # his unsynced edit stays on his computer.
        bob_pc.write("Shared with me/Thesis/notes/todo.txt", "bob's unsynced edit")
        r = await alice.delete(f"/api/shares/{the_share['share_id']}")
        assert r.status == 204
        await bob_pc.sync()
        tree = bob_pc.tree()
        assert "Shared with me/Thesis/chapter1.txt" not in tree
        assert tree.get("Shared with me/Thesis/notes/todo.txt") == b"bob's unsynced edit"
        await bob_pc.sync()  # and it stays that way, with nothing left to do
        assert bob_pc.read("Shared with me/Thesis/notes/todo.txt") == b"bob's unsynced edit"
        await alice_pc.sync()
        assert alice_pc.read("Thesis/notes/todo.txt") == b"todo"
    finally:
        await srv.stop()


async def test_finding14_leaving_a_share_removes_it_from_the_recipients_device_only(
        tmp_path: Path, capsys, database: dict[str, Any]) -> None:
    """Issue 12, finding 14: Bob leaves a folder Alice shared with him (`drive-sync leave`).
    His device removes the folder as for an unshare (nothing is deleted on the server: no
    delete goes up), keeps the file he changed and had not synced, and Alice's folder is whole
    on the server and on her device."""
    srv: RunningServer = await start_server(tmp_path / "data", **database)
    try:
        await srv.register(EMAIL)
        await srv.register("bob@example.com")
        alice_pc, bob_pc = make_devices(tmp_path, "alice-pc", "bob-pc")
        await alice_pc.init(srv)
        await bob_pc.init(srv, email="bob@example.com")
        files = {"Thesis/chapter1.txt": b"alice's chapter one",
                 "Thesis/notes/todo.txt": b"todo", "Thesis/notes/deep/more.txt": b"more"}
        for rel, data in files.items():
            alice_pc.write(rel, data)
        await alice_pc.sync()
        assert await alice_pc.cli("share", "Thesis", "--with", "bob@example.com") == 0
        await bob_pc.sync()
        assert bob_pc.read("Shared with me/Thesis/notes/deep/more.txt") == b"more"
        bob_pc.write("Shared with me/Thesis/notes/todo.txt", "bob's unsynced edit")

        capsys.readouterr()
        assert await bob_pc.cli("leave", "/Shared with me/Thesis") == 0
        assert "Left /Shared with me/Thesis" in capsys.readouterr().out
        assert await bob_pc.cli("leave", "/Shared with me/Thesis") != 0  # not shared any more
        await bob_pc.sync()
        tree = bob_pc.tree()
        assert not any(p.startswith("Shared with me/Thesis/") and p.endswith(".txt")
                       and p != "Shared with me/Thesis/notes/todo.txt" for p in tree), tree
        assert tree["Shared with me/Thesis/notes/todo.txt"] == b"bob's unsynced edit"
        await bob_pc.sync()  # and it stays that way, with nothing left to do
        assert bob_pc.read("Shared with me/Thesis/notes/todo.txt") == b"bob's unsynced edit"

        alice = await srv.login(EMAIL)
        assert sorted(await alice.listdir("/Thesis")) == ["chapter1.txt", "notes"]
        assert sorted(await alice.listdir("/Thesis/notes")) == ["deep", "todo.txt"]
        assert (await alice.get("/api/trash")).body["entries"] == []
        await alice_pc.sync()
        for rel, data in files.items():
            assert alice_pc.read(rel) == data
        bob = await srv.login("bob@example.com")
        assert (await bob.get("/api/shared-with-me")).body["shares"] == []
        assert await bob.listdir("/") == []
    finally:
        await srv.stop()


async def test_finding9_a_device_converges_after_a_revoke_and_a_re_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: dict[str, Any]) -> None:
    """Issue 12, finding 9: Alice revokes, changes the folder (edits, adds, deletes, and a file
    that comes and goes to her private folder), and shares it again. Bob's device, which did
    not sync in between, gets the folder as it is now and no feed entry of the time between;
    another that synced in between (and so removed the folder) gets it back."""
    answers: list[dict[str, Any]] = []
    real = Remote.changes

    async def recorded(self: Remote, cursor: str, wait_seconds: float = 0) -> dict[str, Any]:
        answer = await real(self, cursor, wait_seconds)
        answers.append(answer)
        return answer
    monkeypatch.setattr(Remote, "changes", recorded)

    srv: RunningServer = await start_server(tmp_path / "data", **database)
    try:
        await srv.register(EMAIL)
        await srv.register("bob@example.com")
        alice_pc, bob_pc, bob_phone = make_devices(tmp_path, "alice-pc", "bob-pc", "bob-phone")
        await alice_pc.init(srv)
        await bob_pc.init(srv, email="bob@example.com")
        await bob_phone.init(srv, email="bob@example.com")
        alice_pc.write("Proj/keep.txt", "kept")
        alice_pc.write("Proj/edit.txt", "v1")
        alice_pc.write("Proj/gone.txt", "deleted while revoked")
        alice_pc.write("Private/mine.txt", "alice's own")
        await alice_pc.sync()
        assert await alice_pc.cli("share", "Proj", "--with", "bob@example.com") == 0
        await bob_pc.sync()
        await bob_phone.sync()
        assert bob_pc.read("Shared with me/Proj/gone.txt") == b"deleted while revoked"

        alice = await srv.login(EMAIL)
        proj = next(e for e in (await alice.get("/api/files", params={"path": "/"})).body[
            "entries"] if e["name"] == "Proj")
        [the_share] = (await alice.get(f"/api/files/{proj['file_id']}/shares")).body["shares"]
        assert (await alice.delete(f"/api/shares/{the_share['share_id']}")).status == 204
        await bob_phone.sync()  # the phone syncs while revoked: the folder leaves it
        assert not any(p.startswith("Shared with me/Proj/") for p in bob_phone.tree())
        alice_pc.write("Proj/edit.txt", "v2, while bob had no access")
        alice_pc.write("Proj/new.txt", "added while revoked")
        (alice_pc.folder / "Proj" / "gone.txt").unlink()
        await alice_pc.sync()
        # A file that comes and goes: renamed, its old name taken, then moved to her private
        # folder (entries compaction keeps apart, so they would reach an old cursor).
        secret = await upload(alice, "/Proj/layoffs.txt", b"the list")
        await alice.patch(f"/api/files/{secret['file_id']}", {"path": "/Proj/layoffs-v2.txt"})
        await upload(alice, "/Proj/layoffs.txt", b"nothing to see")
        await alice.patch(f"/api/files/{secret['file_id']}",
                          {"path": "/Private/layoffs-v2.txt"})
        await alice_pc.sync()
        answers.clear()
        assert await alice_pc.cli("share", "Proj", "--with", "bob@example.com") == 0

        expected = {f"Shared with me/{p}": d for p, d in alice_pc.tree().items()
                    if p.startswith("Proj/")}
        for device in (bob_pc, bob_phone):
            await device.sync()
            got = {p: d for p, d in device.tree().items()
                   if p.startswith("Shared with me/Proj/")}
            assert got == expected, device.name
        seen = [c for a in answers for c in a["changes"]]
        assert not [c for c in seen if c["file_id"] == secret["file_id"]
                    or "layoffs-v2" in c["path"]], seen
        await alice_pc.sync()
        assert alice_pc.read("Proj/edit.txt") == b"v2, while bob had no access"
        assert alice_pc.read("Private/layoffs-v2.txt") == b"the list"
    finally:
        await srv.stop()
