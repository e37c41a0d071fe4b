"""Sharing end to end with real daemons' code (issue: sharing, acceptance 2): Alice shares a
folder with Bob (edit), Bob's device gets it; Bob's edit reaches Alice's device; after a
downgrade to view, Bob's next edit becomes a conflicted copy in his own space and Alice's file
is unchanged; after a revoke the folder leaves Bob's device and his unsynced edit survives."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import RunningServer, start_server
from tests.sync_helpers import EMAIL, make_devices


async def test_share_edit_downgrade_revoke_end_to_end(tmp_path: Path, capsys) -> None:
    srv: RunningServer = await start_server(tmp_path / "data")
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
