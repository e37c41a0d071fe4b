"""Regression tests for issue 12, findings 4 and 6: deep paths, and trash restores into a shared
workspace. Each name says its finding.

Finding 4: a 4 KB path named 2,000 levels, and resolving it cost O(depth²) statements on the
event loop's thread (20 s with ``/healthz`` stalled). Finding 6: a file restored out of a shared
folder kept the shared workspace, so its owner's later private edits reached the recipients.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from driveserver import appkeys
from driveserver.paths import MAX_DEPTH
from tests.helpers import ApiClient, HealthzProbe, RunningServer, content, upload
from tests.test_sharing import cursor_of, drain, share


def deep(levels: int, name: str = "d", top: str = "") -> str:
    """A path ``levels`` names deep below ``top``: ``/d/d/d...``."""
    return top + "/" + "/".join([name] * levels)


async def snapshot_paths(client: ApiClient) -> list[str]:
    out: list[str] = []
    cursor = "0"
    while True:
        r = await client.get("/api/sync/snapshot", params={"cursor": cursor})
        assert r.status == 200, r
        out += [e["path"] for e in r.body["entries"]]
        cursor = r.body["next_cursor"]
        if not r.body["has_more"]:
            return out


async def entry(client: ApiClient, path: str) -> dict[str, Any]:
    folder, name = path.rsplit("/", 1)
    r = await client.get("/api/files", params={"path": folder or "/"})
    assert r.status == 200, r
    (found,) = [e for e in r.body["entries"] if e["name"] == name]
    return found


def assert_too_deep(r: Any) -> None:
    assert r.status == 400 and r.error_code() == "path_too_deep", r
    assert r.body["error"]["max_depth"] == MAX_DEPTH


# --- finding 4: deep paths -------------------------------------------------------------------

async def test_finding4_a_path_deeper_than_the_limit_is_refused_everywhere(
        server: RunningServer, alice: ApiClient) -> None:
    """The 4 KB probe (2,000 one-letter levels) and one level past the limit: a 400 from every
    route that takes a path, and nothing created."""
    made = await upload(alice, "/f.txt", b"x")
    for path in (deep(2000, "a"), deep(MAX_DEPTH + 1)):
        assert_too_deep(await alice.post("/api/folders", {"path": path}))
        assert_too_deep(await alice.patch(f"/api/files/{made['file_id']}", {"path": path}))
        assert_too_deep(await alice.post("/api/files/upload-init", {"path": path, "size": 1}))
        assert_too_deep(await alice.get("/api/files", params={"path": path}))
    assert await alice.listdir("/") == ["f.txt"]
    r = await alice.post("/api/folders", {"path": deep(MAX_DEPTH)})
    assert r.status == 201, r


async def test_finding4_moves_and_restores_cannot_build_a_tree_past_the_limit(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """Paths are checked on the way in, but a move carries a whole folder's depth along, a
    restore may land below a folder that has moved deeper, and a shared folder's recipient
    names paths from its mount: depth is counted in the owner's drive, so none of these makes
    a tree deeper than the limit."""
    bottom = deep(MAX_DEPTH - 10, top="/A")  # /A and 246 levels below: 247 deep
    await alice.mkdir(bottom)
    b = await alice.mkdir(deep(10, "b", top="/B"))  # /B and 10 levels below it
    top_b = (await entry(alice, "/B"))["file_id"]
    # Below bottom, /B would be 248 deep and its last b 258: refused, and /B stays put.
    assert_too_deep(await alice.patch(f"/api/files/{top_b}", {"path": bottom + "/B"}))
    assert_too_deep(await alice.patch(f"/api/files/{top_b}", {"path": bottom + "/new/B"}))
    assert (await alice.get(f"/api/files/{b['file_id']}")).body["path"] == deep(10, "b", "/B")
    # Below a folder 245 deep, its last b is 256 deep: that fits exactly.
    r = await alice.patch(f"/api/files/{top_b}",
                          {"path": deep(MAX_DEPTH - 12, top="/A") + "/B"})
    assert r.status == 200, r
    # Renaming in place, even at the limit, is fine.
    renamed = r.body["path"] + deep(9, "b") + "/c"  # the deepest b, 256 deep, renamed c
    r = await alice.patch(f"/api/files/{b['file_id']}", {"path": renamed})
    assert r.status == 200 and r.body["path"] == renamed, r

    # A restore into a folder that has since moved deeper.
    x = await alice.mkdir("/X/c")
    await alice.delete(f"/api/files/{x['file_id']}")
    top_x = (await entry(alice, "/X"))["file_id"]
    r = await alice.patch(f"/api/files/{top_x}", {"path": bottom + "/y/z/X"})  # X 250 deep
    assert r.status == 200, r
    r = await alice.patch(f"/api/files/{top_x}", {"path": deep(MAX_DEPTH - 1) + "/X"})
    assert r.status == 200, r  # X is at the limit: c would be one past it
    assert_too_deep(await alice.post(f"/api/trash/{x['file_id']}/restore"))
    # ... and one whose own folder fits there, but not what is inside it.
    await alice.mkdir("/Y/w/z")
    w = (await entry(alice, "/Y/w"))["file_id"]
    await alice.delete(f"/api/files/{w}")
    top_y = (await entry(alice, "/Y"))["file_id"]
    r = await alice.patch(f"/api/files/{top_y}", {"path": deep(MAX_DEPTH - 2) + "/Y"})
    assert r.status == 200, r  # Y 255 deep: w would be 256, z 257
    assert_too_deep(await alice.post(f"/api/trash/{w}/restore"))
    assert {e["file_id"] for e in (await alice.get("/api/trash")).body["entries"]} == {
        x["file_id"], w}

    # A recipient's short view path of a deep folder of the owner's.
    proj = await alice.mkdir(deep(MAX_DEPTH - 5, "p", top="/P"))  # 252 deep in alice's drive
    await share(alice, proj["file_id"], "bob@example.com")
    mount = "/Shared with me/p"
    assert_too_deep(await bob.post("/api/folders", {"path": deep(5, "q", mount)}))  # 7 names
    r = await bob.post("/api/folders", {"path": deep(4, "q", mount)})
    assert r.status == 201, r
    assert_too_deep(await bob.post("/api/files/upload-init",
                                   {"path": deep(4, "q", mount) + "/f.txt", "size": 1}))


async def test_finding4_the_deepest_tree_never_stalls_healthz(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """While the hostile 4 KB requests run, then everything one can do with the deepest tree
    allowed (create, upload into it, move and rename into it, list, share, feed, trash and
    restore), another client's ``/healthz`` answers within 1 s each time."""
    f = await upload(alice, "/f.txt", b"x")
    async with HealthzProbe(server.url) as health:
        made = await alice.post("/api/folders", {"path": deep(2000, "a")})
        moved = await alice.patch(f"/api/files/{f['file_id']}", {"path": deep(2000, "a")})
    health.check()  # was: 5 s, then 12 s without an answer
    assert made.status == 400 and moved.status == 400, (made, moved)

    async with HealthzProbe(server.url) as health:
        bottom = deep(MAX_DEPTH - 1)  # its files are MAX_DEPTH deep
        made = await alice.mkdir(bottom)
        up = await upload(alice, bottom + "/up.txt", b"deep content")
        r = await alice.patch(f"/api/files/{f['file_id']}", {"path": bottom + "/f.txt"})
        assert r.status == 200 and r.body["path"] == bottom + "/f.txt", r
        r = await alice.patch(f"/api/files/{f['file_id']}", {"path": bottom + "/g.txt"})
        assert r.status == 200, r
        assert sorted(await alice.listdir(bottom)) == ["g.txt", "up.txt"]
        assert (await content(alice, up["file_id"])).body == b"deep content"
        assert (await alice.get(f"/api/files/{made['file_id']}")).body["path"] == bottom

        top = (await entry(alice, "/d"))["file_id"]
        await share(alice, top, "bob@example.com")
        r = await alice.patch(f"/api/files/{top}", {"path": "/e"})  # the whole chain follows
        assert r.status == 200, r
        mine = "/e" + bottom[2:]
        theirs = "/Shared with me/d" + bottom[2:]
        assert sorted(await bob.listdir(theirs)) == ["g.txt", "up.txt"]
        cursor = await cursor_of(bob)
        await upload(alice, mine + "/new.txt", b"new")
        seen, _ = await drain(bob, cursor)
        assert seen == [("create", theirs + "/new.txt")]
        assert len(await snapshot_paths(alice)) == (MAX_DEPTH - 1) + 3  # folders, 3 files

        r = await alice.delete(f"/api/files/{top}")
        assert r.status == 204
        r = await alice.post(f"/api/trash/{top}/restore")
        assert r.status == 200 and r.body["path"] == "/e", r
        assert sorted(await alice.listdir(mine)) == ["g.txt", "new.txt", "up.txt"]
    health.check()


@contextmanager
def writer_steps(server: RunningServer) -> Iterator[list[int]]:
    """Count the SQLite virtual-machine steps the writer connection runs (in thousands): every
    unit of work runs there, on the event loop's thread."""
    conn: sqlite3.Connection = server.app[appkeys.DB]._writer  # type: ignore[assignment]
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0  # go on
    conn.set_progress_handler(tick, 1000)
    try:
        yield count
    finally:
        conn.set_progress_handler(None, 1000)


@pytest.mark.sqlite_only("counts the steps of SQLite's writer thread")
async def test_finding4_the_work_of_a_request_grows_linearly_with_the_depth(
        server: RunningServer, alice: ApiClient) -> None:
    """Moving a file into a folder, making a folder in it and uploading into it, 32 then 256
    levels deep: eight times deeper costs less than eight times the work (it was O(depth²):
    about 40 times)."""
    work: dict[int, int] = {}
    for levels in (32, MAX_DEPTH - 1):
        top = f"/t{levels}"
        bottom = deep(levels - 1, top=top)
        await alice.mkdir(bottom)
        f = await upload(alice, f"{top}.txt", b"x")
        with writer_steps(server) as steps:
            r = await alice.patch(f"/api/files/{f['file_id']}", {"path": bottom + "/f.txt"})
            assert r.status == 200, r
            await alice.mkdir(bottom + "/new")
            await upload(alice, bottom + "/up.txt", b"y")
        work[levels] = steps[0]
    assert work[MAX_DEPTH - 1] < 8 * work[32], work


def test_finding4_a_path_is_walked_down_the_live_name_index() -> None:
    """One query walks the whole path; each of its steps must be an index lookup, never a scan
    of a folder's children (or of the whole table)."""
    from driveserver.meta.migrations import MIGRATIONS
    from driveserver.meta.tree import _walk_sql

    db = sqlite3.connect(":memory:")
    for script in MIGRATIONS:
        for statement in script.split(";\n"):
            if statement.strip():
                db.execute(statement)
    params: list[Any] = []
    for i in range(MAX_DEPTH):
        params += [i, "d"]
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + _walk_sql(MAX_DEPTH),
                                         (*params, "root"))]
    step = plan[plan.index("RECURSIVE STEP"):]
    assert any("files_live_name" in line for line in step), plan
    assert not any(line.startswith("SCAN f") for line in step), plan


# --- finding 6: restores and shared workspaces -----------------------------------------------

async def phone_of(server: RunningServer) -> ApiClient:
    """Another device of alice's, to read her own feed (a device's own changes are left out)."""
    return await server.login("alice@example.com", device="alice-phone")


async def test_finding6_a_file_restored_out_of_a_shared_folder_leaves_the_share(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """The probe's steps: alice shares /Shared-Proj with bob, trashes Drafts/notes.txt and then
    Drafts, renames the shared folder, restores notes.txt (to /Shared-Proj/Drafts, recreated in
    her private tree) and edits it. Bob hears nothing of it any more; alice's own snapshot and
    feed have it."""
    proj = await alice.mkdir("/Shared-Proj")
    await share(alice, proj["file_id"], "bob@example.com")
    drafts = await alice.mkdir("/Shared-Proj/Drafts")
    notes = await upload(alice, "/Shared-Proj/Drafts/notes.txt", b"draft one")
    phone = await phone_of(server)
    await alice.delete(f"/api/files/{notes['file_id']}")
    await alice.delete(f"/api/files/{drafts['file_id']}")
    r = await alice.patch(f"/api/files/{proj['file_id']}", {"path": "/Renamed"})
    assert r.status == 200, r
    bob_cursor, alice_cursor = await cursor_of(bob), await cursor_of(phone)

    r = await alice.post(f"/api/trash/{notes['file_id']}/restore")
    assert r.status == 200 and r.body["path"] == "/Shared-Proj/Drafts/notes.txt", r
    await upload(alice, "/Shared-Proj/Drafts/notes.txt", b"private second draft",
                 base_version=1)
    await alice.mkdir("/Renamed/after")  # the share still works: bob hears of this

    seen, _ = await drain(bob, bob_cursor)
    assert seen == [("create", "/Shared with me/Shared-Proj/after")]
    assert (await bob.get(f"/api/files/{notes['file_id']}")).status == 404
    assert (await content(bob, notes["file_id"])).status == 404
    assert await bob.listdir("/Shared with me/Shared-Proj") == ["after"]

    # Alice's other device: the parents, then notes.txt as it is now (the feed compacts the
    # restore and the edit into one entry with the edit's content).
    r = await phone.get("/api/sync/changes", params={"cursor": alice_cursor, "timeout": "0"})
    mine = [(c["action"], c["path"], c["size"]) for c in r.body["changes"]]
    assert mine[:3] == [("create", "/Shared-Proj", 0), ("create", "/Shared-Proj/Drafts", 0),
                        ("restore", "/Shared-Proj/Drafts/notes.txt",
                         len(b"private second draft"))], mine
    assert "/Shared-Proj/Drafts/notes.txt" in await snapshot_paths(alice)
    assert await alice.listdir("/Shared-Proj/Drafts") == ["notes.txt"]


async def test_finding6_a_folder_restored_out_of_a_shared_folder_leaves_it_whole(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """The same with a folder: Drafts (with a file and a subfolder) is trashed, then the folder
    it was in, and the shared folder is renamed; Drafts comes back whole, all of it private."""
    proj = await alice.mkdir("/Proj")
    await share(alice, proj["file_id"], "bob@example.com")
    sub = await alice.mkdir("/Proj/Work/Drafts/sub")
    await upload(alice, "/Proj/Work/Drafts/a.txt", b"a")
    notes = await upload(alice, "/Proj/Work/Drafts/sub/notes.txt", b"n")
    drafts = (await entry(alice, "/Proj/Work/Drafts"))["file_id"]
    work = (await entry(alice, "/Proj/Work"))["file_id"]
    await alice.delete(f"/api/files/{drafts}")
    await alice.delete(f"/api/files/{work}")
    r = await alice.patch(f"/api/files/{proj['file_id']}", {"path": "/Renamed"})
    assert r.status == 200, r
    bob_cursor = await cursor_of(bob)
    r = await alice.post(f"/api/trash/{drafts}/restore")
    assert r.status == 200 and r.body["path"] == "/Proj/Work/Drafts", r
    await upload(alice, "/Proj/Work/Drafts/sub/notes.txt", b"private", base_version=1)
    await alice.mkdir("/Proj/Work/Drafts/sub/more")
    assert (await drain(bob, bob_cursor))[0] == []
    for fid in (drafts, sub["file_id"], notes["file_id"]):
        assert (await bob.get(f"/api/files/{fid}")).status == 404
    paths = await snapshot_paths(alice)
    for p in ("/Proj/Work/Drafts", "/Proj/Work/Drafts/a.txt", "/Proj/Work/Drafts/sub",
              "/Proj/Work/Drafts/sub/notes.txt", "/Proj/Work/Drafts/sub/more"):
        assert paths.count(p) == 1, (p, paths)
    assert "/Renamed" in paths and not [p for p in paths if p.startswith("/Renamed/")]


async def test_finding6_an_item_restored_into_a_shared_folder_joins_it(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """The other way round: the folder a private file comes back to is shared now, so the
    file is in the shared folder for everyone (it was in neither's snapshot, nor in bob's
    feed)."""
    await alice.mkdir("/X")
    notes = await upload(alice, "/X/notes.txt", b"notes")
    old_x = (await entry(alice, "/X"))["file_id"]
    await alice.delete(f"/api/files/{notes['file_id']}")
    await alice.delete(f"/api/files/{old_x}")
    new_x = await alice.mkdir("/X")
    await share(alice, new_x["file_id"], "bob@example.com")
    bob_cursor = await cursor_of(bob)
    r = await alice.post(f"/api/trash/{notes['file_id']}/restore")
    assert r.status == 200 and r.body["path"] == "/X/notes.txt", r
    seen, bob_cursor = await drain(bob, bob_cursor)
    assert seen == [("restore", "/Shared with me/X/notes.txt")]
    assert (await content(bob, notes["file_id"])).body == b"notes"
    await upload(alice, "/X/notes.txt", b"shared edit", base_version=1)
    assert (await drain(bob, bob_cursor))[0] == [("modify", "/Shared with me/X/notes.txt")]
    assert (await snapshot_paths(alice)).count("/X/notes.txt") == 1
    assert "/Shared with me/X/notes.txt" in await snapshot_paths(bob)


async def test_finding6_a_restore_never_nests_a_shared_folder(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """A trashed shared folder whose old parent is now itself shared would come back inside it:
    409 ``nested_share``, and it stays in the trash."""
    proj = await alice.mkdir("/Work/Proj")
    await share(alice, proj["file_id"], "bob@example.com")
    work = (await entry(alice, "/Work"))["file_id"]
    await alice.delete(f"/api/files/{proj['file_id']}")
    await alice.delete(f"/api/files/{work}")
    new_work = await alice.mkdir("/Work")
    await share(alice, new_work["file_id"], "bob@example.com")
    r = await alice.post(f"/api/trash/{proj['file_id']}/restore")
    assert r.status == 409 and r.error_code() == "nested_share", r
    assert await alice.listdir("/Work") == []
    trash = {e["file_id"] for e in (await alice.get("/api/trash")).body["entries"]}
    assert proj["file_id"] in trash


async def test_finding4_the_client_reports_a_tree_deeper_than_the_server_keeps(
        tmp_path, srv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A local tree deeper than the server's limit is reported, once, instead of uploads that
    fail for ever; what fits is synced, and moving a synced file down there deletes nothing."""
    from tests.sync_helpers import make_devices

    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    deep = "/".join(["d"] * (MAX_DEPTH + 1))
    a.write(f"{deep}/too-deep.txt", "below the limit")
    a.write("kept.txt", "synced first")
    assert await a.cli("run", "--once") == 1  # problems reported: not a clean round
    alice = await srv.login("alice@example.com")
    top = "/" + "/".join(["d"] * MAX_DEPTH)
    r = await alice.get("/api/files", params={"path": top})
    assert r.status == 200 and r.body["entries"] == [], r.body
    capsys.readouterr()
    assert await a.cli("status") == 0
    assert f"more than {MAX_DEPTH} folders deep" in capsys.readouterr().out
    (a.folder / "kept.txt").rename(a.folder / deep / "kept.txt")
    await a.cli("run", "--once")
    r = await alice.get("/api/files", params={"path": "/"})
    assert "kept.txt" in [e["name"] for e in r.body["entries"]], r.body


async def test_finding6_a_database_from_before_the_fix_is_repaired(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """A file the old restore left in alice's private folder with the shared folder's workspace
    (made here by hand, as the old code did): opening the database repairs it, so bob stops
    hearing of its edits; a consistent database is left exactly as it was."""
    from driveserver.meta.db import _statements
    from driveserver.meta.migrations import MIGRATIONS

    proj = await alice.mkdir("/Proj")
    await share(alice, proj["file_id"], "bob@example.com")
    await upload(alice, "/Proj/inside.txt", b"shared")
    leaked = await upload(alice, "/Private/notes.txt", b"private")
    db = server.app[appkeys.DB]
    before = await db.fetchall("SELECT id, workspace_id FROM files ORDER BY id")
    shared_ws = await db.fetchval(
        "SELECT id FROM workspaces WHERE root_id = ? AND kind = 'shared'", (proj["file_id"],))

    async def reopen() -> None:
        """Migration 9, the repair, run again as opening a database from before it runs it
        (by number: later migrations were appended after it)."""
        async with db.transaction(offload=True) as tx:
            for statement in _statements(MIGRATIONS[8]):
                await tx.execute(statement)

    await reopen()  # consistent: nothing changes
    assert await db.fetchall("SELECT id, workspace_id FROM files ORDER BY id") == before
    async with db.transaction() as tx:  # the state the old restore left
        await tx.execute("UPDATE files SET workspace_id = ? WHERE id = ?",
                         (shared_ws, leaked["file_id"]))
    await reopen()
    assert await db.fetchall("SELECT id, workspace_id FROM files ORDER BY id") == before
    bob_cursor = await cursor_of(bob)
    await upload(alice, "/Private/notes.txt", b"private, edited", base_version=1)
    seen, _ = await drain(bob, bob_cursor)
    assert seen == [], seen
