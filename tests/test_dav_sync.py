"""WebDAV and drive-sync see one drive (issue 16): a file PUT over WebDAV reaches a running
drive-sync folder through the change feed, a file saved in a drive-sync folder is read back
over WebDAV, and a PUT based on a stale ETag is refused with 412 without overwriting."""

from __future__ import annotations

import os
from pathlib import Path

from tests.dav_helpers import DAV_NS, dav_user
from tests.helpers import RunningServer, wait_for
from tests.sync_helpers import make_devices


async def test_webdav_and_drive_sync_see_each_others_files(srv: RunningServer,
                                                           tmp_path: Path) -> None:
    (laptop,) = make_devices(tmp_path, "laptop")
    await laptop.init(srv)
    _, dav = await dav_user(srv, register=False)
    laptop.start_daemon(tmp_path / "daemon.log")
    try:
        assert (await dav.call("MKCOL", "/dav/Phone")).status == 201
        body = os.urandom(5 * 1024 * 1024 + 17)  # more than one block
        assert (await dav.call("PUT", "/dav/Phone/from%20dav.bin", body)).status == 201
        target = laptop.folder / "Phone" / "from dav.bin"
        await wait_for(lambda: target.exists() and target.read_bytes() == body, within=30,
                       what="the WebDAV upload in the drive-sync folder")
        laptop.write("from laptop.txt", "saved on the laptop\n")
        got = None

        async def readable() -> bool:
            nonlocal got
            got = await dav.call("GET", "/dav/from%20laptop.txt")
            return got.status == 200

        await wait_for(readable, within=30, what="the laptop's file over WebDAV")
        assert got is not None and got.body == b"saved on the laptop\n"
        # An edit over WebDAV replaces the file in the folder too (a new version).
        assert (await dav.call("PUT", "/dav/from%20laptop.txt", b"edited on the phone\n")
                ).status == 204
        await wait_for(lambda: laptop.read("from laptop.txt") == b"edited on the phone\n",
                       within=30, what="the WebDAV edit in the drive-sync folder")
    finally:
        laptop.stop_daemon()
    assert (laptop.folder / "Phone" / "from dav.bin").stat().st_size == len(body)


async def test_a_put_on_a_stale_etag_is_refused(server: RunningServer) -> None:
    api, dav = await dav_user(server)
    first = await dav.call("PUT", "/dav/notes.txt", b"one")
    assert first.status == 201
    stale = first.headers["ETag"]
    r = await dav.propfind("/dav/notes.txt", "0")
    assert r.xml().find(f".//{DAV_NS}getetag").text == stale  # type: ignore[union-attr]
    second = await dav.call("PUT", "/dav/notes.txt", b"two", {"If-Match": stale})
    assert second.status == 204 and second.headers["ETag"] != stale
    refused = await dav.call("PUT", "/dav/notes.txt", b"three", {"If-Match": stale})
    assert refused.status == 412
    assert (await dav.call("GET", "/dav/notes.txt")).body == b"two"
    also = await dav.call("PUT", "/dav/notes.txt", b"four", {"If": f"([{stale}])"})
    assert also.status == 412
    assert (await dav.call("PUT", "/dav/new.txt", b"x", {"If-None-Match": "*"})).status == 201
    assert (await dav.call("PUT", "/dav/new.txt", b"y", {"If-None-Match": "*"})).status == 412
    meta = await api.get("/api/files", params={"path": "/"})
    notes = next(e for e in meta.body["entries"] if e["name"] == "notes.txt")
    assert notes["version"] == 2  # one version per PUT that went through
