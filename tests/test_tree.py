"""The file tree API: folders, listing, metadata, move/rename, trash, restore, purge, quota."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from tests.helpers import ApiClient, RunningServer


async def test_create_folder_with_parents_and_list(alice: ApiClient) -> None:
    made = await alice.mkdir("/Work/2026/Q1")
    assert made["path"] == "/Work/2026/Q1" and made["is_directory"] is True
    assert await alice.listdir("/") == ["Work"]
    assert await alice.listdir("/Work") == ["2026"]
    r = await alice.get("/api/files", params={"path": "/Work/2026"})
    entry = r.body["entries"][0]
    assert entry["name"] == "Q1" and entry["file_id"] == made["file_id"]
    assert set(entry) == {"name", "file_id", "is_directory", "size", "version", "checksum",
                          "executable", "symlink", "modified_at"}


async def test_folder_name_collision_is_case_insensitive(alice: ApiClient) -> None:
    await alice.mkdir("/Photos")
    for name in ("/Photos", "/photos", "/PHOTOS/"):
        r = await alice.post("/api/folders", {"path": name})
        assert r.status == 409 and r.error_code() == "exists", name
    # Unicode: an NFD spelling of an NFC name is the same name.
    await alice.mkdir("/Caf\u00e9")
    r = await alice.post("/api/folders", {"path": unicodedata.normalize("NFD", "/CAF\u00c9")})
    assert r.status == 409
    assert sorted(await alice.listdir("/")) == ["Café", "Photos"]


async def test_names_are_case_preserving(alice: ApiClient) -> None:
    await alice.mkdir("/MixedCase")
    assert await alice.listdir("/") == ["MixedCase"]
    r = await alice.get("/api/files", params={"path": "/mixedcase"})
    assert r.status == 200 and r.body["path"] == "/mixedcase"


async def test_listing_is_paged(alice: ApiClient) -> None:
    for i in range(7):
        await alice.mkdir(f"/p/d{i}")
    seen, cursor = [], None
    while True:
        params = {"path": "/p", "limit": "3"}
        if cursor:
            params["cursor"] = cursor
        r = await alice.get("/api/files", params=params)
        seen += [e["name"] for e in r.body["entries"]]
        if not r.body["has_more"]:
            break
        cursor = r.body["next_cursor"]
    assert seen == [f"d{i}" for i in range(7)]


async def test_metadata_of_a_folder(alice: ApiClient) -> None:
    made = await alice.mkdir("/A/B")
    r = await alice.get(f"/api/files/{made['file_id']}")
    assert r.status == 200
    assert r.body["path"] == "/A/B" and r.body["name"] == "B" and r.body["versions"] == []


async def test_list_missing_folder_is_404(alice: ApiClient) -> None:
    r = await alice.get("/api/files", params={"path": "/nope"})
    assert r.status == 404 and r.error_code() == "not_found"


async def test_rename_and_move_folder_with_children(alice: ApiClient) -> None:
    top = await alice.mkdir("/Projects/Thesis/Drafts")
    thesis = (await alice.get("/api/files", params={"path": "/Projects"})).body["entries"][0]
    r = await alice.patch(f"/api/files/{thesis['file_id']}", {"path": "/Archive/2026/Thesis-final"})
    assert r.status == 200 and r.body["path"] == "/Archive/2026/Thesis-final"
    assert await alice.listdir("/Archive/2026/Thesis-final") == ["Drafts"]
    assert await alice.listdir("/Projects") == []
    r = await alice.get(f"/api/files/{top['file_id']}")
    assert r.body["path"] == "/Archive/2026/Thesis-final/Drafts"


async def test_rename_only_case_is_allowed(alice: ApiClient) -> None:
    made = await alice.mkdir("/readme")
    r = await alice.patch(f"/api/files/{made['file_id']}", {"path": "/README"})
    assert r.status == 200 and await alice.listdir("/") == ["README"]


async def test_move_onto_existing_name_is_409(alice: ApiClient) -> None:
    a = await alice.mkdir("/a")
    await alice.mkdir("/B")
    r = await alice.patch(f"/api/files/{a['file_id']}", {"path": "/b"})
    assert r.status == 409
    assert sorted(await alice.listdir("/")) == ["B", "a"]


async def test_move_folder_into_itself_is_400_and_changes_nothing(alice: ApiClient) -> None:
    a = await alice.mkdir("/a/b")
    top = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    for dest in ("/a/x", "/a/b/x", "/A/b/new/deeper"):
        r = await alice.patch(f"/api/files/{top['file_id']}", {"path": dest})
        assert r.status == 400 and r.error_code() == "invalid_move", dest
    assert await alice.listdir("/a") == ["b"]
    assert await alice.listdir("/a/b") == []  # no half-created destination folders
    assert a["file_id"]


async def test_trash_restore_and_purge(alice: ApiClient) -> None:
    folder = await alice.mkdir("/Docs/Taxes")
    docs = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    assert (await alice.delete(f"/api/files/{docs['file_id']}")).status == 204
    assert await alice.listdir("/") == []
    trash = (await alice.get("/api/trash")).body["entries"]
    assert [(e["name"], e["path"]) for e in trash] == [("Docs", "/Docs")]
    # A child of a trashed folder is not in the trash list by itself, and is not live.
    r = await alice.patch(f"/api/files/{folder['file_id']}", {"path": "/Taxes"})
    assert r.status == 404
    # The name is free again while the old one sits in the trash.
    await alice.mkdir("/Docs")
    r = await alice.post(f"/api/trash/{docs['file_id']}/restore")
    assert r.status == 200 and r.body["path"] == "/Docs (restored)"
    assert await alice.listdir("/Docs (restored)") == ["Taxes"]
    assert (await alice.get("/api/trash")).body["entries"] == []
    # Purge for good.
    assert (await alice.delete(f"/api/files/{docs['file_id']}")).status == 204
    assert (await alice.delete(f"/api/trash/{docs['file_id']}")).status == 204
    assert (await alice.get(f"/api/files/{folder['file_id']}")).status == 404
    assert (await alice.delete(f"/api/trash/{docs['file_id']}")).status == 404


async def test_restore_recreates_missing_parent(alice: ApiClient) -> None:
    inner = await alice.mkdir("/Outer/Inner")
    outer = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    assert (await alice.delete(f"/api/files/{inner['file_id']}")).status == 204
    assert (await alice.delete(f"/api/files/{outer['file_id']}")).status == 204
    r = await alice.post(f"/api/trash/{inner['file_id']}/restore")
    assert r.status == 200 and r.body["path"] == "/Outer/Inner"
    # Outer itself stays in the trash; a new live Outer holds Inner.
    assert [e["name"] for e in (await alice.get("/api/trash")).body["entries"]] == ["Outer"]


async def test_restore_of_non_trashed_item_is_404(alice: ApiClient) -> None:
    a = await alice.mkdir("/live")
    assert (await alice.post(f"/api/trash/{a['file_id']}/restore")).status == 404
    assert (await alice.delete(f"/api/trash/{a['file_id']}")).status == 404


async def test_root_cannot_be_moved_or_deleted(alice: ApiClient) -> None:
    root_id = (await alice.get("/api/files", params={"path": "/"})).body["file_id"]
    assert (await alice.delete(f"/api/files/{root_id}")).status == 400
    assert (await alice.patch(f"/api/files/{root_id}", {"path": "/x"})).status == 400


async def test_quota_reports_used_and_total(alice: ApiClient, server: RunningServer) -> None:
    r = await alice.get("/api/quota")
    assert r.status == 200
    assert r.body == {"used": 0, "total": server.config.default_quota_bytes}


async def test_other_users_files_are_404_never_403(alice: ApiClient, bob: ApiClient) -> None:
    secret = await alice.mkdir("/Secret")
    fid = secret["file_id"]
    missing = "f_doesnotexist000"
    for fid_ in (fid, missing):
        assert (await bob.get(f"/api/files/{fid_}")).status == 404
        assert (await bob.patch(f"/api/files/{fid_}", {"path": "/mine"})).status == 404
        assert (await bob.delete(f"/api/files/{fid_}")).status == 404
    await alice.delete(f"/api/files/{fid}")
    assert (await bob.post(f"/api/trash/{fid}/restore")).status == 404
    assert (await bob.delete(f"/api/trash/{fid}")).status == 404
    assert (await bob.get("/api/trash")).body["entries"] == []
    # Bob's identical path lives in his own tree.
    await bob.mkdir("/Secret")
    assert (await alice.get("/api/trash")).body["entries"][0]["file_id"] == fid


async def test_restart_keeps_users_devices_and_files(tmp_path, database: dict[str, Any]) -> None:
    from tests.helpers import start_server

    data = tmp_path / "data"
    srv = await start_server(data, **database)
    await srv.register("pat@example.com")
    c = await srv.login("pat@example.com", device="desk")
    await c.mkdir("/Kept/Deep")
    await srv.stop()
    srv = await start_server(data, **database)
    try:
        c2 = await srv.login("pat@example.com", device="desk")
        assert c2.device_id == c.device_id
        assert await c2.listdir("/Kept") == ["Deep"]
        # The old token still works: sessions and the signing key survived.
        c.base_url = srv.url
        c.session = c2.session
        assert (await c.get("/api/files")).status == 200
    finally:
        await srv.stop()


@pytest.mark.parametrize("path", ["/", "/x/"])
async def test_create_root_or_trailing_slash(alice: ApiClient, path: str) -> None:
    r = await alice.post("/api/folders", {"path": path})
    assert (r.status, path) in ((409, "/"), (201, "/x/"))
