"""``GET /api/search``: by substring and letter case, live items only, shared items under the
recipient's mount path, never another user's, paged, bounded input; and the query plan that
keeps it from scanning ``files``."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from driveserver.meta import search
from driveserver.meta.migrations import MIGRATIONS
from tests.helpers import ApiClient, upload


async def find(client: ApiClient, q: str, **params: Any) -> list[tuple[str, str]]:
    """(name, path) of every hit for ``q``, all pages."""
    out: list[tuple[str, str]] = []
    cursor = None
    while True:
        query = {"q": q, **params, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/search", params=query)
        assert r.status == 200, r
        out += [(e["name"], e["path"]) for e in r.body["entries"]]
        if not r.body["has_more"]:
            return out
        cursor = r.body["next_cursor"]


async def share(owner: ApiClient, file_id: str, email: str, permission: str = "view") -> None:
    r = await owner.post(f"/api/files/{file_id}/share", {"user_email": email,
                                                         "permission": permission})
    assert r.status == 201, r


async def test_finds_by_substring_in_any_letter_case(alice: ApiClient) -> None:
    await alice.mkdir("/Work/Quarterly Reports")
    await upload(alice, "/Work/Quarterly Reports/Q3 REPORT final.PDF", b"pdf")
    await upload(alice, "/notes.txt", b"n")
    await upload(alice, "/Straße.md", b"s")
    r = await alice.get("/api/search", params={"q": "rEpOrT"})
    assert r.status == 200, r
    hits = {(e["name"], e["path"], e["is_directory"]) for e in r.body["entries"]}
    assert hits == {("Quarterly Reports", "/Work/Quarterly Reports", True),
                    ("Q3 REPORT final.PDF", "/Work/Quarterly Reports/Q3 REPORT final.PDF",
                     False)}
    entry = next(e for e in r.body["entries"] if not e["is_directory"])
    assert entry["size"] == 3 and entry["version"] == 1 and entry["permission"] == "owner"
    assert set(entry) >= {"file_id", "checksum", "modified_at", "executable", "symlink"}
    assert await find(alice, ".pdf") == [("Q3 REPORT final.PDF",
                                          "/Work/Quarterly Reports/Q3 REPORT final.PDF")]
    # Folded like names are: "STRASSE" finds "Straße"; short needles (no trigram) work too.
    assert await find(alice, "STRASSE") == [("Straße.md", "/Straße.md")]
    assert {n for n, _ in await find(alice, "q")} == {"Quarterly Reports", "Q3 REPORT final.PDF"}
    assert await find(alice, "nothing like it") == []
    # A quote, FTS syntax and LIKE's wildcards are taken literally.
    await upload(alice, '/say "hi" 100%_done (x) OR y*.txt', b"q")
    assert [n for n, _ in await find(alice, '"hi"')] == ['say "hi" 100%_done (x) OR y*.txt']
    assert [n for n, _ in await find(alice, "%_")] == ['say "hi" 100%_done (x) OR y*.txt']
    assert await find(alice, "0%x") == []
    assert [n for n, _ in await find(alice, ") or y*")] == ['say "hi" 100%_done (x) OR y*.txt']


async def test_renamed_moved_and_trashed_items(alice: ApiClient) -> None:
    a = await upload(alice, "/draft-one.txt", b"1")
    b = await upload(alice, "/Old/draft-two.txt", b"2")
    folder = await alice.mkdir("/Drafts folder")
    await upload(alice, "/Drafts folder/inside.txt", b"3")
    r = await alice.patch(f"/api/files/{a['file_id']}", {"path": "/Final/renamed.txt"})
    assert r.status == 200, r
    assert {n for n, _ in await find(alice, "draft")} == {"draft-two.txt", "Drafts folder"}
    assert await find(alice, "renamed") == [("renamed.txt", "/Final/renamed.txt")]
    # Trashing an item (or its folder) takes it out; restoring brings it back.
    assert (await alice.delete(f"/api/files/{b['file_id']}")).status == 204
    assert (await alice.delete(f"/api/files/{folder['file_id']}")).status == 204
    assert await find(alice, "draft") == []
    assert await find(alice, "inside") == []
    r = await alice.post(f"/api/trash/{folder['file_id']}/restore")
    assert r.status == 200, r
    assert await find(alice, "inside") == [("inside.txt", "/Drafts folder/inside.txt")]
    # Purged for good: gone from the index too.
    assert (await alice.delete(f"/api/trash/{b['file_id']}")).status == 204
    assert await find(alice, "draft-two") == []


async def test_pending_first_upload_is_not_found(alice: ApiClient) -> None:
    r = await alice.post("/api/files/upload-init", {"path": "/pending-file.bin", "size": 10})
    assert r.status == 200, r
    assert await find(alice, "pending") == []


async def test_shared_items_found_by_recipient_under_mount_path(alice: ApiClient,
                                                               bob: ApiClient) -> None:
    proj = await alice.mkdir("/Work/Secret Project")
    await upload(alice, "/Work/Secret Project/plan budget.xlsx", b"x")
    await upload(alice, "/Work/private budget.xlsx", b"y")  # not shared
    await share(alice, proj["file_id"], "bob@example.com")
    hits = await find(bob, "budget")
    assert hits == [("plan budget.xlsx", "/Shared with me/Secret Project/plan budget.xlsx")]
    r = await bob.get("/api/search", params={"q": "budget"})
    assert r.body["entries"][0]["permission"] == "view"
    # The shared folder itself, by the name bob sees it by; its owner finds it in place.
    assert await find(bob, "secret") == [("Secret Project", "/Shared with me/Secret Project")]
    assert set(await find(alice, "budget")) == {
        ("plan budget.xlsx", "/Work/Secret Project/plan budget.xlsx"),
        ("private budget.xlsx", "/Work/private budget.xlsx")}
    # Bob adds a file of his own to the shared folder (edit), and his own drive has one too.
    await upload(bob, "/my budget.txt", b"b")
    assert await find(alice, "my budget") == []
    # Once the share is revoked, bob finds nothing of alice's.
    r = await alice.get(f"/api/files/{proj['file_id']}/shares")
    share_id = r.body["shares"][0]["share_id"]
    assert (await alice.delete(f"/api/shares/{share_id}")).status == 204
    assert await find(bob, "budget") == [("my budget.txt", "/my budget.txt")]
    assert await find(bob, "secret") == []


async def test_another_users_items_are_never_found(alice: ApiClient, bob: ApiClient) -> None:
    await alice.mkdir("/Alice Only zq7")
    await upload(alice, "/Alice Only zq7/medical-records-zq7.pdf", b"m")
    await upload(alice, "/xk.txt", b"k")
    # Every substring bob could guess, long or short, the exact name, ids: nothing, no hint.
    name = "medical-records-zq7.pdf"
    guesses = {name, name.upper(), "zq7", "z", "xk", "medical", "Alice Only"} | {
        name[i: i + 4] for i in range(len(name) - 3)}
    for guess in sorted(guesses):
        r = await bob.get("/api/search", params={"q": guess})
        assert r.status == 200, (guess, r)
        assert r.body["entries"] == [] and r.body["has_more"] is False, (guess, r.body)
    assert await find(alice, "zq7") == [
        ("medical-records-zq7.pdf", "/Alice Only zq7/medical-records-zq7.pdf"),
        ("Alice Only zq7", "/Alice Only zq7")]


@pytest.mark.parametrize("q", ["ab", "file"])  # the short-needle scan and the index
async def test_paging_newest_first(alice: ApiClient, q: str) -> None:
    for i in range(7):
        await upload(alice, f"/dir{i % 2}/ab file {i}.txt", b"%d" % i)
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        params = {"q": q, "limit": "3", **({"cursor": cursor} if cursor else {})}
        r = await alice.get("/api/search", params=params)
        assert r.status == 200, r
        seen += [e["name"] for e in r.body["entries"]]
        if not r.body["has_more"]:
            assert "next_cursor" not in r.body
            break
        assert len(r.body["entries"]) == 3
        cursor = r.body["next_cursor"]
    assert seen == [f"ab file {i}.txt" for i in reversed(range(7))]


@pytest.mark.parametrize("params, field", [
    ({}, "q"), ({"q": ""}, "q"), ({"q": "   "}, "q"), ({"q": "x" * 201}, "q"),
    ({"q": "a\x00b"}, "q"), ({"q": "a\nb"}, "q"),
    ({"q": "ok", "limit": "0"}, "limit"), ({"q": "ok", "limit": "201"}, "limit"),
    ({"q": "ok", "limit": "ten"}, "limit"), ({"q": "ok", "cursor": "-3"}, "cursor"),
    ({"q": "ok", "cursor": "abc"}, "cursor"),
])
async def test_bad_query_or_limit_is_400(alice: ApiClient, params: dict[str, str],
                                         field: str) -> None:
    r = await alice.get("/api/search", params=params)
    assert r.status == 400, r
    assert r.body["error"]["code"] == "invalid_query" and r.body["error"]["field"] == field


async def test_bounds_that_pass(alice: ApiClient) -> None:
    await upload(alice, "/" + "y" * 200 + ".txt", b"y")
    assert len(await find(alice, "y" * 200, limit="200")) == 1
    r = await alice.get("/api/search", params={"q": "y", "limit": "1"})
    assert r.status == 200 and len(r.body["entries"]) == 1


async def test_needs_a_session(alice: ApiClient) -> None:
    import aiohttp
    async with aiohttp.ClientSession() as s, \
            s.get(alice.base_url + "/api/search", params={"q": "x"}) as resp:
        assert resp.status == 401


def _plan(sql: str, params: list[Any]) -> list[str]:
    return [row[3] for row in _migrated().execute("EXPLAIN QUERY PLAN " + sql, params)]


def test_indexed_search_reads_only_the_askers_key_ranges_and_never_scans_files() -> None:
    """Each owner's part starts from the trigram index within its key range (the ``>`` and
    ``<`` of the plan's index string) and reaches ``files`` by primary key only: no ``SCAN
    files`` and no sort (the index's key order is the page order)."""
    sql = " UNION ALL ".join([search._INDEXED_PART.format(marks="?,?")] * 2)
    phrase = search.fts_phrase("report")
    plan = _plan(sql, [phrase, 1 << 40, 2 << 40, "w1", "w2", 51,
                       phrase, 3 << 40, 4 << 40, "w3", "w4", 51])
    scans = [line for line in plan
             if line.startswith("SCAN") and not line.startswith("SCAN (subquery")]
    assert scans and all("file_names VIRTUAL TABLE INDEX" in line and "><" in line
                          for line in scans), plan
    assert any("SEARCH f USING INDEX sqlite_autoindex_files_1" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan


def test_short_needle_walks_only_the_askers_key_ranges() -> None:
    plan = _plan(search._SHORT_PART.format(marks="?"), [1 << 40, 2 << 40, "%ab%", "w1", 51])
    assert not any(line.startswith("SCAN") for line in plan), plan
    assert any("SEARCH k USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in line
               for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan


def _migrated(upto: int | None = None) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    for script in MIGRATIONS[:upto]:
        for statement in script.split(";\n"):
            if statement.strip():
                db.execute(statement)
    return db


def _add(db: sqlite3.Connection, table: str, **row: Any) -> None:
    db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
               tuple(row.values()))


def _user(db: sqlite3.Connection, uid: str) -> None:
    _add(db, "users", id=uid, email=uid, email_key=uid, password_hash="h", quota_bytes=1,
         workspace_id="w" + uid, created_at=0)
    _add(db, "workspaces", id="w" + uid, owner_id=uid, kind="personal", root_id="r" + uid,
         created_at=0)
    _file(db, "r" + uid, "w" + uid, None, "")


def _file(db: sqlite3.Connection, fid: str, ws: str, parent: str | None, name: str) -> None:
    _add(db, "files", id=fid, workspace_id=ws, parent_id=parent, name=name,
         name_key=search.fold(name), is_directory=0, version=1, created_at=0, modified_at=0)


def _hits(db: sqlite3.Connection, needle: str) -> dict[str, int]:
    """file id -> owner number in its index key, for each index entry containing ``needle``."""
    return {r[0]: r[1] >> search.SEQ_BITS for r in db.execute(
        "SELECT k.file_id, k.n FROM file_names JOIN file_search_keys k ON k.n = file_names.rowid"
        " WHERE file_names MATCH ?", (search.fts_phrase(needle),))}


def test_the_migration_indexes_existing_items_and_the_triggers_keep_it_current() -> None:
    db = _migrated(9)  # a database from before search
    _user(db, "u1")
    _file(db, "old", "wu1", "ru1", "Report from before.pdf")
    for statement in MIGRATIONS[9].split(";\n"):
        if statement.strip():
            db.execute(statement)
    assert _hits(db, "report") == {"old": 1}
    _user(db, "u2")
    _file(db, "new", "wu2", "ru2", "Another REPORT.txt")
    assert _hits(db, "report") == {"old": 1, "new": 2}
    db.execute("UPDATE files SET name = 'minutes', name_key = 'minutes' WHERE id = 'old'")
    assert _hits(db, "report") == {"new": 2} and _hits(db, "minute") == {"old": 1}
    # A workspace of the same owner (sharing a folder): the key stays; another owner's: re-keyed.
    _add(db, "workspaces", id="ws1", owner_id="u1", kind="shared", root_id="ru1", created_at=0)
    before = db.execute("SELECT n FROM file_search_keys WHERE file_id = 'old'").fetchone()
    db.execute("UPDATE files SET workspace_id = 'ws1' WHERE id = 'old'")
    assert db.execute("SELECT n FROM file_search_keys WHERE file_id = 'old'").fetchone() == before
    db.execute("UPDATE files SET workspace_id = 'wu2' WHERE id = 'old'")
    assert _hits(db, "minute") == {"old": 2}
    db.execute("DELETE FROM files WHERE id = 'new'")
    assert _hits(db, "report") == {}
    assert db.execute("SELECT COUNT(*) FROM file_search_keys").fetchone()[0] == 3  # 2 roots, old
    db.execute("INSERT INTO file_names (file_names) VALUES ('integrity-check')")
