"""Folder and selection zips (``POST``/``GET /api/files/zip``): entries verified one by one
with Python's zipfile, permissions before anything is sent, a 200 MiB file streamed with
bounded memory while ``/healthz`` keeps answering, the caps, CSRF, and a corrupt block."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from driveproto.blocks import BLOCK_SIZE, block_hash
from driveserver import appkeys
from driveserver.api import zip_routes
from tests.helpers import ApiClient, HealthzProbe, RunningServer, upload, wait_for
from tests.stored_blocks import flip_byte_100, tamper
from tests.test_web_session import cookie_login

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def fetch_zip(client: ApiClient, ids: list[str], method: str = "GET",
                    headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, headers, body) of a zip request by ``method``."""
    url = client.base_url + "/api/files/zip"
    kw: dict[str, Any] = {"json": {"file_ids": ids}} if method == "POST" else \
        {"params": [("file_id", i) for i in ids]}
    async with client.session.request(method, url, headers={**client.headers, **(headers or {})},
                                      **kw) as resp:
        return resp.status, resp.headers, await resp.read()


async def upload_executable(client: ApiClient, path: str, data: bytes) -> None:
    r = await client.post("/api/files/upload-init", {"path": path, "size": len(data)})
    assert r.status == 200, r
    async with client.session.post(r.body["upload_url"], data=data) as resp:
        blocks = (await resp.json())["blocks"]
    r = await client.post(f"/api/files/{r.body['file_id']}/complete",
                          {"blocks": blocks, "executable": True})
    assert r.status == 200, r


def entries(body: bytes) -> dict[str, str | None]:
    """Each entry's name -> SHA-256 of its content (None for a folder), after zipfile's CRC
    check of every file."""
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        assert z.testzip() is None
        return {i.filename: None if i.is_dir() else sha(z.read(i)) for i in z.infolist()}


async def test_folder_tree_entry_by_entry(alice: ApiClient) -> None:
    big = os.urandom(5 * MiB + 12345)  # two blocks
    text = b"".join(b"line %d of a text that deflates well\n" % i for i in range(50_000))
    trip = await alice.mkdir("/Trip")
    await alice.mkdir("/Trip/Empty")
    await alice.mkdir("/Trip/deep/a/b")
    files = {"Trip/Day 1/photo.raw": big, "Trip/Day 1/log.txt": text,
             "Trip/Ünïcödé 名前 ✓.txt": "unicode content ✓".encode(),
             "Trip/deep/a/b/c.txt": b"deep", "Trip/empty-file": b""}
    for path, data in files.items():
        await upload(alice, "/" + path, data)
    await upload(alice, "/Trip/..\\evil.bat", b"a backslash is a separator on Windows")
    await upload_executable(alice, "/Trip/run.sh", b"#!/bin/sh\necho hi\n")
    gone = await upload(alice, "/Trip/trashed.txt", b"in the trash")
    assert (await alice.delete(f"/api/files/{gone['file_id']}")).status == 204
    r = await alice.post("/api/files/upload-init", {"path": "/Trip/pending.bin", "size": 5})
    assert r.status == 200, r
    status, headers, body = await fetch_zip(alice, [trip["file_id"]])
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"Trip.zip\"; filename*=UTF-8''Trip.zip")
    want: dict[str, str | None] = {
        "Trip/": None, "Trip/Day 1/": None, "Trip/Empty/": None, "Trip/deep/": None,
        "Trip/deep/a/": None, "Trip/deep/a/b/": None,
        "Trip/run.sh": sha(b"#!/bin/sh\necho hi\n"), **{p: sha(d) for p, d in files.items()},
        "Trip/.._evil.bat": sha(b"a backslash is a separator on Windows")}
    assert entries(body) == want
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        assert z.getinfo("Trip/Day 1/log.txt").compress_size < len(text) // 5  # deflated
        assert z.getinfo("Trip/Day 1/photo.raw").compress_size >= len(big)  # stored as is
    assert stat.S_ISDIR(modes["Trip/Empty/"]) and stat.S_IMODE(modes["Trip/run.sh"]) == 0o755
    assert stat.S_IMODE(modes["Trip/deep/a/b/c.txt"]) == 0o644
    # The POST answers the same archive.
    status, _, posted = await fetch_zip(alice, [trip["file_id"]], "POST")
    assert status == 200 and entries(posted) == want


async def test_selection_across_folders(alice: ApiClient) -> None:
    a = await upload(alice, "/A/report.txt", b"report in A")
    b = await upload(alice, "/B/report.txt", b"report in B")
    c = await alice.mkdir("/B/C")
    await upload(alice, "/B/C/inner.txt", b"inner")
    inner = await upload(alice, "/B/C/also picked.txt", b"also")
    status, headers, body = await fetch_zip(
        alice, [a["file_id"], c["file_id"], b["file_id"], inner["file_id"], a["file_id"]],
        "POST")
    assert status == 200, body[:300]
    assert 'filename="download.zip"' in headers["Content-Disposition"]
    # Two picks of one name get "(2)"; a pick inside a picked folder and a repeat come once.
    assert entries(body) == {"report.txt": sha(b"report in A"), "C/": None,
                             "C/inner.txt": sha(b"inner"), "C/also picked.txt": sha(b"also"),
                             "report (2).txt": sha(b"report in B")}


async def test_another_users_items_are_404_before_anything_is_sent(
        alice: ApiClient, bob: ApiClient) -> None:
    secret = await alice.mkdir("/Secret")
    await upload(alice, "/Secret/x.txt", b"alice's")
    mine = await upload(bob, "/mine.txt", b"bob's")
    for method in ("GET", "POST"):
        for ids in ([secret["file_id"]], [mine["file_id"], secret["file_id"]],
                    ["f_doesnotexist"]):
            status, headers, body = await fetch_zip(bob, ids, method)
            assert status == 404, (method, ids, body[:200])
            assert headers["Content-Type"].startswith("application/json")
            assert b"alice" not in body and b"Secret" not in body
    # A trashed item is not there to zip, even for its owner.
    assert (await alice.delete(f"/api/files/{secret['file_id']}")).status == 204
    assert (await fetch_zip(alice, [secret["file_id"]]))[0] == 404


async def test_a_shared_folder_by_its_recipient(alice: ApiClient, bob: ApiClient) -> None:
    proj = await alice.mkdir("/Work/Proj")
    await upload(alice, "/Work/Proj/plan.md", b"the plan")
    await alice.mkdir("/Work/Proj/empty")
    await upload(bob, "/Proj/bob's own.txt", b"not in the share")
    r = await alice.post(f"/api/files/{proj['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "view"})
    assert r.status == 201, r
    status, headers, body = await fetch_zip(bob, [proj["file_id"]])
    assert status == 200, body[:300]
    assert entries(body) == {"Proj/": None, "Proj/plan.md": sha(b"the plan"),
                             "Proj/empty/": None}


@pytest.mark.parametrize("body", [{}, {"file_ids": []}, {"file_ids": "f_x"},
                                  {"file_ids": [1]}, {"file_ids": ["f"] * 1001}])
async def test_bad_selections_are_400(alice: ApiClient, body: dict[str, Any]) -> None:
    r = await alice.post("/api/files/zip", body)
    assert r.status == 400, r
    assert r.body["error"]["code"] in ("invalid_field", "missing_field")
    assert (await alice.get("/api/files/zip")).status == 400


async def test_too_many_entries_is_400(alice: ApiClient, monkeypatch: Any) -> None:
    monkeypatch.setattr(zip_routes, "MAX_ENTRIES", 5)
    folder = await alice.mkdir("/Many")
    for i in range(4):
        await upload(alice, f"/Many/{i}.txt", b"%d" % i)
    assert (await fetch_zip(alice, [folder["file_id"]]))[0] == 200  # 5 entries: the limit
    await upload(alice, "/Many/4.txt", b"4")
    status, _, body = await fetch_zip(alice, [folder["file_id"]])
    assert status == 400 and b"too_many_entries" in body


async def test_cookie_post_needs_the_csrf_token_and_the_get_does_not(
        server: RunningServer, alice: ApiClient) -> None:
    folder = await alice.mkdir("/Web")
    await upload(alice, "/Web/a.txt", b"a")
    cookie, csrf, _ = await cookie_login(server)
    browser = server.anonymous()
    jar = {"Cookie": f"drive_session={cookie}"}
    status, _, body = await fetch_zip(browser, [folder["file_id"]], "POST", jar)
    assert status == 403 and b"csrf_failed" in body
    status, _, body = await fetch_zip(browser, [folder["file_id"]], "POST",
                                      {**jar, "X-CSRF-Token": csrf})
    assert status == 200 and entries(body) == {"Web/": None, "Web/a.txt": sha(b"a")}
    status, _, body = await fetch_zip(browser, [folder["file_id"]], "GET", jar)
    assert status == 200 and entries(body) == {"Web/": None, "Web/a.txt": sha(b"a")}


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def _reset_peak() -> None:
    """VmHWM := VmRSS, so that VmHWM is this test's peak only."""
    Path("/proc/self/clear_refs").write_text("5")


async def test_a_200_mib_file_streams_with_bounded_memory_and_stalls_nobody(
        server: RunningServer, alice: ApiClient, tmp_path: Path) -> None:
    size = 200 * MiB + 7
    data = os.urandom(size)
    digest = sha(data)
    done = await upload(alice, "/Big/huge.bin", data)
    del data
    folder = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]
    assert folder["name"] == "Big"
    pipeline = server.app[appkeys.PIPELINE]
    fetched: list[str] = []
    real_get = pipeline.get

    async def counting_get(h: str) -> bytes:
        fetched.append(h)
        return await real_get(h)
    pipeline.get = counting_get  # type: ignore[method-assign]
    gc.collect()
    _reset_peak()
    rss_before = _vm("VmRSS")
    out = tmp_path / "big.zip"
    received = 0
    async with HealthzProbe(server.url) as probe:
        async with alice.session.get(alice.base_url + "/api/files/zip",
                                     params={"file_id": folder["file_id"]},
                                     headers=alice.headers) as resp:
            assert resp.status == 200
            with out.open("wb") as f:
                async for chunk in resp.content.iter_chunked(MiB):
                    f.write(chunk)
                    received += len(chunk)
                    # Streamed: never more than a few blocks ahead of what the client has.
                    assert len(fetched) <= received // BLOCK_SIZE + 6, (len(fetched), received)
    probe.check(within=1.0)
    peak_growth = _vm("VmHWM") - rss_before
    assert len(fetched) == -(-size // BLOCK_SIZE)
    # Measured here: ~45 MiB for 50 MiB, ~55 for 200 MiB, ~57 for 400 MiB (the block and zip
    # threads' buffers and malloc arenas, the client's own); a server holding the file would
    # grow by its size.
    assert peak_growth < size // 2, f"RSS grew by {peak_growth / MiB:.0f} MiB"
    with zipfile.ZipFile(out) as z:
        info = z.getinfo("Big/huge.bin")
        assert info.file_size == size
        h = hashlib.sha256()
        with z.open(info) as member:  # checks the CRC at the end
            while piece := member.read(4 * MiB):
                h.update(piece)
    assert h.hexdigest() == digest and done["version"] == 1


async def test_downloads_at_once_are_capped_per_user(server: RunningServer,
                                                     alice: ApiClient) -> None:
    big = await upload(alice, "/cap.bin", os.urandom(24 * MiB))
    url = alice.base_url + "/api/files/zip"
    params = {"file_id": big["file_id"]}
    first = await alice.session.get(url, params=params, headers=alice.headers)
    second = await alice.session.get(url, params=params, headers=alice.headers)
    try:
        assert first.status == second.status == 200  # headers out; bodies unread, held
        r = await alice.get("/api/files/zip", params=params)
        assert r.status == 429 and r.error_code() == "too_many_downloads", r
        assert int(r.headers["Retry-After"]) >= 1
    finally:
        first.close()
    streams = server.app[zip_routes.ZIP_STREAMS]
    await wait_for(lambda: sum(streams._open.values()) < 2, what="the first zip to end")
    r = await alice.get("/api/files/zip", params=params)
    assert r.status == 200
    second.close()


async def test_a_corrupt_block_cuts_the_stream(server: RunningServer, alice: ApiClient) -> None:
    data = os.urandom(BLOCK_SIZE) + b"second block, which will be corrupted"
    done = await upload(alice, "/two.bin", data)
    name = server.app[appkeys.KEYRING].object_name(block_hash(data[BLOCK_SIZE:]))
    tamper(server.config.blocks_dir, name, flip_byte_100)
    got = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with alice.session.get(alice.base_url + "/api/files/zip",
                                     params={"file_id": done["file_id"]},
                                     headers=alice.headers) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(65536):
                got += chunk
    assert data[BLOCK_SIZE:] not in got and len(got) < len(data) + 200
