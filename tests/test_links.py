"""Links: create, list, revoke; password and expiry; throttling; folder links and paths inside;
download switch; trash and purge; other users; the token never reaches the access log."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driveserver import appkeys
from tests.helpers import ApiClient, RunningServer, upload, wait_for

LINK_PASSWORD = "open sesame 42"


def token_of(url: str) -> str:
    return url.rsplit("/s/", 1)[1]


def in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")


async def make_link(owner: ApiClient, file_id: str, **body: Any) -> tuple[str, dict[str, Any]]:
    r = await owner.post(f"/api/files/{file_id}/links", body)
    assert r.status == 201, r
    return token_of(r.body["url"]), r.body


async def expire(server: RunningServer, link_id: str) -> None:
    """Move a link's expiry into the past, as the clock would (no sleeping)."""
    async with server.app[appkeys.DB].transaction() as tx:
        await tx.execute("UPDATE links SET expires_at = ? WHERE id = ?", (time.time() - 1, link_id))


async def test_create_use_list_and_revoke(server: RunningServer, alice: ApiClient) -> None:
    done = await upload(alice, "/Docs/report.txt", b"quarterly numbers")
    token, body = await make_link(alice, done["file_id"])
    assert body["url"] == f"{server.url}/s/{token}" and len(token) >= 32
    assert body["has_password"] is False and body["allow_download"] is True
    assert body["expires_at"] is None and body["file_id"] == done["file_id"]

    anon = server.anonymous()
    r = await anon.get(f"/s/{token}")
    assert r.status == 200, r
    assert r.body == {"name": "report.txt", "is_directory": False, "size": 17,
                      "modified_at": r.body["modified_at"], "path": "/", "allow_download": True,
                      "expires_at": None, "has_password": False}
    assert r.headers["Referrer-Policy"] == "no-referrer"
    r = await anon.get(f"/s/{token}/content")
    assert r.status == 200 and r.body == b"quarterly numbers"
    assert "filename*=UTF-8''report.txt" in r.headers["Content-Disposition"]

    # Only the token's hash is stored, and the owner's list never shows a token.
    rows = await server.app[appkeys.DB].fetchall("SELECT * FROM links")
    assert len(rows) == 1 and rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(v) for v in tuple(rows[0]))
    r = await alice.get(f"/api/files/{done['file_id']}/links")
    assert r.status == 200
    assert [link["link_id"] for link in r.body["links"]] == [body["link_id"]]
    assert r.body["links"][0]["expired"] is False and token not in json.dumps(r.body)

    r = await alice.delete(f"/api/links/{body['link_id']}")
    assert r.status == 204
    for path in (f"/s/{token}", f"/s/{token}/content"):
        r = await anon.get(path)
        assert r.status == 404 and r.error_code() == "link_not_found"
    r = await alice.delete(f"/api/links/{body['link_id']}")
    assert r.status == 404
    r = await alice.get(f"/api/files/{done['file_id']}/links")
    assert r.status == 200 and r.body["links"] == []


async def test_password_and_expiry(server: RunningServer, alice: ApiClient) -> None:
    """Acceptance: works before expiry with the password; refused without it and after expiry."""
    done = await upload(alice, "/tax.pdf", b"%PDF secret")
    token, body = await make_link(alice, done["file_id"], password=LINK_PASSWORD,
                                  expires_at=in_an_hour())
    assert body["has_password"] is True and body["expires_at"].endswith("Z")
    anon = server.anonymous()

    for path in (f"/s/{token}", f"/s/{token}/content"):  # without the password
        r = await anon.get(path)
        assert r.status == 401 and r.error_code() == "password_required"
    r = await anon.post(f"/s/{token}/unlock", {"password": "not the password"})
    assert r.status == 403 and r.error_code() == "wrong_password"
    r = await anon.post(f"/s/{token}/unlock", {"password": LINK_PASSWORD})
    assert r.status == 200 and r.body["expires_in"] == 3600
    access = r.body["access_token"]

    r = await anon.get(f"/s/{token}", headers={"X-Link-Access": access})
    assert r.status == 200 and r.body["name"] == "tax.pdf" and r.body["has_password"] is True
    r = await anon.get(f"/s/{token}/content", params={"access": access})
    assert r.status == 200 and r.body == b"%PDF secret"

    await expire(server, body["link_id"])
    for path in (f"/s/{token}", f"/s/{token}/content"):  # after expiry, even with the password
        r = await anon.get(path, headers={"X-Link-Access": access})
        assert r.status == 410 and r.error_code() == "link_expired"
    r = await anon.post(f"/s/{token}/unlock", {"password": LINK_PASSWORD})
    assert r.status == 410 and r.error_code() == "link_expired"
    r = await alice.get(f"/api/files/{done['file_id']}/links")
    assert r.status == 200 and r.body["links"][0]["expired"] is True


async def test_wrong_passwords_are_throttled(server: RunningServer, alice: ApiClient) -> None:
    done = await upload(alice, "/f.txt", b"x")
    token, _ = await make_link(alice, done["file_id"], password=LINK_PASSWORD)
    anon = server.anonymous()
    for _ in range(3):
        r = await anon.post(f"/s/{token}/unlock", {"password": "guess guess"})
        assert r.status == 403 and r.error_code() == "wrong_password"
    r = await anon.post(f"/s/{token}/unlock", {"password": "guess guess"})
    assert r.status == 429 and r.error_code() == "too_many_requests"
    assert int(r.headers["Retry-After"]) >= 1
    r = await anon.post(f"/s/{token}/unlock", {"password": LINK_PASSWORD})  # even the right one
    assert r.status == 429
    # Link failures have their own keys: the same address can still log in.
    await server.login("alice@example.com")


async def test_access_tokens_are_bound_to_their_link(server: RunningServer,
                                                     alice: ApiClient) -> None:
    a = await upload(alice, "/a.txt", b"a")
    b = await upload(alice, "/b.txt", b"b")
    token_a, _ = await make_link(alice, a["file_id"], password=LINK_PASSWORD)
    token_b, _ = await make_link(alice, b["file_id"], password=LINK_PASSWORD)
    anon = server.anonymous()
    r = await anon.post(f"/s/{token_a}/unlock", {"password": LINK_PASSWORD})
    assert r.status == 200
    access_a = r.body["access_token"]
    for forged in (access_a, access_a[:-2] + "xx", alice.token or "", "nonsense"):
        r = await anon.get(f"/s/{token_b}", headers={"X-Link-Access": forged})
        assert r.status == 401 and r.error_code() == "password_required", forged
    r = await anon.post(f"/s/{token_a}/unlock", {})
    assert r.status == 400 and r.error_code() == "missing_field"


async def test_unknown_token_is_404(server: RunningServer) -> None:
    anon = server.anonymous()
    for method, path in (("GET", "/s/nope"), ("GET", "/s/nope/content"),
                         ("POST", "/s/nope/unlock")):
        r = await anon.call(method, path, json={"password": LINK_PASSWORD})
        assert r.status == 404 and r.error_code() == "link_not_found", (method, path)


async def test_download_can_be_turned_off(server: RunningServer, alice: ApiClient) -> None:
    done = await upload(alice, "/view-only.txt", b"look, don't take")
    token, body = await make_link(alice, done["file_id"], allow_download=False)
    assert body["allow_download"] is False
    anon = server.anonymous()
    r = await anon.get(f"/s/{token}")
    assert r.status == 200 and r.body["allow_download"] is False and r.body["size"] == 16
    r = await anon.get(f"/s/{token}/content")
    assert r.status == 403 and r.error_code() == "download_not_allowed"


async def test_folder_link_paths_stay_inside(server: RunningServer, alice: ApiClient) -> None:
    await upload(alice, "/Share/a.txt", b"A" * 100)
    await upload(alice, "/Share/sub/file.txt", b"inner file")
    await upload(alice, "/Share/z.txt", b"Z")
    await upload(alice, "/Outside.txt", b"not shared")
    folder = (await alice.get("/api/files", params={"path": "/Share"})).body["file_id"]
    token, _ = await make_link(alice, folder)
    anon = server.anonymous()

    r = await anon.get(f"/s/{token}")
    assert r.status == 200 and r.body["is_directory"] is True and r.body["name"] == "Share"
    assert [e["name"] for e in r.body["entries"]] == ["a.txt", "sub", "z.txt"]
    assert r.body["has_more"] is False and "file_id" not in r.body["entries"][0]
    r = await anon.get(f"/s/{token}", params={"limit": "2"})
    assert r.status == 200 and r.body["has_more"] is True
    r = await anon.get(f"/s/{token}", params={"limit": "2", "cursor": r.body["next_cursor"]})
    assert r.status == 200 and [e["name"] for e in r.body["entries"]] == ["z.txt"]
    r = await anon.get(f"/s/{token}", params={"cursor": "%%%"})
    assert r.status == 400 and r.error_code() == "invalid_query"
    r = await anon.get(f"/s/{token}", params={"path": "/sub"})
    assert r.status == 200 and r.body["path"] == "/sub"
    assert [e["name"] for e in r.body["entries"]] == ["file.txt"]

    r = await anon.get(f"/s/{token}/content", params={"path": "/sub/file.txt"})
    assert r.status == 200 and r.body == b"inner file"
    r = await anon.get(f"/s/{token}/content", params={"path": "/a.txt"},
                       headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == b"A" * 10
    assert r.headers["Content-Range"] == "bytes 10-19/100"
    r2 = await anon.get(f"/s/{token}/content", params={"path": "/a.txt"},
                        headers={"If-None-Match": r.headers["ETag"]})
    assert r2.status == 304

    for escape in ("/../Outside.txt", "/sub/../../Outside.txt", "/./a.txt", "sub/file.txt", ""):
        for route in (f"/s/{token}", f"/s/{token}/content"):
            r = await anon.get(route, params={"path": escape})
            assert r.status == 400, (escape, route, r)
    for missing in ("/Outside.txt", "/nope", "/a.txt/x"):
        r = await anon.get(f"/s/{token}/content", params={"path": missing})
        assert r.status == 404 and r.error_code() == "not_found", missing
    r = await anon.get(f"/s/{token}/content")
    assert r.status == 400 and r.error_code() == "not_a_file"
    r = await anon.get(f"/s/{token}/content", params={"path": "/sub"})
    assert r.status == 400 and r.error_code() == "not_a_file"

    # Trashed items inside the folder disappear from the link at once.
    a_id = (await alice.get("/api/files", params={"path": "/Share"})).body["entries"][0]["file_id"]
    assert (await alice.delete(f"/api/files/{a_id}")).status == 204
    r = await anon.get(f"/s/{token}")
    assert r.status == 200 and [e["name"] for e in r.body["entries"]] == ["sub", "z.txt"]
    r = await anon.get(f"/s/{token}/content", params={"path": "/a.txt"})
    assert r.status == 404


async def test_file_link_has_no_paths_inside(server: RunningServer, alice: ApiClient) -> None:
    done = await upload(alice, "/one.txt", b"one file")
    token, _ = await make_link(alice, done["file_id"])
    r = await server.anonymous().get(f"/s/{token}/content", params={"path": "/x"})
    assert r.status == 400 and r.error_code() == "not_a_folder"
    r = await server.anonymous().get(f"/s/{token}/content", params={"path": "/"})
    assert r.status == 200 and r.body == b"one file"


async def test_trash_and_purge_end_links(server: RunningServer, alice: ApiClient) -> None:
    done = await upload(alice, "/Folder/doc.txt", b"doc")
    folder = (await alice.get("/api/files", params={"path": "/Folder"})).body["file_id"]
    file_token, _ = await make_link(alice, done["file_id"])
    folder_token, _ = await make_link(alice, folder)
    anon = server.anonymous()
    assert (await anon.get(f"/s/{file_token}/content")).status == 200

    assert (await alice.delete(f"/api/files/{folder}")).status == 204  # trashes the file too
    for path in (f"/s/{file_token}", f"/s/{file_token}/content", f"/s/{folder_token}"):
        r = await anon.get(path)
        assert r.status == 404 and r.error_code() == "link_not_found", path
    r = await alice.post(f"/api/files/{done['file_id']}/links", {})
    assert r.status == 404

    assert (await alice.delete(f"/api/trash/{folder}")).status == 204
    count = await server.app[appkeys.DB].fetchval("SELECT COUNT(*) FROM links")
    assert count == 0
    r = await anon.get(f"/s/{folder_token}")
    assert r.status == 404 and r.error_code() == "link_not_found"


async def test_others_cannot_create_list_or_revoke(server: RunningServer, alice: ApiClient,
                                                   bob: ApiClient) -> None:
    done = await upload(alice, "/mine.txt", b"alice's")
    fid = done["file_id"]
    token, body = await make_link(alice, fid)
    assert (await bob.post(f"/api/files/{fid}/links", {})).status == 404
    assert (await bob.get(f"/api/files/{fid}/links")).status == 404
    assert (await bob.delete(f"/api/links/{body['link_id']}")).status == 404
    assert (await bob.delete("/api/links/l_nonexistent")).status == 404
    anon = server.anonymous()
    assert (await anon.post(f"/api/files/{fid}/links", {})).status == 401
    assert (await anon.delete(f"/api/links/{body['link_id']}")).status == 401

    # Someone the file is shared with (edit) still may not make or revoke links: only the owner.
    async with server.app[appkeys.DB].transaction() as tx:
        await tx.execute(
            "INSERT INTO shares (id, file_id, grantee_id, permission, created_by, created_at)"
            " VALUES ('s_test', ?, ?, 'edit', ?, ?)", (fid, bob.user_id, alice.user_id, tx.now))
    r = await bob.post(f"/api/files/{fid}/links", {})
    assert r.status == 403 and r.error_code() == "forbidden"
    assert (await bob.get(f"/api/files/{fid}/links")).status == 403
    assert (await bob.delete(f"/api/links/{body['link_id']}")).status == 404
    r = await anon.get(f"/s/{token}/content")
    assert r.status == 200 and r.body == b"alice's"


@pytest.mark.parametrize("body, code", [
    ({"expires_at": "2001-01-01T00:00:00Z"}, "invalid_field"),
    ({"expires_at": "2099-01-01T00:00:00"}, "invalid_field"),  # naive: refused, not guessed
    ({"expires_at": "2099-01-01"}, "invalid_field"),
    ({"expires_at": "next tuesday"}, "invalid_field"),
    ({"expires_at": 4102444800}, "invalid_field"),
    ({"password": "short"}, "weak_password"),
    ({"password": "x" * 1025}, "invalid_field"),
    ({"password": 12345678}, "invalid_field"),
    ({"allow_download": "yes"}, "invalid_field"),
])
async def test_create_rejects_bad_input(alice: ApiClient, body: dict[str, Any],
                                        code: str) -> None:
    done = await upload(alice, "/f.txt", b"f")
    r = await alice.post(f"/api/files/{done['file_id']}/links", body)
    assert r.status == 400 and r.error_code() == code, r


async def test_create_accepts_offsets_and_unknown_file_is_404(alice: ApiClient) -> None:
    done = await upload(alice, "/f.txt", b"f")
    later = datetime.now(UTC) + timedelta(days=2)
    offset = later.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"
    r = await alice.post(f"/api/files/{done['file_id']}/links", {"expires_at": offset})
    assert r.status == 201 and r.body["expires_at"].endswith("Z")
    r = await alice.post("/api/files/f_missing/links", {})
    assert r.status == 404
    r = await alice.post(f"/api/files/{done['file_id']}/links", data=b"{not json",
                         headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.error_code() == "invalid_json"


async def test_access_log_never_holds_the_token(server: RunningServer, alice: ApiClient,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="driveserver.access")
    done = await upload(alice, "/f.txt", b"f")
    token, _ = await make_link(alice, done["file_id"], password=LINK_PASSWORD)
    anon = server.anonymous()
    r = await anon.post(f"/s/{token}/unlock", {"password": LINK_PASSWORD})
    access = r.body["access_token"]
    await anon.get(f"/s/{token}/content", params={"access": access})
    await anon.get(f"//s/{token}")

    def logged() -> list[str]:
        return [rec.getMessage() for rec in caplog.records if rec.name == "driveserver.access"]

    await wait_for(lambda: sum("/s/<redacted>" in m for m in logged()) >= 3, what="access log")
    paths = [json.loads(m)["path"] for m in logged()]
    assert "/s/<redacted>/unlock" in paths and "/s/<redacted>/content" in paths
    assert all(token not in m and access not in m for m in logged())


def zip_names(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {n: archive.read(n) for n in archive.namelist()}


async def test_a_folder_link_downloads_as_a_zip_of_what_is_inside_only(
        server: RunningServer, alice: ApiClient) -> None:
    await upload(alice, "/Share/a.txt", b"A")
    await upload(alice, "/Share/sub/file.txt", b"inner file")
    gone = await upload(alice, "/Share/gone.txt", b"trashed")
    await upload(alice, "/Outside.txt", b"not shared")
    assert (await alice.delete(f"/api/files/{gone['file_id']}")).status == 204
    folder = (await alice.get("/api/files", params={"path": "/Share"})).body["file_id"]
    token, _ = await make_link(alice, folder, password=LINK_PASSWORD)
    anon = server.anonymous()

    r = await anon.get(f"/s/{token}/zip")
    assert r.status == 401 and r.error_code() == "password_required"
    unlocked = await anon.post(f"/s/{token}/unlock", {"password": LINK_PASSWORD})
    access = unlocked.body["access_token"]
    r = await anon.get(f"/s/{token}/zip", params={"access": access})
    assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
    assert 'filename="Share.zip"' in r.headers["Content-Disposition"]
    assert r.headers["Cache-Control"] == "private, no-store"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert zip_names(r.body) == {"Share/": b"", "Share/sub/": b"", "Share/a.txt": b"A",
                                 "Share/sub/file.txt": b"inner file"}
    r = await anon.get(f"/s/{token}/zip", params={"access": access, "path": "/sub"})
    assert r.status == 200 and zip_names(r.body) == {"sub/": b"", "sub/file.txt": b"inner file"}
    for escape in ("/../Outside.txt", "/.."):
        r = await anon.get(f"/s/{token}/zip", params={"access": access, "path": escape})
        assert r.status == 400, escape
    r = await anon.get(f"/s/{token}/zip", params={"access": access, "path": "/a.txt"})
    assert r.status == 400 and r.error_code() == "not_a_folder"


async def test_a_link_zip_obeys_the_download_switch_and_is_for_folders(
        server: RunningServer, alice: ApiClient) -> None:
    await upload(alice, "/Look/a.txt", b"look only")
    folder = (await alice.get("/api/files", params={"path": "/Look"})).body["file_id"]
    token, _ = await make_link(alice, folder, allow_download=False)
    r = await server.anonymous().get(f"/s/{token}/zip")
    assert r.status == 403 and r.error_code() == "download_not_allowed"
    doc = await upload(alice, "/doc.txt", b"a file")
    token, _ = await make_link(alice, doc["file_id"])
    r = await server.anonymous().get(f"/s/{token}/zip")
    assert r.status == 400 and r.error_code() == "not_a_folder"
    r = await server.anonymous().get("/s/not-a-token/zip")
    assert r.status == 404 and r.error_code() == "link_not_found"
