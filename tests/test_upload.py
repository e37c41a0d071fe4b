"""Blocks and versions over the API: 3-step and delta upload, download, content, versions,
restore, deduplication security, idempotency, quota, GC — on the local store."""

from __future__ import annotations

import asyncio
import io
import time
import urllib.parse
from typing import Any

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from driveproto.blocks import BLOCK_SIZE, block_hash
from driveproto.frames import encode_batch
from driveserver import appkeys
from driveserver.gc import collect_garbage
from tests.helpers import ApiClient, RunningServer, content, download_blocks, upload
from tests.stored_blocks import flip_byte_100, flip_last_bit, raw_objects, tamper

MiB = 1024 * 1024


def blob(n: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-ish bytes."""
    import random
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("size", [0, 1, 4 * MiB, 4 * MiB + 1, 9 * MiB + 123])
async def test_round_trip_sizes(alice: ApiClient, size: int) -> None:
    data = blob(size, size)
    done = await upload(alice, f"/f{size}.bin", data)
    assert done["status"] == "created" and done["version"] == 1
    assert await download_blocks(alice, done["file_id"]) == data
    r = await content(alice, done["file_id"])
    assert r.status == 200 and r.body == data or (size == 0 and r.body is None)
    meta = (await alice.get(f"/api/files/{done['file_id']}")).body
    assert meta["size"] == size and meta["version"] == 1 and meta["path"] == f"/f{size}.bin"
    n_blocks = len((await alice.get(f"/api/files/{done['file_id']}/download")).body["blocks"])
    assert n_blocks == -(-size // BLOCK_SIZE)


async def test_stored_bytes_contain_no_plaintext(alice: ApiClient, server: RunningServer) -> None:
    marker = b"TAX-RETURN-MARKER-7f3a9c"
    await upload(alice, "/secret.txt", marker * 5000)  # compressible: also exercises zstd
    await upload(alice, "/secret2.bin", blob(300_000) + marker + blob(1000, 1))
    hashes = {block_hash(marker * 5000), block_hash(blob(300_000) + marker + blob(1000, 1))}
    stored = raw_objects(server.config.blocks_dir)  # block files and packed small blocks
    assert len(stored) == 2
    for where, data in stored.items():  # the storage provider sees neither content nor hashes
        assert marker not in data and not any(h in where or h.encode() in data for h in hashes)
    for p in server.config.data_dir.rglob("*"):  # nor does anything else on disk hold content
        if p.is_file():
            assert marker not in p.read_bytes(), p


async def test_delta_upload_sends_only_changed_blocks(alice: ApiClient,
                                                      server: RunningServer) -> None:
    data = bytearray(blob(3 * BLOCK_SIZE + 10))
    first = await upload(alice, "/big.bin", bytes(data))
    data[BLOCK_SIZE + 5] ^= 0xFF  # one byte in the second block
    hashes = [block_hash(bytes(data[i:i + BLOCK_SIZE])) for i in range(0, len(data), BLOCK_SIZE)]
    plan = [{"order": i, "hash": h, "size": min(BLOCK_SIZE, len(data) - i * BLOCK_SIZE)}
            for i, h in enumerate(hashes)]
    r = await alice.post("/api/files/upload-init", {"file_id": first["file_id"],
                                                    "size": len(data), "base_version": 1,
                                                    "blocks": plan})
    assert r.status == 200
    assert r.body["blocks_to_upload"] == [hashes[1]]
    assert sorted(r.body["blocks_already_exist"]) == sorted({hashes[0], hashes[2], hashes[3]})
    block_url = r.body["block_url"]
    async with alice.session.put(block_url.replace("{hash}", hashes[1]),
                                 data=bytes(data[BLOCK_SIZE:2 * BLOCK_SIZE])) as resp:
        assert resp.status == 200
        receipt = await resp.json()
    blocks = [h if h != hashes[1] else receipt for h in hashes]
    r = await alice.post(f"/api/files/{first['file_id']}/complete",
                         {"blocks": blocks, "base_version": 1})
    assert r.status == 200 and r.body["version"] == 2
    assert await download_blocks(alice, first["file_id"]) == bytes(data)
    assert await download_blocks(alice, first["file_id"], version=1) != bytes(data)


async def test_wrong_hash_on_put_block_is_refused(alice: ApiClient) -> None:
    r = await alice.post("/api/files/upload-init", {"path": "/x", "size": 5})
    url = r.body["block_url"].replace("{hash}", block_hash(b"hello"))
    async with alice.session.put(url, data=b"HELLO") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "hash_mismatch"


async def test_block_never_stored_cannot_be_completed(alice: ApiClient) -> None:
    r = await alice.post("/api/files/upload-init", {"path": "/x", "size": 5})
    fake = block_hash(b"never uploaded")
    r = await alice.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": [fake]})
    assert r.status == 400 and r.error_code() == "missing_blocks"
    assert r.body["error"]["missing"] == [fake]
    assert await alice.listdir("/") == []  # the pending file is not visible


async def test_forged_and_expired_tokens_are_refused(alice: ApiClient,
                                                     server: RunningServer) -> None:
    done = await upload(alice, "/t.bin", b"token test")
    dl = (await alice.get(f"/api/files/{done['file_id']}/download")).body["blocks"][0]
    h = dl["hash"]
    base = server.url
    async with alice.session.get(f"{base}/blocks/{h}?token=forged") as resp:
        assert resp.status == 401
    async with alice.session.get(f"{base}/blocks/{h}") as resp:
        assert resp.status == 401
    # A valid read token for one block does not open another.
    other = await upload(alice, "/u.bin", b"another block")
    oh = (await alice.get(f"/api/files/{other['file_id']}/download")).body["blocks"][0]["hash"]
    token = dl["url"].split("token=")[1]
    async with alice.session.get(f"{base}/blocks/{oh}?token={token}") as resp:
        assert resp.status == 401
    # An upload token is not a read token, and vice versa.
    init = (await alice.post("/api/files/upload-init", {"path": "/v", "size": 3})).body
    async with alice.session.get(f"{base}/blocks/{h}?token={init['token']}") as resp:
        assert resp.status == 401
    async with alice.session.post(f"{base}/blocks/upload?token={token}", data=b"abc") as resp:
        assert resp.status == 401

    class OldSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 10 * 86400

    secret = (server.config.secrets_dir / "session.key").read_text().strip()
    for purpose, real, url in [
            ("block-read", urllib.parse.unquote(token), f"{base}/blocks/{h}"),
            ("upload", init["token"], f"{base}/blocks/upload")]:
        # The payload of a genuine grant (it names the grant's epochs and its record), re-signed.
        payload = URLSafeTimedSerializer(bytes.fromhex(secret),
                                         salt=f"drive.{purpose}").loads(real)
        old = URLSafeTimedSerializer(bytes.fromhex(secret), salt=f"drive.{purpose}",
                                     signer=OldSigner).dumps(payload)
        fresh = URLSafeTimedSerializer(bytes.fromhex(secret), salt=f"drive.{purpose}").dumps(
            payload)
        method = alice.session.get if purpose == "block-read" else alice.session.post
        async with method(f"{url}?token={old}", data=None if purpose == "block-read" else b"abc"
                          ) as resp:
            assert resp.status == 401, purpose
        async with method(f"{url}?token={fresh}", data=None if purpose == "block-read" else b"abc"
                          ) as resp:
            assert resp.status == 200, purpose  # the same payload, fresh, is accepted


async def test_a_batch_tells_each_user_only_of_the_blocks_they_may_read(
        alice: ApiClient, bob: ApiClient) -> None:
    """upload-init/batch asks once for every block its files name: what Bob already has is
    known to him in every file that names it, Alice's block in none, as one by one."""
    hers, his = b"alice's data " * 300, b"bob's data " * 300
    await upload(alice, "/a.txt", hers)
    await upload(bob, "/b.txt", his)

    def item(path: str, *datas: bytes) -> dict[str, Any]:
        return {"path": path, "size": sum(map(len, datas)), "blocks": [
            {"order": i, "hash": block_hash(d), "size": len(d)} for i, d in enumerate(datas)]}

    r = await bob.post("/api/files/upload-init/batch", {"files": [
        item("/1", his), item("/2", hers), item("/3", hers, his), {"path": "/4", "size": 1}]})
    known = [res.get("blocks_already_exist") for res in r.body["results"]]
    assert known == [[block_hash(his)], [], [block_hash(his)], None]


async def test_other_user_cannot_read_or_claim_a_block(alice: ApiClient, bob: ApiClient) -> None:
    data = b"alice's thesis draft " * 1000
    done = await upload(alice, "/thesis.txt", data)
    h = block_hash(data)
    # Bob cannot get a download grant for Alice's file...
    assert (await bob.get(f"/api/files/{done['file_id']}/download")).status == 404
    assert (await content(bob, done["file_id"])).status == 404
    # ...and knowing the hash does not let him skip the upload (no Dropship).
    r = await bob.post("/api/files/upload-init", {"path": "/steal.txt", "size": len(data),
                                                  "blocks": [{"order": 0, "hash": h,
                                                              "size": len(data)}]})
    assert r.body["blocks_to_upload"] == [h] and r.body["blocks_already_exist"] == []
    r2 = await bob.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": [h]})
    assert r2.status == 400 and r2.body["error"]["missing"] == [h]
    # A receipt Alice got is worthless to Bob.
    a_init = (await alice.post("/api/files/upload-init", {"path": "/again.txt",
                                                          "size": len(data)})).body
    async with alice.session.post(a_init["upload_url"], data=data) as resp:
        alice_receipt = (await resp.json())["blocks"][0]
    r3 = await bob.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": [alice_receipt]})
    assert r3.status == 400 and r3.error_code() == "missing_blocks"
    # If Bob really has the bytes he can upload them; storage dedups, he gets his own copy.
    async with bob.session.post(r.body["upload_url"], data=data) as resp:
        bob_blocks = (await resp.json())["blocks"]
    r4 = await bob.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": bob_blocks})
    assert r4.status == 200
    assert await download_blocks(bob, r.body["file_id"]) == data


async def test_stale_base_version_is_409_and_retry_is_idempotent(alice: ApiClient) -> None:
    v1 = await upload(alice, "/doc.txt", b"version one")
    fid = v1["file_id"]
    init = (await alice.post("/api/files/upload-init",
                             {"file_id": fid, "size": 11, "base_version": 1})).body
    async with alice.session.post(init["upload_url"], data=b"version two") as resp:
        blocks = (await resp.json())["blocks"]
    r = await alice.post(f"/api/files/{fid}/complete", {"blocks": blocks, "base_version": 1})
    assert r.status == 200 and r.body == {"status": "created", "file_id": fid, "version": 2}
    # The response was "lost": the same request again gives the same version, no new one.
    again = await alice.post(f"/api/files/{fid}/complete", {"blocks": blocks, "base_version": 1})
    assert again.status == 200 and again.body["version"] == 2
    assert again.body["status"] == "unchanged"
    # Another device still on version 1 with different content loses the race: 409.
    init = (await alice.post("/api/files/upload-init", {"file_id": fid, "size": 13})).body
    async with alice.session.post(init["upload_url"], data=b"version three") as resp:
        other = (await resp.json())["blocks"]
    r = await alice.post(f"/api/files/{fid}/complete", {"blocks": other, "base_version": 1})
    assert r.status == 409 and r.error_code() == "version_conflict"
    assert r.body["error"]["current_version"] == 2
    versions = (await alice.get(f"/api/files/{fid}/versions")).body["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["modified_by"] == "alice@example.com"
    assert versions[0]["device"] == "alice-laptop"
    # upload-init refuses a stale base_version up front too.
    r = await alice.post("/api/files/upload-init", {"file_id": fid, "size": 1, "base_version": 1})
    assert r.status == 409


async def test_two_writers_one_base_version_one_winner(alice: ApiClient) -> None:
    import asyncio

    v1 = await upload(alice, "/race.txt", b"base")
    fid = v1["file_id"]
    payloads = [b"writer A", b"writer B"]
    blocks = []
    for p in payloads:
        init = (await alice.post("/api/files/upload-init", {"file_id": fid, "size": len(p)})).body
        async with alice.session.post(init["upload_url"], data=p) as resp:
            blocks.append((await resp.json())["blocks"])
    results = await asyncio.gather(*[
        alice.post(f"/api/files/{fid}/complete", {"blocks": b, "base_version": 1})
        for b in blocks])
    assert sorted(r.status for r in results) == [200, 409]


async def test_restore_makes_a_new_version_with_old_content(alice: ApiClient) -> None:
    v1 = await upload(alice, "/r.txt", b"original words")
    await upload(alice, "/r.txt", b"overwritten!!")
    fid = v1["file_id"]
    r = await alice.post(f"/api/files/{fid}/restore/1")
    assert r.status == 200 and r.body["version"] == 3 and r.body["restored_from"] == 1
    assert (await content(alice, fid)).body == b"original words"
    assert (await alice.post(f"/api/files/{fid}/restore/99")).status == 404
    versions = (await alice.get(f"/api/files/{fid}/versions")).body["versions"]
    assert versions[0]["restored_from"] == 1


async def test_content_range_etag_and_disposition(alice: ApiClient) -> None:
    data = blob(BLOCK_SIZE + 1000, 7)
    done = await upload(alice, "/Résumé final.pdf", data)
    fid = done["file_id"]
    r = await content(alice, fid)
    etag = r.headers["ETag"]
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20final.pdf" in r.headers["Content-Disposition"]
    r = await content(alice, fid, headers={"Range": f"bytes={BLOCK_SIZE - 10}-{BLOCK_SIZE + 9}"})
    assert r.status == 206 and r.body == data[BLOCK_SIZE - 10: BLOCK_SIZE + 10]
    assert r.headers["Content-Range"] == f"bytes {BLOCK_SIZE - 10}-{BLOCK_SIZE + 9}/{len(data)}"
    r = await content(alice, fid, headers={"Range": "bytes=-5"})
    assert r.status == 206 and r.body == data[-5:]
    r = await content(alice, fid, headers={"Range": f"bytes={len(data)}-"})
    assert r.status == 416
    r = await content(alice, fid, headers={"If-None-Match": etag})
    assert r.status == 304


async def test_tampered_block_is_detected_and_not_served(alice: ApiClient,
                                                         server: RunningServer) -> None:
    data = b"precious bytes " * 100
    done = await upload(alice, "/p.txt", data)
    name = server.app[appkeys.KEYRING].object_name(block_hash(data))
    tamper(server.config.blocks_dir, name, flip_last_bit)
    dl = (await alice.get(f"/api/files/{done['file_id']}/download")).body["blocks"][0]
    async with alice.session.get(dl["url"]) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "block_corrupt"
    r = await content(alice, done["file_id"])
    assert r.status == 500 and data not in (r.body if isinstance(r.body, bytes) else b"")


async def test_body_longer_than_token_size_is_refused(alice: ApiClient) -> None:
    init = (await alice.post("/api/files/upload-init", {"path": "/small", "size": 10})).body

    async def body():
        yield b"0123456789"
        yield b"and more than promised"

    async with alice.session.post(init["upload_url"], data=body()) as resp:
        assert resp.status == 413


async def test_quota_is_enforced_with_507(alice: ApiClient, server: RunningServer) -> None:
    async with server.app[appkeys.DB].transaction() as tx:
        await tx.execute("UPDATE users SET quota_bytes = 1000 WHERE id = ?", (alice.user_id,))
    await upload(alice, "/fits.bin", b"x" * 600)
    r = await alice.post("/api/files/upload-init", {"path": "/too-much.bin", "size": 500})
    assert r.status == 507 and r.error_code() == "over_quota"
    assert (await alice.get("/api/quota")).body == {"used": 600, "total": 1000}
    # Replacing a file counts only the difference.
    r = await alice.post("/api/files/upload-init", {"path": "/fits.bin", "size": 900})
    assert r.status == 200


async def test_batch_upload_of_small_files(alice: ApiClient) -> None:
    files = {f"/many/f{i}.txt": f"small file {i}".encode() for i in range(20)}
    r = await alice.post("/api/files/upload-init/batch", {"files": [
        {"path": p, "size": len(d), "blocks": [{"order": 0, "hash": block_hash(d),
                                                "size": len(d)}]} for p, d in files.items()]
        + [{"path": "/bad/../x", "size": 1}]})
    assert r.status == 200
    results = r.body["results"]
    assert results[-1]["error"]["code"] == "invalid_name"
    body = encode_batch([(block_hash(d), d) for d in files.values()])
    async with alice.session.post(r.body["batch_url"], data=body) as resp:
        assert resp.status == 200
        receipts = {b["hash"]: b for b in (await resp.json())["blocks"]}
    r = await alice.post("/api/files/complete/batch", {"files": [
        {"file_id": res["file_id"], "blocks": [receipts[block_hash(d)]]}
        for res, d in zip(results, files.values(), strict=False)]
        + [{"file_id": results[0]["file_id"], "blocks": [receipts[block_hash(files["/many/f0.txt"])]],
            "base_version": 7}]})
    assert r.status == 200
    out = r.body["results"]
    assert all(o.get("status") == "created" for o in out[:20])
    assert out[20]["error"]["code"] == "version_conflict"
    assert len(await alice.listdir("/many")) == 20
    assert (await content(alice, results[3]["file_id"])).body == b"small file 3"


async def test_trash_purge_and_gc(alice: ApiClient, server: RunningServer) -> None:
    app = server.app
    keep = await upload(alice, "/keep.txt", b"keep me " * 100)
    gone = await upload(alice, "/gone.txt", b"delete me " * 100)
    # An upload that was never completed leaves an orphan block.
    init = (await alice.post("/api/files/upload-init", {"path": "/never", "size": 9})).body
    async with alice.session.post(init["upload_url"], data=b"abandoned") as resp:
        assert resp.status == 200
    assert (await alice.delete(f"/api/files/{gone['file_id']}")).status == 204
    pipeline = app[appkeys.PIPELINE]
    h_gone, h_keep = block_hash(b"delete me " * 100), block_hash(b"keep me " * 100)
    h_orphan = block_hash(b"abandoned")
    db, store = app[appkeys.DB], app[appkeys.STORE]
    # Within the grace period nothing is deleted.
    await collect_garbage(db, store, 7 * 86400)
    assert await pipeline.exists(h_gone) and await pipeline.exists(h_orphan)
    # Past it, the never-committed block goes; one in the trash is still referenced and stays.
    report = await collect_garbage(db, store, -1)
    assert "0 unreferenced" in report and "1 never-committed" in report
    assert await pipeline.exists(h_gone) and not await pipeline.exists(h_orphan)
    assert (await alice.delete(f"/api/trash/{gone['file_id']}")).status == 204
    await collect_garbage(db, store, 7 * 86400)
    assert await pipeline.exists(h_gone)
    # Purged and past the grace period: deleted; referenced blocks never are.
    report = await collect_garbage(db, store, -1)
    assert "1 unreferenced" in report and "0 never-committed" in report
    assert not await pipeline.exists(h_gone)
    assert await pipeline.exists(h_keep)
    assert (await content(alice, keep["file_id"])).body == b"keep me " * 100


async def test_complete_after_gc_took_its_block_reports_it_missing(alice: ApiClient,
                                                                   server: RunningServer) -> None:
    """GC first, complete after (one after the other): an orphan block GC deleted is reported
    missing by both complete routes; sent again, it completes and stays."""
    app = server.app
    await upload(alice, "/g", b"first version")
    data = b"race with gc"
    init = (await alice.post("/api/files/upload-init", {"path": "/g", "size": len(data)})).body
    async with alice.session.post(init["upload_url"], data=data) as resp:
        blocks = (await resp.json())["blocks"]
    await collect_garbage(app[appkeys.DB], app[appkeys.STORE], -1)  # deletes the orphan
    r = await alice.post(f"/api/files/{init['file_id']}/complete", {"blocks": blocks})
    assert r.status == 400 and r.error_code() == "missing_blocks"
    # The batch route looks all receipted blocks up at once; the gone one still fails its file.
    r = await alice.post("/api/files/complete/batch",
                         {"files": [{"file_id": init["file_id"], "blocks": blocks}]})
    assert r.body["results"][0]["error"]["code"] == "missing_blocks"
    async with alice.session.post(init["upload_url"], data=data) as resp:
        blocks = (await resp.json())["blocks"]
    r = await alice.post(f"/api/files/{init['file_id']}/complete", {"blocks": blocks})
    assert r.status == 200
    await collect_garbage(app[appkeys.DB], app[appkeys.STORE], -1)
    assert (await content(alice, init["file_id"])).body == data


async def test_gc_never_breaks_a_concurrent_complete(alice: ApiClient,
                                                     server: RunningServer) -> None:
    """GC and complete really at once (gathered), 20 times, each on a block GC may take: the
    complete either reports the block missing or makes a version that reads back, verified,
    also after another GC. (tests/test_gc_race.py races them harder, and pins the two
    interleavings that matter.)"""
    app = server.app
    db, store = app[appkeys.DB], app[appkeys.STORE]
    await upload(alice, "/g", b"first version")
    outcomes = set()
    for i in range(20):
        data = f"race with gc {i}".encode() * 40
        init = (await alice.post("/api/files/upload-init", {"path": "/g", "size": len(data)})).body
        async with alice.session.post(init["upload_url"], data=data) as resp:
            blocks = (await resp.json())["blocks"]
        if i % 2:
            body = {"files": [{"file_id": init["file_id"], "blocks": blocks}]}
            reply, _ = await asyncio.gather(alice.post("/api/files/complete/batch", body),
                                            collect_garbage(db, store, -1))
            result = reply.body["results"][0]
            code = result["error"]["code"] if "error" in result else "created"
        else:
            reply, _ = await asyncio.gather(
                alice.post(f"/api/files/{init['file_id']}/complete", {"blocks": blocks}),
                collect_garbage(db, store, -1))
            code = reply.error_code() or "created"
        assert code in ("missing_blocks", "created"), reply
        outcomes.add(code)
        if code == "created":
            await collect_garbage(db, store, -1)
            assert await download_blocks(alice, init["file_id"]) == data
    assert "created" in outcomes


async def test_upload_init_bad_input(alice: ApiClient) -> None:
    await alice.mkdir("/dir")
    cases = [
        ({"path": "/a", "size": -1}, 400), ({"path": "/a"}, 400), ({"size": 1}, 400),
        ({"path": "/a", "size": "1"}, 400), ({"path": "/dir", "size": 1}, 409),
        ({"path": "/a", "size": 3, "blocks": [{"order": 0, "hash": "zz", "size": 3}]}, 400),
        ({"path": "/a", "size": 3, "blocks": [{"order": 0, "hash": "a" * 64, "size": 4}]}, 400),
        ({"file_id": "f_nope", "size": 1}, 404),
        ({"path": "/a", "size": 10**15}, 413),
    ]
    for body, status in cases:
        r = await alice.post("/api/files/upload-init", body)
        assert r.status == status, (body, r)
    assert await alice.listdir("/") == ["dir"]


async def test_block_batch_bad_frames(alice: ApiClient) -> None:
    init = (await alice.post("/api/files/upload-init", {"path": "/b", "size": 100})).body
    for body in (b"short", b"z" * 64 + b"\x00\x00\x00\x00\x05abc"):
        async with alice.session.post(init["batch_url"], data=io.BytesIO(body)) as resp:
            assert resp.status == 400


async def test_corrupt_block_mid_stream_cuts_the_content_response(alice: ApiClient,
                                                                  server: RunningServer) -> None:
    import aiohttp

    data = blob(BLOCK_SIZE, 1) + b"second block, which will be corrupted"
    done = await upload(alice, "/two.bin", data)
    name = server.app[appkeys.KEYRING].object_name(block_hash(data[BLOCK_SIZE:]))
    tamper(server.config.blocks_dir, name, flip_byte_100)
    got = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with alice.session.get(f"{server.url}/api/files/{done['file_id']}/content",
                                     headers=alice.headers) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(65536):
                got += chunk
    assert bytes(got) == data[: len(got)] and len(got) <= BLOCK_SIZE  # never the corrupt bytes


async def test_version_retention_keeps_the_newest(tmp_path, database: dict[str, Any]) -> None:
    from tests.helpers import start_server

    srv = await start_server(tmp_path / "d", **database, keep_versions=2)
    try:
        async with srv.user("ret@example.com") as c:
            for i in range(4):
                done = await upload(c, "/r.txt", f"version {i}".encode())
            versions = (await c.get(f"/api/files/{done['file_id']}/versions")).body["versions"]
            assert [v["version"] for v in versions] == [4, 3]
            assert (await content(c, done["file_id"], params={"version": "1"})).status == 404
            # The pruned versions' blocks are garbage now; the kept ones are not.
            app = srv.app
            report = await collect_garbage(app[appkeys.DB], app[appkeys.STORE], -1)
            assert "2 unreferenced" in report
            assert (await content(c, done["file_id"], params={"version": "3"})).body == \
                b"version 2"
    finally:
        await srv.stop()


async def test_retention_keeps_versions_within_either_limit(tmp_path,
        database: dict[str, Any]) -> None:
    from tests.helpers import start_server

    srv = await start_server(tmp_path / "d", **database, keep_versions=2, keep_days=30)
    try:
        async with srv.user("ret2@example.com") as c:
            for i in range(4):
                done = await upload(c, "/r.txt", f"v{i}".encode())
            versions = (await c.get(f"/api/files/{done['file_id']}/versions")).body["versions"]
            assert [v["version"] for v in versions] == [4, 3, 2, 1]  # all younger than 30 days
            async with srv.app[appkeys.DB].transaction() as tx:
                await tx.execute("UPDATE file_versions SET created_at = created_at - 40 * 86400")
            await upload(c, "/r.txt", b"v4")
            versions = (await c.get(f"/api/files/{done['file_id']}/versions")).body["versions"]
            assert [v["version"] for v in versions] == [5, 4]
    finally:
        await srv.stop()


async def test_restore_from_trash_respects_quota(alice: ApiClient, server: RunningServer) -> None:
    done = await upload(alice, "/big.bin", b"x" * 600)
    assert (await alice.delete(f"/api/files/{done['file_id']}")).status == 204
    await upload(alice, "/other.bin", b"y" * 600)
    async with server.app[appkeys.DB].transaction() as tx:
        await tx.execute("UPDATE users SET quota_bytes = 1000 WHERE id = ?", (alice.user_id,))
    r = await alice.post(f"/api/trash/{done['file_id']}/restore")
    assert r.status == 507 and r.error_code() == "over_quota"


async def test_a_batch_of_a_thousand_tiny_files(alice: ApiClient) -> None:
    """The grant stays short enough for a URL and the frames' headers do not count against it."""
    files = {f"/tiny/{i}.txt": f"{i}".encode() for i in range(1000)}
    r = await alice.post("/api/files/upload-init/batch", {"files": [
        {"path": p, "size": len(d)} for p, d in files.items()]})
    assert r.status == 200 and len(r.body["batch_url"]) < 1024
    body = encode_batch(list({block_hash(d): d for d in files.values()}.items()))
    async with alice.session.post(r.body["batch_url"], data=body) as resp:
        assert resp.status == 200, await resp.text()
        receipts = {b["hash"]: b for b in (await resp.json())["blocks"]}
    r = await alice.post("/api/files/complete/batch", {"files": [
        {"file_id": res["file_id"], "blocks": [receipts[block_hash(d)]]}
        for res, d in zip(r.body["results"], files.values(), strict=True)]})
    assert all(x.get("status") == "created" for x in r.body["results"])
    assert len(await alice.listdir("/tiny")) == 1000


async def test_a_refused_file_in_a_batch_leaves_no_trace_and_the_others_stay(
        alice: ApiClient, server: RunningServer) -> None:
    """A batch runs first without a savepoint per file (meta.savepoints.optimistic); a file
    refused after it wrote something (here a folder made for it, then over quota) must still
    leave nothing, on both routes, while the files around it are kept with their results."""
    async with server.app[appkeys.DB].transaction() as tx:
        await tx.execute("UPDATE users SET quota_bytes = 10000 WHERE id = ?", (alice.user_id,))
    files = {f"/kept/f{i}.txt": f"kept {i}".encode() for i in range(6)}
    items: list[dict[str, Any]] = [
        {"path": p, "size": len(d), "blocks": [{"order": 0, "hash": block_hash(d),
                                                "size": len(d)}]} for p, d in files.items()]
    items.insert(3, {"path": "/made-for-it/huge.bin", "size": 50_000})
    r = await alice.post("/api/files/upload-init/batch", {"files": items})
    assert r.status == 200
    results = r.body["results"]
    assert results[3]["error"]["code"] == "over_quota"
    assert [res.get("file_id") is not None for res in results] == [True] * 3 + [False] + [True] * 3
    assert "made-for-it" not in await alice.listdir("/")
    changes = (await alice.get("/api/sync/changes", params={"cursor": "0"})).body
    assert not [c for c in changes["changes"] if "made-for-it" in c["path"]]
    assert [c for c in changes["changes"] if c["path"] == "/kept"]  # control: it is the feed

    ok = [res for res in results if "file_id" in res]
    body = encode_batch([(block_hash(d), d) for d in files.values()])
    async with alice.session.post(r.body["batch_url"], data=body) as resp:
        receipts = {b["hash"]: b for b in (await resp.json())["blocks"]}
    batch = [{"file_id": res["file_id"], "blocks": [receipts[block_hash(d)]]}
             for res, d in zip(ok, files.values(), strict=True)]
    batch.insert(2, {"file_id": ok[0]["file_id"], "base_version": 9,
                     "blocks": [receipts[block_hash(files["/kept/f0.txt"])]]})
    r = await alice.post("/api/files/complete/batch", {"files": batch})
    out = r.body["results"]
    assert out[2]["error"]["code"] == "version_conflict"
    assert [o.get("status") for o in out[:2] + out[3:]] == ["created"] * 6
    for res, data in zip(ok, files.values(), strict=True):
        assert (await content(alice, res["file_id"])).body == data
    info = (await alice.get(f"/api/files/{ok[0]['file_id']}/download")).body
    assert info["version"] == 1  # the refused compare-and-swap wrote no version


@pytest.mark.sqlite_only("counts statements with SQLite's trace callback")
async def test_a_batch_without_refusals_runs_no_savepoint(
        alice: ApiClient, server: RunningServer) -> None:
    """Each savepoint makes the full-text name index write a segment of its own: a batch where
    every file is accepted runs none, and one with a refusal runs one per file (its second
    run), so the savepoints are there exactly when a refusal needs them."""
    writer = server.app[appkeys.DB]._writer  # type: ignore[attr-defined]
    seen: list[str] = []
    writer.set_trace_callback(seen.append)
    try:
        items = [{"path": f"/sp/f{i}.txt", "size": 1} for i in range(10)]
        r = await alice.post("/api/files/upload-init/batch", {"files": items})
        assert [res.get("version") for res in r.body["results"]] == [0] * 10
        assert not [s for s in seen if s.startswith("SAVEPOINT")]
        seen.clear()
        items.append({"path": "/sp/../bad", "size": 1})
        r = await alice.post("/api/files/upload-init/batch", {"files": items})
        assert r.body["results"][-1]["error"]["code"] == "invalid_name"
        assert len([s for s in seen if s.startswith("SAVEPOINT")]) == 11
    finally:
        writer.set_trace_callback(None)
