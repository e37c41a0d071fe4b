"""The patch routes on a real server (driveserver/blocks/patch_routes.py): a block uploaded as a
patch becomes an ordinary block with an ordinary receipt; a patch whose result is not the
block it names, or against a base the user may not read, is refused and leaves nothing; the
download side answers with a patch only when it is smaller; ``complete`` records the scheme;
and ``drive-sync`` uses both directions."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from typing import Any

from driveproto import patches
from driveproto.blocks import BLOCK_SIZE, block_hash
from driveproto.chunking import CDC_SCHEME, FIXED_SCHEME, split_bytes
from driveproto.wire import compress_for_wire, decompress_from_wire
from driveserver import appkeys
from tests.helpers import ApiClient, RunningServer, download_blocks
from tests.sync_helpers import Device, metric

MiB = 1024 * 1024


def _random(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


async def init(client: ApiClient, path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    blocks = [{"order": i, "hash": block_hash(b), "size": len(b)}
              for i, b in enumerate(split_bytes(data, CDC_SCHEME))]
    r = await client.post("/api/files/upload-init", {"path": path, "size": len(data),
                                                      "blocks": blocks, **extra})
    assert r.status == 200, r
    return r.body


def url(block_url: str, h: str, tail: str = "") -> str:
    return block_url.replace("{hash}", h + tail)


async def put_whole(client: ApiClient, block_url: str, data: bytes) -> dict[str, Any]:
    encoding, payload = compress_for_wire(data)
    async with client.session.put(url(block_url, block_hash(data)), data=payload,
                                  headers={"X-Block-Encoding": encoding}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def put_patch(client: ApiClient, block_url: str, h: str, body: bytes
                    ) -> tuple[int, Any]:
    async with client.session.put(url(block_url, h, "/patch"), data=body) as resp:
        return resp.status, await resp.json()


async def signature(client: ApiClient, block_url: str, h: str) -> tuple[int, bytes]:
    async with client.session.get(url(block_url, h, "/signature")) as resp:
        return resp.status, await resp.read()


async def upload(client: ApiClient, path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """The whole file, block by block, committed as a CDC version."""
    got = await init(client, path, data, **extra)
    receipts = {}
    for b in split_bytes(data, CDC_SCHEME):
        if block_hash(b) in got.get("blocks_to_upload", []):
            receipts[block_hash(b)] = await put_whole(client, got["block_url"], b)
    blocks = [receipts.get(block_hash(b), block_hash(b)) for b in split_bytes(data, CDC_SCHEME)]
    body = {"blocks": blocks, "chunking": CDC_SCHEME,
            **({"base_version": extra["base_version"]} if "base_version" in extra else {})}
    r = await client.post(f"/api/files/{got['file_id']}/complete", body)
    assert r.status == 200, r
    return {**r.body, "file_id": got["file_id"]}


def upload_patch_for(new: bytes, base: bytes, sig: bytes, receipt: str | None = None) -> bytes:
    runs, dictionary = patches.find_pieces(new, [patches.parse_signature(sig)])
    return patches.encode_upload([patches.BaseRef(block_hash(base), runs[0], receipt)],
                                 patches.make_patch(new, dictionary))


async def stored(server: RunningServer, h: str) -> bool:
    return await server.app[appkeys.PIPELINE].exists(h)


async def test_a_patch_upload_becomes_an_ordinary_block(server: RunningServer,
                                                         alice: ApiClient) -> None:
    old = _random(2 * MiB, 1)
    v1 = await upload(alice, "/doc.bin", old)
    new = old[:MiB] + b"an edit in the middle" + old[MiB + 5:]
    got = await init(alice, "/doc.bin", new, base_version=1)
    h = block_hash(new)
    assert got["blocks_to_upload"] == [h]
    status, sig = await signature(alice, got["block_url"], block_hash(old))
    assert status == 200 and len(sig) < 4000
    body = upload_patch_for(new, old, sig)
    assert len(body) < 20_000 < len(compress_for_wire(new)[1])
    status, receipt = await put_patch(alice, got["block_url"], h, body)
    assert status == 200, receipt
    assert receipt["hash"] == h and receipt["size"] == len(new)
    r = await alice.post(f"/api/files/{v1['file_id']}/complete",
                         {"blocks": [receipt], "base_version": 1, "chunking": CDC_SCHEME})
    assert r.status == 200 and r.body["version"] == 2, r
    # Stored as any block: it downloads through the ordinary block route and verifies.
    assert await download_blocks(alice, v1["file_id"]) == new
    assert (await alice.get(f"/api/files/{v1['file_id']}/content")).body == new
    info = (await alice.get(f"/api/files/{v1['file_id']}/download")).body
    assert info["chunking"] == CDC_SCHEME


async def test_a_patch_that_makes_other_bytes_is_refused_and_stores_nothing(
        server: RunningServer, alice: ApiClient) -> None:
    old = _random(MiB, 2)
    await upload(alice, "/a.bin", old)
    wanted = _random(MiB, 3)  # what the patch claims to make
    got = await init(alice, "/b.bin", wanted)
    actual = old[:1000] + b"something else" + old[1000:]
    body = patches.encode_upload([patches.BaseRef(block_hash(old))],
                                 patches.make_patch(actual, old))
    status, err = await put_patch(alice, got["block_url"], block_hash(wanted), body)
    assert status == 400 and err["error"]["code"] == "patch_mismatch"
    assert not await stored(server, block_hash(wanted))
    assert not await stored(server, block_hash(actual))
    # Garbage in place of a zstd frame, and a frame that would inflate past one block.
    for frame in (b"junk", patches.make_patch(b"\0" * (BLOCK_SIZE + 1), old)):
        body = patches.encode_upload([patches.BaseRef(block_hash(old))], frame)
        status, err = await put_patch(alice, got["block_url"], block_hash(wanted), body)
        assert status == 400 and err["error"]["code"] == "patch_mismatch", err
    # Wrong pieces of the right base: the dictionary differs, the result is refused.
    sig = patches.parse_signature((await signature(alice, got["block_url"],
                                                   block_hash(old)))[1])
    body = patches.encode_upload([patches.BaseRef(block_hash(old), ((0, 1),))],
                                 patches.make_patch(wanted, wanted[:sig[0][0]]))
    status, err = await put_patch(alice, got["block_url"], block_hash(wanted), body)
    assert status == 400 and err["error"]["code"] == "patch_mismatch"
    assert not await stored(server, block_hash(wanted))
    r = await alice.post(f"/api/files/{got['file_id']}/complete",
                         {"blocks": [block_hash(wanted)]})
    assert r.status == 400 and r.error_code() == "missing_blocks"


async def test_a_base_the_user_may_not_read_is_refused(server: RunningServer, alice: ApiClient,
                                                      bob: ApiClient) -> None:
    secret = _random(MiB, 4)
    await upload(bob, "/bobs.bin", secret)
    got = await init(alice, "/mine.bin", secret[:-10] + b"0123456789")
    # Knowing the hash of bob's block: no signature, no patch, the same 404 as for a hash
    # nobody stored.
    for h in (block_hash(secret), "0" * 64):
        status, raw = await signature(alice, got["block_url"], h)
        assert status == 404
    new = secret[:-10] + b"0123456789"
    body = patches.encode_upload([patches.BaseRef(block_hash(secret))],
                                 patches.make_patch(new, secret))
    status, err = await put_patch(alice, got["block_url"], block_hash(new), body)
    assert status == 404 and err["error"]["code"] == "no_such_base"
    assert not await stored(server, block_hash(new))
    # Nor on the download side: alice's read grant for her own block, bob's as the base.
    await upload(alice, "/own.bin", new)
    listing = (await alice.get("/api/files", params={"path": "/"})).body["entries"]
    own = next(e for e in listing if e["name"] == "own.bin")
    info = (await alice.get(f"/api/files/{own['file_id']}/download")).body
    block = info["blocks"][0]
    path, _, query = block["url"].partition("?")
    async with alice.session.get(f"{path}/patch?{query}&base={block_hash(secret)}") as resp:
        assert resp.status == 404
    # A forged receipt proves nothing either.
    body = patches.encode_upload([patches.BaseRef(block_hash(secret), None, "forged")],
                                 patches.make_patch(new, secret))
    status, err = await put_patch(alice, got["block_url"], block_hash(new + b"x"), body)
    assert status == 404


async def test_a_receipted_block_may_be_a_base_before_it_is_committed(
        server: RunningServer, alice: ApiClient) -> None:
    first = _random(MiB, 5)
    second = first[:500_000] + b"!" + first[500_000:]
    got = await init(alice, "/pair.bin", first + second)
    receipt = await put_whole(alice, got["block_url"], first)
    without = patches.encode_upload([patches.BaseRef(block_hash(first))],
                                    patches.make_patch(second, first))
    status, _ = await put_patch(alice, got["block_url"], block_hash(second), without)
    assert status == 404  # not in any version yet, and no receipt named
    with_receipt = patches.encode_upload(
        [patches.BaseRef(block_hash(first), None, receipt["receipt"])],
        patches.make_patch(second, first))
    status, second_receipt = await put_patch(alice, got["block_url"], block_hash(second),
                                             with_receipt)
    assert status == 200, second_receipt
    r = await alice.post(f"/api/files/{got['file_id']}/complete",
                         {"blocks": [receipt, second_receipt], "chunking": FIXED_SCHEME})
    assert r.status == 200, r
    assert (await alice.get(f"/api/files/{got['file_id']}/content")).body == first + second


async def test_malformed_and_oversized_patch_bodies(server: RunningServer,
                                                    alice: ApiClient) -> None:
    got = await init(alice, "/x.bin", b"x" * 100)
    h = block_hash(b"x" * 100)
    for body in (b"", b"not a patch", b"DPT1\0\0\0\x02{}"):
        status, err = await put_patch(alice, got["block_url"], h, body)
        assert status == 400 and err["error"]["code"] == "invalid_patch", err
    status, err = await put_patch(alice, got["block_url"], h, b"DPT1" + b"\0" * (
        BLOCK_SIZE + patches.MAX_HEADER + 8))
    assert status == 413
    status, err = await put_patch(alice, got["block_url"], "NOTAHASH", b"DPT1")
    assert status == 400 and err["error"]["code"] == "invalid_hash"
    async with alice.session.put(url(got["block_url"], h, "/patch").replace("token=", "t="),
                                 data=b"DPT1") as resp:
        assert resp.status == 401


async def test_download_answers_a_patch_only_when_smaller(server: RunningServer,
                                                          alice: ApiClient) -> None:
    old = _random(3 * MiB, 6)
    v1 = await upload(alice, "/d.bin", old)
    unrelated = _random(MiB, 7)
    await upload(alice, "/u.bin", unrelated)
    new = old[:2 * MiB] + _random(1000, 8) + old[2 * MiB:]
    await upload(alice, "/d.bin", new, base_version=1)
    info = (await alice.get(f"/api/files/{v1['file_id']}/download")).body
    [block] = info["blocks"]
    path, _, query = block["url"].partition("?")

    async def fetch(bases: str) -> tuple[int, Any, bytes]:
        async with alice.session.get(f"{path}/patch?{query}&base={bases}") as resp:
            return resp.status, resp.headers, await resp.read()

    status, headers, payload = await fetch(block_hash(old))
    assert status == 200 and headers["X-Block-Encoding"] == "patch"
    assert headers["X-Block-Bases"] == block_hash(old) and len(payload) < 8000
    assert patches.apply_patch(payload, old) == new
    # Nothing in common: the block as GET /blocks/{hash} would send it.
    status, headers, payload = await fetch(block_hash(unrelated))
    assert status == 200 and headers["X-Block-Encoding"] in ("identity", "zstd")
    assert decompress_from_wire(headers["X-Block-Encoding"], payload) == new
    for bad in ("", "xyz", ",".join([block_hash(old)] * (patches.MAX_BASES + 1)).replace(
            block_hash(old), "a" * 64, 1) + "," + "b" * 64):
        status, _, _ = await fetch(urllib.parse.quote(bad))
        assert status == 400
    async with alice.session.get(f"{path}/patch?token=nope&base={block_hash(old)}") as resp:
        assert resp.status == 401


async def test_complete_records_the_scheme_and_refuses_unknown_ones(
        server: RunningServer, alice: ApiClient) -> None:
    data = os.urandom(5000)
    got = await init(alice, "/s.bin", data)
    receipt = await put_whole(alice, got["block_url"], data)
    r = await alice.post(f"/api/files/{got['file_id']}/complete",
                         {"blocks": [receipt], "chunking": "rabin-v9"})
    assert r.status == 400 and r.body["error"]["field"] == "chunking"
    r = await alice.post(f"/api/files/{got['file_id']}/complete", {"blocks": [receipt]})
    assert r.status == 200
    info = (await alice.get(f"/api/files/{got['file_id']}/download")).body
    assert info["chunking"] == FIXED_SCHEME  # a client that says nothing cut fixed blocks


async def requests_to(server: RunningServer, route: str) -> float:
    from tests.helpers import METRICS_AUTH

    r = await server.anonymous().get("/metrics", headers=METRICS_AUTH)
    text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("drive_http_requests_total{") and f'route="{route}"' in line)


async def test_drive_sync_sends_and_fetches_edits_as_patches(
        two: tuple[Device, Device], srv: RunningServer) -> None:
    a, b = two
    data = bytearray(_random(24 * MiB, 9))
    a.write("video.raw", bytes(data))
    await a.sync()
    await b.sync()
    data[7 * MiB:7 * MiB] = b"inserted"
    del data[15 * MiB:15 * MiB + 100]
    a.write("video.raw", bytes(data))
    puts = await requests_to(srv, "/blocks/{hash}/patch")
    blocks_in = await metric(srv, "drive_blocks_total", "in")
    await a.sync()
    sent = await metric(srv, "drive_blocks_total", "in") - blocks_in
    assert 2 <= sent <= 4  # the blocks around the two edits, nothing else
    assert await requests_to(srv, "/blocks/{hash}/patch") - puts == sent  # each as a patch
    await b.sync()
    assert b.read("video.raw") == bytes(data)
    assert await requests_to(srv, "/blocks/{hash}/patch") - puts == 2 * sent  # and back down


async def test_download_since_leaves_out_the_urls_of_held_blocks(server: RunningServer,
                                                                 alice: ApiClient) -> None:
    old = _random(12 * MiB, 10)
    v1 = await upload(alice, "/big.bin", old)
    new = old[:6 * MiB] + b"x" + old[6 * MiB:]
    await upload(alice, "/big.bin", new, base_version=1)
    full = (await alice.get(f"/api/files/{v1['file_id']}/download")).body
    since = (await alice.get(f"/api/files/{v1['file_id']}/download",
                             params={"since": "1"})).body
    assert [b["hash"] for b in since["blocks"]] == [b["hash"] for b in full["blocks"]]
    old_blocks = {block_hash(b) for b in split_bytes(old, CDC_SCHEME)}
    with_url = [b["hash"] for b in since["blocks"] if "url" in b]
    assert with_url and set(with_url).isdisjoint(old_blocks)
    assert all("url" in b or b["hash"] in old_blocks for b in since["blocks"])
    for raw in ("99", "0"):  # no such version: every URL
        r = await alice.get(f"/api/files/{v1['file_id']}/download", params={"since": raw})
        assert all("url" in b for b in r.body["blocks"])
    r = await alice.get(f"/api/files/{v1['file_id']}/download", params={"since": "x"})
    assert r.status == 400


async def test_a_held_block_that_is_not_here_after_all_is_fetched(
        server: RunningServer, alice: ApiClient, tmp_path: Any) -> None:
    """The client asked without the URLs of the version it holds, but its copy lost some of
    those blocks: it asks again for the URLs it lacks, and the file comes out right."""
    from syncclient.remote import Remote
    from syncclient.transfer import download_to_temp

    old = _random(12 * MiB, 11)
    v1 = await upload(alice, "/lost.bin", old)
    new = old[:6 * MiB] + b"y" + old[6 * MiB:]
    await upload(alice, "/lost.bin", new, base_version=1)
    target = tmp_path / "lost.bin"
    target.write_bytes(old[:3 * MiB] + _random(len(old) - 3 * MiB, 12))  # damaged copy
    base = tuple(block_hash(b) for b in split_bytes(old, CDC_SCHEME))
    async with Remote(server.url, alice.token) as remote:
        tmp, info = await download_to_temp(remote, v1["file_id"], target, {},
                                           base_blocks=base, base_version=1)
    assert tmp.read_bytes() == new and info["version"] == 2
    tmp.unlink()


async def test_patch_work_runs_two_at_a_time(server: RunningServer, alice: ApiClient,
                                            monkeypatch: Any) -> None:
    """A burst of patch requests waits its turn for the CPU work (each holds up to 16 MiB)."""
    import asyncio
    import threading
    import time

    from driveserver.blocks import patch_routes

    running, most = [0], [0]
    lock = threading.Lock()
    real = patch_routes._wire_form

    def counted(*args: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # long enough for the others to pile up behind the gate
        with lock:
            running[0] -= 1
        return real(*args)

    monkeypatch.setattr(patch_routes, "_wire_form", counted)
    old = _random(MiB, 13)
    v1 = await upload(alice, "/g.bin", old)
    await upload(alice, "/g.bin", old + b"more", base_version=1)
    [block] = (await alice.get(f"/api/files/{v1['file_id']}/download")).body["blocks"]
    path, _, query = block["url"].partition("?")

    async def one() -> int:
        async with alice.session.get(f"{path}/patch?{query}&base={block_hash(old)}") as resp:
            await resp.read()
            return resp.status

    assert await asyncio.gather(*(one() for _ in range(6))) == [200] * 6
    assert 1 <= most[0] <= patch_routes.PATCH_PARALLEL


async def test_a_restored_version_keeps_the_scheme_it_was_cut_by(alice: ApiClient) -> None:
    """A restore (and so the "unchanged" check that compares like with like) names the old
    version's scheme, not the default (it was labelled fixed)."""
    old = _random(5 * MiB, 11)
    v1 = await upload(alice, "/cut.bin", old)
    await upload(alice, "/cut.bin", _random(5 * MiB, 12), base_version=1)
    r = await alice.post(f"/api/files/{v1['file_id']}/restore/1")
    assert r.status == 200 and r.body["version"] == 3
    info = (await alice.get(f"/api/files/{v1['file_id']}/download", params={"version": "3"})).body
    assert info["chunking"] == CDC_SCHEME
    assert (await alice.get(f"/api/files/{v1['file_id']}/content")).body == old
