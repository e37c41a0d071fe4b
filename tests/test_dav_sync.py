"""WebDAV and drive-sync see one drive (issue 16): a file PUT over WebDAV reaches a running
drive-sync folder through the change feed, a file saved in a drive-sync folder is read back
over WebDAV, and a PUT based on a stale ETag is refused with 412 without overwriting."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from driveserver.dav import put as put_module
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


async def test_a_save_during_a_conditional_put_wins_over_it(
        server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ETag is checked again when the version commits: a version saved by anyone while a
    PUT's body was on its way makes that PUT a 412, and the newer version stays."""
    _, dav = await dav_user(server)
    etag = (await dav.call("PUT", "/dav/shared.txt", b"base")).headers["ETag"]
    reading, release = asyncio.Event(), asyncio.Event()
    real_store_body = put_module._store_body

    async def store_body(request: Any, limit: int) -> Any:  # the first checks have passed
        if request.headers.get("If-Match"):
            reading.set()
        return await real_store_body(request, limit)

    monkeypatch.setattr(put_module, "_store_body", store_body)

    async def slow_body():  # type: ignore[no-untyped-def]
        yield b"slow writer, "
        await release.wait()
        yield b"based on the old version"

    slow = asyncio.ensure_future(dav.call("PUT", "/dav/shared.txt", slow_body(),  # type: ignore[arg-type]
                                          {"If-Match": etag}))
    await asyncio.wait_for(reading.wait(), 10)
    assert (await dav.call("PUT", "/dav/shared.txt", b"the fast writer")).status == 204
    release.set()
    assert (await slow).status == 412
    assert (await dav.call("GET", "/dav/shared.txt")).body == b"the fast writer"
