"""Bugs the whole-system simulation (tests/sim_run.py) found, each as a plain test.

Seed 52 (``python scripts/simulate.py --seed 52 -v``): a folder made, or renamed into place, in
a folder shared with the user to view only. The server refuses to create it (403), and the
device tried again on every sync and never reported itself in sync, even once the files in it
had been kept as conflicted copies and the folder was empty.

Seed 238: a folder the user shares, moved on their computer into another one they share; the
server refuses (409 ``nested_share``) and the device was stuck the same way.
"""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningServer, start_server
from tests.sync_helpers import EMAIL, Device, make_devices

BOB = "bob@example.com"


async def _view_only_share(tmp_path: Path) -> tuple[RunningServer, Device]:
    """Bob shares his folder Proj (holding one file) with Alice to view; Alice's device has
    synced it to ``Shared with me/Proj``."""
    srv = await start_server(tmp_path / "data")
    await srv.register(EMAIL)
    await srv.register(BOB)
    bob = await srv.login(BOB)
    folder = await bob.mkdir("/Proj")
    r = await bob.post("/api/files/upload-init", {"path": "/Proj/owner.txt", "size": 0})
    assert r.status == 200, r
    c = await bob.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": []})
    assert c.status == 200, c
    r = await bob.post(f"/api/files/{folder['file_id']}/share",
                       {"user_email": EMAIL, "permission": "view"})
    assert r.status == 201, r
    [pc] = make_devices(tmp_path, "alice-pc")
    with redirect_stdout(io.StringIO()):
        await pc.init(srv)
    await pc.sync()
    assert (pc.folder / "Shared with me/Proj/owner.txt").is_file()
    return srv, pc


async def sync_quietly(pc: Device) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        rc = await pc.cli("run", "--once")
    return rc, err.getvalue()


async def test_seed52_a_folder_made_in_a_view_only_share_keeps_its_files_and_syncs(
        tmp_path: Path) -> None:
    srv, pc = await _view_only_share(tmp_path)
    try:
        pc.write("Shared with me/Proj/mine/notes.txt", "alice's notes")
        (pc.folder / "Shared with me/Proj/empty").mkdir()
        rc, err = await sync_quietly(pc)
        assert rc == 0, err
        copies = [p for p in pc.tree() if "conflicted copy" in p]
        assert len(copies) == 1 and "/" not in copies[0], pc.tree()
        assert pc.read(copies[0]) == b"alice's notes"  # kept, in her own space
        tree = pc.tree()
        assert "Shared with me/Proj/mine" not in tree and "Shared with me/Proj/empty" not in tree
        rc, err = await sync_quietly(pc)  # and nothing is left to retry
        assert rc == 0 and "not in sync" not in err, err
        assert pc.tree() == tree
        bob = await srv.login(BOB)
        assert await bob.listdir("/Proj") == ["owner.txt"]
        alice = await srv.login(EMAIL)
        assert copies[0] in await alice.listdir("/")
    finally:
        await srv.stop()


async def test_seed238_a_shared_folder_moved_into_another_goes_back_and_the_device_syncs(
        tmp_path: Path) -> None:
    """Seed 238 (``python scripts/simulate.py --seed 238 -v``): Alice moves, on her computer, a
    folder she shares into another folder she shares. The server refuses (409 nested_share: a
    shared folder cannot lie inside another), and the device retried on every sync and never
    reported itself in sync. Now the move is undone where she made it, with a notice; nothing
    changes on the server, and the next sync has nothing left to do."""
    srv = await start_server(tmp_path / "data")
    try:
        await srv.register(EMAIL)
        await srv.register(BOB)
        [pc] = make_devices(tmp_path, "alice-pc")
        with redirect_stdout(io.StringIO()):
            await pc.init(srv)
        pc.write("docs/a.txt", "alice's a")
        pc.write("Notes/n.txt", "alice's notes")
        await pc.sync()
        alice = await srv.login(EMAIL)
        for name in ("docs", "Notes"):
            listing = (await alice.get("/api/files", params={"path": "/"})).body["entries"]
            [folder] = [e for e in listing if e["name"] == name]
            r = await alice.post(f"/api/files/{folder['file_id']}/share",
                                 {"user_email": BOB, "permission": "edit"})
            assert r.status == 201, r
        (pc.folder / "docs").rename(pc.folder / "Notes/docs")
        rc, err = await sync_quietly(pc)
        assert rc == 0, err
        assert "moved back" in err, err
        assert pc.read("docs/a.txt") == b"alice's a" and not (pc.folder / "Notes/docs").exists()
        assert set(await alice.listdir("/")) == {"docs", "Notes"}
        assert await alice.listdir("/Notes") == ["n.txt"]
        rc, err = await sync_quietly(pc)
        assert rc == 0 and "not in sync" not in err, err
    finally:
        await srv.stop()


async def test_load_a_read_sees_every_commit_made_before_it_even_beside_another_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/load_bench.py, 200 users: a user registered (201) could not log in (401). A read
    ran as two awaits (execute, then fetch) on the reader connection, and a read another task
    ran in between shared the first one's snapshot, from before the registration. Here one
    read is held between its two steps (if it still has two) while a user registers: a lookup
    of that user must find them."""
    import aiosqlite

    from driveserver import appkeys

    srv = await start_server(tmp_path / "data")
    try:
        db = srv.app[appkeys.DB]
        await srv.register("a@example.com")
        await srv.register("b@example.com")
        held, entered, real = asyncio.Event(), asyncio.Event(), aiosqlite.Cursor.fetchone

        async def hold_first(self: aiosqlite.Cursor) -> Any:
            if not entered.is_set():
                entered.set()
                await held.wait()
            return await real(self)
        monkeypatch.setattr(aiosqlite.Cursor, "fetchone", hold_first)
        first = asyncio.create_task(db.fetchone("SELECT email FROM users ORDER BY email"))
        waiter = asyncio.create_task(entered.wait())
        await asyncio.wait([first, waiter], return_when=asyncio.FIRST_COMPLETED)
        await srv.register("c@example.com")
        row = await db.fetchone("SELECT email FROM users WHERE email = ?", ("c@example.com",))
        held.set()
        assert (await first)["email"] == "a@example.com"
        waiter.cancel()
        assert row is not None, "the reader did not see a committed registration"
    finally:
        await srv.stop()
