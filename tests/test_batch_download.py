"""``POST /api/files/content/batch``: many small files in one response, framed as docs/api.md
says, each file authorised on its own and read from a verified block."""

from __future__ import annotations

import json
import struct
from typing import Any

from driveproto.blocks import BLOCK_SIZE, block_hash, content_checksum
from driveproto.wire import decompress_from_wire
from driveserver import appkeys
from tests.helpers import ApiClient, RunningServer, upload
from tests.stored_blocks import flip_last_bit, tamper


async def batch(client: ApiClient, files: list[dict[str, Any]]) -> list[tuple[dict, bytes]]:
    """Request a batch and split the body into (header, decoded payload) frames."""
    async with client.session.post(f"{client.base_url}/api/files/content/batch",
                                   json={"files": files}, headers=client.headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "application/octet-stream"
        body = await resp.read()
    frames, pos = [], 0
    while pos < len(body):
        (n,) = struct.unpack_from(">I", body, pos)
        header = json.loads(body[pos + 4: pos + 4 + n])
        pos += 4 + n
        payload = body[pos: pos + header.get("length", 0)]
        pos += header.get("length", 0)
        if "error" not in header:
            assert len(payload) == header["length"]
            payload = decompress_from_wire(header["encoding"], payload)
        frames.append((header, payload))
    assert pos == len(body)
    return frames


async def test_files_come_in_request_order_with_their_checksums(alice: ApiClient) -> None:
    texts = {f"/t{i}.txt": (f"file {i} " * (50 * i + 1)).encode() for i in range(5)}
    ids = [(await upload(alice, path, data))["file_id"] for path, data in texts.items()]
    empty = (await upload(alice, "/empty", b""))["file_id"]
    random_bytes = bytes(range(256)) * 40
    rnd = (await upload(alice, "/r.bin", random_bytes))["file_id"]
    wanted = [*reversed(ids), empty, rnd]
    frames = await batch(alice, [{"file_id": f} for f in wanted])
    assert [h["file_id"] for h, _ in frames] == wanted
    expected = [*reversed(list(texts.values())), b"", random_bytes]
    for (header, data), want in zip(frames, expected, strict=True):
        assert data == want and header["size"] == len(want) and header["version"] == 1
        hashes = [block_hash(want)] if want else []
        assert header["checksum"] == content_checksum(hashes)
    # Repetitive text travels compressed; an empty file is an empty identity payload.
    assert frames[0][0]["encoding"] == "zstd" and frames[0][0]["length"] < frames[0][0]["size"]
    assert frames[5][0] == {"file_id": empty, "version": 1, "size": 0,
                            "checksum": content_checksum([]), "encoding": "identity",
                            "length": 0}


async def test_an_older_version_on_request(alice: ApiClient) -> None:
    first = await upload(alice, "/v.txt", b"one")
    await upload(alice, "/v.txt", b"two")
    frames = await batch(alice, [{"file_id": first["file_id"], "version": 1},
                                 {"file_id": first["file_id"]}])
    assert [(h["version"], d) for h, d in frames] == [(1, b"one"), (2, b"two")]


async def test_each_file_fails_on_its_own_as_the_content_route_would(
        alice: ApiClient, bob: ApiClient) -> None:
    mine = (await upload(alice, "/mine.txt", b"alice's"))["file_id"]
    bobs = (await upload(bob, "/secret.txt", b"bob's"))["file_id"]
    folder = (await alice.mkdir("/folder"))["file_id"]
    big = (await upload(alice, "/big.bin", b"x" * (BLOCK_SIZE + 1)))["file_id"]
    frames = await batch(alice, [{"file_id": bobs}, {"file_id": mine},
                                 {"file_id": "f_doesnotexist"}, {"file_id": folder},
                                 {"file_id": big}, {"file_id": mine, "version": 9},
                                 {"file_id": mine, "version": 2**70}])
    codes = [h.get("error", {}).get("code") for h, _ in frames]
    assert codes == ["not_found", None, "not_found", "not_a_file", "too_large_for_batch",
                     "not_found", "not_found"]
    assert frames[1][1] == b"alice's"
    # Another user's file is indistinguishable from a missing one.
    assert frames[0][0]["error"] == {**frames[2][0]["error"], "code": "not_found"}
    assert frames[0][0]["file_id"] == bobs and b"bob's" not in b"".join(d for _, d in frames)
    r = await alice.get(f"/api/files/{bobs}/content")
    assert r.status == frames[0][0]["error"]["status"] == 404


async def test_a_corrupt_block_fails_only_its_file(alice: ApiClient,
                                                  server: RunningServer) -> None:
    good = (await upload(alice, "/good.txt", b"good bytes"))["file_id"]
    data = b"will be tampered with " * 20
    bad = (await upload(alice, "/bad.txt", data))["file_id"]
    name = server.app[appkeys.KEYRING].object_name(block_hash(data))
    tamper(server.config.blocks_dir, name, flip_last_bit)
    frames = await batch(alice, [{"file_id": bad}, {"file_id": good}])
    assert frames[0][0]["error"]["code"] == "block_corrupt" and frames[0][1] == b""
    assert frames[1][1] == b"good bytes"


async def test_bad_requests_get_a_json_error(alice: ApiClient, server: RunningServer) -> None:
    for body in ({}, {"files": []}, {"files": [{"file_id": "x"}] * 1001}, {"files": "x"}):
        r = await alice.post("/api/files/content/batch", body)
        assert r.status == 400 and r.error_code() in ("invalid_field", "missing_field"), r
    frames = await batch(alice, [{"file_id": 5}, "nope", {"file_id": "f_x", "version": "1"}])
    assert [h["error"]["code"] for h, _ in frames] == ["invalid_field"] * 3
    r = await server.anonymous().post("/api/files/content/batch", {"files": [{"file_id": "x"}]})
    assert r.status == 401


async def test_a_small_file_split_into_several_blocks_comes_whole(alice: ApiClient) -> None:
    """The sync client cuts files at 4 MiB, but an API client may store a small file as several
    blocks; the batch sends all of them, not the first."""
    parts = [b"first part, " * 30, b"second part, " * 40, b"end"]
    data = b"".join(parts)
    plan = [{"order": i, "hash": block_hash(p), "size": len(p)} for i, p in enumerate(parts)]
    r = await alice.post("/api/files/upload-init", {"path": "/split.txt", "size": len(data),
                                                    "blocks": plan})
    assert r.status == 200, r
    receipts = []
    for part in parts:
        async with alice.session.put(r.body["block_url"].replace("{hash}", block_hash(part)),
                                     data=part) as resp:
            assert resp.status == 200
            receipts.append(await resp.json())
    done = await alice.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": receipts})
    assert done.status == 200, done
    ((header, got),) = await batch(alice, [{"file_id": r.body["file_id"]}])
    assert got == data and header["size"] == len(data) == header["length"]
    assert header["checksum"] == content_checksum([block_hash(p) for p in parts])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def test_a_big_batch_holds_only_a_few_files_at_once(alice: ApiClient) -> None:
    """200 MiB in one response (the same 1 MiB file asked for 200 times): the server lets each
    file's bytes go once written, so memory grows by a few files, not by the response."""
    import asyncio
    import gc
    import os

    fid = (await upload(alice, "/mib.bin", os.urandom(1024 * 1024)))["file_id"]
    gc.collect()
    base, peak = _rss_mb(), 0.0
    received = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        async with alice.session.post(f"{alice.base_url}/api/files/content/batch",
                                      json={"files": [{"file_id": fid}] * 200},
                                      headers=alice.headers) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 16):
                received += len(chunk)  # read and dropped, as a client writing files would
    finally:
        sampler.cancel()
    assert received > 200 * 1024 * 1024
    assert peak - base < 100, f"RSS grew by {peak - base:.0f} MB for a 200 MiB response"
