"""WebDAV behaviours litmus does not look at (issue 16): refusals (infinite depth, hostile or
oversized XML, view-only shares, quota), the trash, ranges, COPY without new bytes, locks
that expire, and a PUT cut off halfway leaving nothing behind."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from driveserver import appkeys
from tests.dav_helpers import DAV_NS, DavClient, dav_user
from tests.helpers import RunningServer, wait_for

PROPS = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/>'
         "<D:resourcetype/><D:quota-used-bytes/><D:quota-available-bytes/></D:prop>"
         "</D:propfind>")


async def test_infinite_depth_is_refused_with_the_precondition(server: RunningServer) -> None:
    _, dav = await dav_user(server)
    for headers in ({"Depth": "infinity"}, {}):
        r = await dav.call("PROPFIND", "/dav/", None, headers)
        assert r.status == 403
        assert r.xml().find(f"{DAV_NS}propfind-finite-depth") is not None


async def test_hostile_and_oversized_xml_is_refused(server: RunningServer) -> None:
    _, dav = await dav_user(server)
    bomb = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            '<D:propfind xmlns:D="DAV:"><D:prop><x>&b;</x></D:prop></D:propfind>')
    assert (await dav.propfind("/dav/", "0", bomb)).status == 400
    external = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                '<D:propfind xmlns:D="DAV:"><D:prop><x>&e;</x></D:prop></D:propfind>')
    assert (await dav.propfind("/dav/", "0", external)).status == 400
    assert (await dav.propfind("/dav/", "0", "<D:propfind xmlns:D='DAV:'>")).status == 400
    big = '<D:propfind xmlns:D="DAV:"><D:prop>' + "<x/>" * 300_000 + "</D:prop></D:propfind>"
    assert (await dav.propfind("/dav/", "0", big)).status == 413
    many = ('<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>' +
            "".join(f"<p{i}>v</p{i}>" for i in range(2000)) + "</D:prop></D:set>"
            "</D:propertyupdate>")
    assert (await dav.call("PUT", "/dav/a.txt", b"a")).status == 201
    assert (await dav.call("PROPPATCH", "/dav/a.txt", many)).status == 413
    r = await dav.propfind("/dav/a.txt", "0", '<D:propfind xmlns:D="DAV:"><D:propname/>'
                                              "</D:propfind>")
    assert r.status == 207 and b"p1" not in r.body  # nothing of the refused update was kept


async def test_listing_properties_quota_range_and_head(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    data = os.urandom(100_000)
    assert (await dav.call("MKCOL", "/dav/docs")).status == 201
    assert (await dav.call("PUT", "/dav/docs/blob.bin", data)).status == 201
    r = await dav.propfind("/dav/docs/", "1", PROPS)
    assert r.status == 207
    assert r.hrefs() == ["/dav/docs/", "/dav/docs/blob.bin"]
    # What an item does not have comes back empty in a 404 propstat (a folder's length, a
    # file's quota).
    lengths = [e.text for e in r.xml().iter(f"{DAV_NS}getcontentlength") if e.text]
    assert lengths == ["100000"]
    used = [int(e.text) for e in r.xml().iter(f"{DAV_NS}quota-used-bytes") if e.text]
    assert used == [100_000]
    quota = (await api.get("/api/quota")).body
    avail = [int(e.text) for e in r.xml().iter(f"{DAV_NS}quota-available-bytes") if e.text]
    assert avail == [quota["total"] - quota["used"]]
    part = await dav.call("GET", "/dav/docs/blob.bin", None, {"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == data[10:20]
    head = await dav.call("HEAD", "/dav/docs/blob.bin")
    assert head.status == 200 and head.body == b"" and head.headers["Content-Length"] == "100000"
    assert part.headers["ETag"] == head.headers["ETag"]  # GET, HEAD and PROPFIND agree
    listed = (await dav.propfind("/dav/docs/blob.bin", "0")).xml()
    assert listed.find(f".//{DAV_NS}getetag").text == head.headers["ETag"]  # type: ignore[union-attr]
    again = await dav.call("GET", "/dav/docs/blob.bin", None,
                           {"If-None-Match": head.headers["ETag"]})
    assert again.status == 304
    resumed = await dav.call("GET", "/dav/docs/blob.bin", None,
                             {"Range": "bytes=99990-", "If-Range": head.headers["ETag"]})
    assert resumed.status == 206 and resumed.body == data[99990:]
    changed = await dav.call("GET", "/dav/docs/blob.bin", None,
                             {"Range": "bytes=99990-", "If-Range": '"something else"'})
    assert changed.status == 200 and changed.body == data


async def test_delete_goes_to_the_trash_and_copy_stores_no_new_blocks(
        server: RunningServer) -> None:
    api, dav = await dav_user(server)
    data = os.urandom(6 * 1024 * 1024)
    assert (await dav.call("PUT", "/dav/big.bin", data)).status == 201
    db = server.app[appkeys.DB]
    blocks = await db.fetchval("SELECT COUNT(*) FROM blocks")
    r = await dav.call("COPY", "/dav/big.bin", None,
                       {"Destination": f"{server.url}/dav/copy.bin"})
    assert r.status == 201
    assert await db.fetchval("SELECT COUNT(*) FROM blocks") == blocks
    assert (await dav.call("GET", "/dav/copy.bin")).body == data
    assert (await dav.call("DELETE", "/dav/big.bin")).status == 204
    assert (await dav.call("GET", "/dav/big.bin")).status == 404
    trash = (await api.get("/api/trash")).body["entries"]
    assert [e["name"] for e in trash] == ["big.bin"]


async def test_view_only_share_reads_but_every_write_is_403(server: RunningServer) -> None:
    alice, adav = await dav_user(server)
    bob, bdav = await dav_user(server, "bob@example.com")
    folder = await alice.mkdir("/Photos")
    assert (await adav.call("PUT", "/dav/Photos/cat.jpg", b"meow")).status == 201
    r = await alice.post(f"/api/files/{folder['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "view"})
    assert r.status in (200, 201), r
    listing = await bdav.propfind("/dav/", "1")
    assert "/dav/Shared%20with%20me/" in listing.hrefs()
    mounts = await bdav.propfind("/dav/Shared%20with%20me/", "1")
    assert "/dav/Shared%20with%20me/Photos/" in mounts.hrefs()
    base = "/dav/Shared%20with%20me/Photos"
    assert (await bdav.call("GET", f"{base}/cat.jpg")).body == b"meow"
    assert (await bdav.call("PUT", f"{base}/cat.jpg", b"woof")).status == 403
    assert (await bdav.call("PUT", f"{base}/dog.jpg", b"woof")).status == 403
    assert (await bdav.call("DELETE", f"{base}/cat.jpg")).status == 403
    assert (await bdav.call("MKCOL", f"{base}/new")).status == 403
    assert (await bdav.call("LOCK", f"{base}/cat.jpg", LOCKINFO)).status == 403
    assert (await adav.call("GET", "/dav/Photos/cat.jpg")).body == b"meow"
    # Alice's own paths are not bob's: his /Photos does not exist.
    assert (await bdav.call("GET", "/dav/Photos/cat.jpg")).status == 404


LOCKINFO = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>tests</D:owner>"
            "</D:lockinfo>")


async def test_a_lock_holds_until_its_timeout(server: RunningServer) -> None:
    _, dav = await dav_user(server)
    assert (await dav.call("PUT", "/dav/doc.odt", b"v1")).status == 201
    r = await dav.call("LOCK", "/dav/doc.odt", LOCKINFO, {"Timeout": "Second-2"})
    assert r.status == 200
    token = r.headers["Lock-Token"]
    assert (await dav.call("PUT", "/dav/doc.odt", b"v2")).status == 423
    assert (await dav.call("DELETE", "/dav/doc.odt")).status == 423
    assert (await dav.call("PUT", "/dav/doc.odt", b"v2", {"If": f"({token})"})).status == 204

    async def unlocked() -> bool:
        return (await dav.call("PUT", "/dav/doc.odt", b"v3")).status == 204

    await wait_for(unlocked, within=10, interval=0.3, what="the lock to expire")
    assert (await dav.call("GET", "/dav/doc.odt")).body == b"v3"


async def test_a_put_cut_off_halfway_leaves_nothing(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    assert (await dav.call("PUT", "/dav/keep.txt", b"the old content")).status == 201

    async def body(fail_after: int):  # type: ignore[no-untyped-def]
        yield os.urandom(5 * 1024 * 1024)
        await asyncio.sleep(0)
        raise ConnectionResetError("the client went away")

    for path in ("/dav/new.bin", "/dav/keep.txt"):
        try:
            await dav.call("PUT", path, body(1))  # type: ignore[arg-type]
        except (aiohttp.ClientError, ConnectionResetError):
            pass
    assert (await dav.call("GET", "/dav/new.bin")).status == 404
    assert "new.bin" not in (await dav.propfind("/dav/", "1")).body.decode()
    assert (await dav.call("GET", "/dav/keep.txt")).body == b"the old content"
    assert [e["name"] for e in (await api.get("/api/files")).body["entries"]] == ["keep.txt"]


async def test_over_quota_is_507_and_a_stranger_is_401(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    quota = (await api.get("/api/quota")).body["total"]
    r = await dav.call("PUT", "/dav/huge.bin", None, {"Content-Length": str(quota + 1)})
    assert r.status == 507
    # Answered before its body: the connection is not offered for another request (the server
    # discards what follows on it for up to 10 s), so the client's next one goes at once.
    assert r.headers.get("Connection") == "close", r.headers
    assert (await asyncio.wait_for(dav.call("GET", "/dav/huge.bin"), 3)).status == 404
    async with aiohttp.ClientSession() as s:
        stranger = DavClient(server.url, dav.email, "wrong-password", s)
        assert (await stranger.call("PUT", "/dav/x.txt", b"x")).status == 401
    assert (await dav.call("GET", "/dav/x.txt")).status == 404


async def test_move_renames_in_place_keeps_history_and_copy_depth(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    assert (await dav.call("MKCOL", "/dav/src")).status == 201
    assert (await dav.call("PUT", "/dav/src/a.txt", b"1")).status == 201
    assert (await dav.call("PUT", "/dav/src/a.txt", b"2")).status == 204
    before = (await api.get("/api/files", params={"path": "/src"})).body["entries"][0]
    r = await dav.call("MOVE", "/dav/src/a.txt", None, {"Destination": "/dav/src/A.txt"})
    assert r.status == 204  # only the case changes: the same item, renamed
    after = (await api.get("/api/files", params={"path": "/src"})).body["entries"]
    assert [(e["name"], e["file_id"], e["version"]) for e in after] == \
        [("A.txt", before["file_id"], 2)]
    same = await dav.call("MOVE", "/dav/src/A.txt", None, {"Destination": "/dav/src/A.txt"})
    assert same.status == 403
    shallow = await dav.call("COPY", "/dav/src", None, {"Destination": "/dav/flat",
                                                        "Depth": "0"})
    deep = await dav.call("COPY", "/dav/src", None, {"Destination": "/dav/deep"})
    assert (shallow.status, deep.status) == (201, 201)
    assert (await dav.propfind("/dav/flat/", "1")).hrefs() == ["/dav/flat/"]
    assert (await dav.call("GET", "/dav/deep/A.txt")).body == b"2"
    into = await dav.call("COPY", "/dav/src", None, {"Destination": "/dav/src/inner"})
    assert into.status == 403


async def test_deeply_nested_xml_is_a_400(server: RunningServer) -> None:
    _, dav = await dav_user(server)
    assert (await dav.call("PUT", "/dav/a.txt", b"a")).status == 201
    nested = "<x:v xmlns:x='urn:x'>" * 5000 + "</x:v>" * 5000
    body = (f'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>{nested}</D:prop></D:set>'
            "</D:propertyupdate>")
    assert (await dav.call("PROPPATCH", "/dav/a.txt", body)).status == 400


async def test_a_locked_folder_takes_new_members_with_its_token(server: RunningServer) -> None:
    _, dav = await dav_user(server)
    assert (await dav.call("MKCOL", "/dav/box")).status == 201
    r = await dav.call("LOCK", "/dav/box/", LOCKINFO, {"Depth": "infinity"})
    assert r.status == 200
    token = r.headers["Lock-Token"]
    assert (await dav.call("PUT", "/dav/box/new.txt", b"x")).status == 423
    assert (await dav.call("MKCOL", "/dav/box/sub")).status == 423
    assert (await dav.call("PUT", "/dav/box/new.txt", b"x", {"If": f"({token})"})).status == 201
    tagged = {"If": f"<{server.url}/dav/box/> ({token})"}
    assert (await dav.call("MKCOL", "/dav/box/sub", None, tagged)).status == 201
    assert (await dav.call("UNLOCK", "/dav/box/", None, {"Lock-Token": token})).status == 204
    assert (await dav.call("DELETE", "/dav/box")).status == 204


async def test_an_editor_writes_into_the_shared_folder_for_its_owner(
        server: RunningServer) -> None:
    alice, adav = await dav_user(server)
    _, bdav = await dav_user(server, "bob@example.com")
    folder = await alice.mkdir("/Team")
    r = await alice.post(f"/api/files/{folder['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "edit"})
    assert r.status in (200, 201), r
    base = "/dav/Shared%20with%20me/Team"
    assert (await bdav.call("PUT", f"{base}/plan.txt", b"from bob")).status == 201
    assert (await bdav.call("MKCOL", f"{base}/notes")).status == 201
    assert (await adav.call("GET", "/dav/Team/plan.txt")).body == b"from bob"
    assert sorted(await alice.listdir("/Team")) == ["notes", "plan.txt"]
    # The shared folder itself keeps its place: bob can neither delete nor move it.
    assert (await bdav.call("DELETE", base)).status == 403
    moved = await bdav.call("MOVE", base, None, {"Destination": "/dav/Mine"})
    assert moved.status in (400, 403)
    assert (await bdav.call("DELETE", f"{base}/plan.txt")).status == 204
    assert await alice.listdir("/Team") == ["notes"]


async def test_a_listing_of_many_pages_has_every_entry_once(
        server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from driveserver.dav import properties

    monkeypatch.setattr(properties, "PAGE", 50)  # pages of 50 instead of 5,000
    api, dav = await dav_user(server)
    files = [{"path": f"/many/f{i:03d}.txt", "size": 0} for i in range(120)]
    init = await api.post("/api/files/upload-init/batch", {"files": files})
    done = await api.post("/api/files/complete/batch", {"files": [
        {"file_id": x["file_id"], "blocks": []} for x in init.body["results"]]})
    assert done.status == 200
    props = ('<D:propfind xmlns:D="DAV:"><D:prop><x:tag xmlns:x="urn:t"/></D:prop>'
             "</D:propfind>")
    set_tag = ('<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x:tag xmlns:x="urn:t">'
               "late</x:tag></D:prop></D:set></D:propertyupdate>")
    assert (await dav.call("PROPPATCH", "/dav/many/f119.txt", set_tag)).status == 207
    r = await dav.propfind("/dav/many/", "1", props)
    assert r.status == 207 and "chunked" in r.headers.get("Transfer-Encoding", "")
    assert r.hrefs() == ["/dav/many/"] + [f"/dav/many/f{i:03d}.txt" for i in range(120)]
    assert [e.text for e in r.xml().iter("{urn:t}tag") if e.text] == ["late"]


async def test_locks_per_user_are_bounded(server: RunningServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from driveserver.dav import locking

    monkeypatch.setattr(locking, "MAX_LOCKS_PER_USER", 2)
    _, dav = await dav_user(server)
    shared = LOCKINFO.replace("<D:exclusive/>", "<D:shared/>")
    statuses = [(await dav.call("LOCK", "/dav/one.txt", shared)).status for _ in range(3)]
    assert statuses == [201, 200, 403]


async def test_a_lock_on_a_shared_item_holds_for_everyone_who_sees_it(
        server: RunningServer) -> None:
    alice, adav = await dav_user(server)
    _, bdav = await dav_user(server, "bob@example.com")
    folder = await alice.mkdir("/Team")
    await alice.post(f"/api/files/{folder['file_id']}/share",
                     {"user_email": "bob@example.com", "permission": "edit"})
    assert (await adav.call("PUT", "/dav/Team/doc.txt", b"v1")).status == 201
    r = await bdav.call("LOCK", "/dav/Shared%20with%20me/Team/doc.txt", LOCKINFO)
    assert r.status == 200
    assert (await adav.call("PUT", "/dav/Team/doc.txt", b"alice's")).status == 423
    seen = await adav.propfind("/dav/Team/doc.txt", "0", '<D:propfind xmlns:D="DAV:"><D:prop>'
                                                         "<D:lockdiscovery/></D:prop></D:propfind>")
    roots = [h.text for h in seen.xml().findall(f".//{DAV_NS}lockroot/{DAV_NS}href")]
    assert roots == ["/dav/Team/doc.txt"]  # not bob's "/Shared with me/..." path
    token = r.headers["Lock-Token"]
    unlock = await adav.call("UNLOCK", "/dav/Team/doc.txt", None, {"Lock-Token": token})
    assert unlock.status == 403  # bob's lock is bob's to end
    assert (await bdav.call("UNLOCK", "/dav/Shared%20with%20me/Team/doc.txt", None,
                            {"Lock-Token": token})).status == 204
    assert (await adav.call("PUT", "/dav/Team/doc.txt", b"alice's")).status == 204
