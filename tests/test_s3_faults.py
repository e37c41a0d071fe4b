"""Uploads and downloads through the real server on a real S3 server (SeaweedFS) with faults
injected between them (:mod:`tests.s3_faults`): 5xx, 503 SlowDown, latency, resets, replies lost
after S3 acted, truncated and bit-flipped bodies.

What must hold, whatever the faults: every upload either completes (through the S3 client's
retries) or fails with a clear JSON error; nothing committed references a block that was not
stored (afterwards, with faults off, every block of every committed version reads back and
verifies); nothing corrupt is ever served (a download's bytes hash to what was uploaded, or
the download fails). ``run_campaign`` is also what ``scripts/s3_fault_sweep.py`` runs at volume.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from driveproto.blocks import BLOCK_SIZE, block_hash
from driveserver import appkeys
from driveserver.storage.base import StorageError
from driveserver.storage.s3 import S3BlockStore
from tests.helpers import ApiClient, RunningServer, start_server
from tests.s3_faults import ALL_KINDS, DEFAULT_KINDS, FaultPlan, S3FaultProxy
from tests.s3server import S3Server

SEED = 1701


@dataclass
class Outcome:
    """What a campaign saw, for its assertions and for the script's report."""

    uploads_ok: int = 0
    uploads_failed: int = 0
    downloads_ok: int = 0
    downloads_failed: int = 0
    versions_verified: int = 0
    blocks_verified: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    unclear: list[str] = field(default_factory=list)  # failures without the JSON error shape
    corrupt: list[str] = field(default_factory=list)  # bytes served that were not uploaded
    lost: list[str] = field(default_factory=list)  # committed blocks that do not read back



def _sizes(rng: random.Random, n: int, large: bool) -> list[int]:
    """Mostly small files, some of several blocks (the multi-block paths)."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(rng.randrange(0, 64 * 1024))
        elif r < 0.9 or not large:
            out.append(rng.randrange(64 * 1024, 1024 * 1024))
        else:
            out.append(rng.randrange(BLOCK_SIZE, 2 * BLOCK_SIZE + 4096))
    return out


def _clear_error(status: int, body: Any) -> bool:
    """An error a client can act on: a 4xx/5xx status with ``{"error": {"code", "message"}}``
    whose code names the trouble (``internal_error`` is the server's "I did not expect this")."""
    return status >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict) \
        and bool(body["error"].get("code")) and bool(body["error"].get("message")) \
        and body["error"]["code"] != "internal_error"


async def _json(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


async def _upload(client: ApiClient, path: str, data: bytes, out: Outcome
                  ) -> tuple[str, bytes] | None:
    """The 3-step upload; (file_id, data) once committed, None after a clear error."""
    r = await client.post("/api/files/upload-init", {"path": path, "size": len(data)})
    if r.status != 200:
        return _failed(out, "init", r.status, r.body)
    file_id, url = r.body["file_id"], r.body["upload_url"]
    blocks: list[Any] = []
    if data:
        async with client.session.post(url, data=data) as resp:
            body = await _json(resp)
            if resp.status != 200:
                return _failed(out, "blocks", resp.status, body)
            blocks = body["blocks"]
    r = await client.post(f"/api/files/{file_id}/complete", {"blocks": blocks})
    if r.status != 200:
        return _failed(out, "complete", r.status, r.body)
    out.uploads_ok += 1
    return file_id, data


def _failed(out: Outcome, step: str, status: int, body: Any) -> None:
    out.uploads_failed += 1
    code = body["error"]["code"] if _clear_error(status, body) else "UNCLEAR"
    out.errors[f"{step}:{status}:{code}"] += 1
    if code == "UNCLEAR":
        out.unclear.append(f"{step} answered {status}: {body!r:.200}")


async def _download(client: ApiClient, file_id: str, data: bytes, out: Outcome) -> None:
    """Both download paths: the content route, and the block URLs (each block checked here,
    as a client does). Either the bytes are exactly what was uploaded or the download fails."""
    want = hashlib.sha256(data).hexdigest()
    try:
        async with client.session.get(f"{client.base_url}/api/files/{file_id}/content",
                                      headers=client.headers) as resp:
            if resp.status == 200:
                got = await resp.read()
                if hashlib.sha256(got).hexdigest() != want:
                    out.corrupt.append(f"content of {file_id}: {len(got)} bytes, not the upload")
                out.downloads_ok += 1
            else:
                body = await _json(resp)
                out.downloads_failed += 1
                code = body["error"]["code"] if _clear_error(resp.status, body) else "UNCLEAR"
                out.errors[f"content:{resp.status}:{code}"] += 1
                if resp.status == 404:
                    out.unclear.append(f"content of committed {file_id} answered 404: {body}")
                if not _clear_error(resp.status, body):
                    out.unclear.append(f"content answered {resp.status}: {body!r:.200}")
    except aiohttp.ClientPayloadError:
        # Cut short after the headers went out: the client sees a short body, never a wrong one.
        out.downloads_failed += 1
        out.errors["content:cut"] += 1
    r = await client.get(f"/api/files/{file_id}/download")
    if r.status != 200:
        out.downloads_failed += 1
        out.errors[f"download:{r.status}"] += 1
        if not _clear_error(r.status, r.body):
            out.unclear.append(f"download answered {r.status}: {r.body!r:.200}")
        return
    from driveproto.wire import decompress_from_wire
    got = bytearray()
    for b in r.body["blocks"]:
        async with client.session.get(b["url"]) as resp:
            if resp.status != 200:
                body = await _json(resp)
                out.downloads_failed += 1
                out.errors[f"block:{resp.status}"] += 1
                if not _clear_error(resp.status, body):
                    out.unclear.append(f"block answered {resp.status}: {body!r:.200}")
                return
            piece = decompress_from_wire(resp.headers["X-Block-Encoding"], await resp.read())
        if block_hash(piece) != b["hash"]:
            out.corrupt.append(f"block {b['hash'][:12]} of {file_id} served with other bytes")
        got += piece
    if hashlib.sha256(got).hexdigest() != want:
        out.corrupt.append(f"blocks of {file_id} do not add up to the upload")
    out.downloads_ok += 1


async def verify_committed(server: RunningServer, out: Outcome) -> None:
    """Every block of every committed version reads back from the store and verifies (the
    pipeline decrypts and hashes it); run with the faults off."""
    db, pipeline = server.app[appkeys.DB], server.app[appkeys.PIPELINE]
    rows = await db.fetchall(
        "SELECT v.id, v.size, v.checksum, b.block_hash, b.size AS bsize FROM file_versions v"
        " LEFT JOIN version_blocks b ON b.version_id = v.id ORDER BY v.id, b.ord")
    versions: dict[int, list[tuple[str, int]]] = {}
    for row in rows:
        blocks = versions.setdefault(row["id"], [])
        if row["block_hash"] is not None:
            blocks.append((row["block_hash"], row["bsize"]))
    for version_id, blocks in versions.items():
        for h, size in blocks:
            try:
                data = await pipeline.get(h)
            except Exception as exc:  # BlockNotFound, BlockCorrupt, StorageError: all a loss
                out.lost.append(f"version {version_id} block {h[:12]}: {exc!r:.120}")
                continue
            if len(data) != size:
                out.lost.append(f"version {version_id} block {h[:12]}: {len(data)} != {size}")
            out.blocks_verified += 1
        out.versions_verified += 1


async def run_campaign(tmp: Path, s3: S3Server, bucket: str, *, seed: int, files: int,
                       plan: FaultPlan, concurrency: int = 4, large: bool = True
                       ) -> tuple[Outcome, S3FaultProxy]:
    """Upload ``files`` files (some overwritten once), download each committed one, all through
    the fault proxy; then, faults off, verify everything committed."""
    rng = random.Random(seed)
    out = Outcome()
    proxy = S3FaultProxy(s3.endpoint_url, seed=seed, plan=plan, enabled=False)
    await proxy.start()
    srv = await start_server(
        tmp / "data", backend="s3", s3_endpoint_url=proxy.url, s3_bucket=bucket,
        s3_region=s3.region, s3_access_key_id=s3.access_key, s3_secret_access_key=s3.secret_key)
    try:
        async with srv.user("faults@example.com", device="laptop") as client:
            proxy.enabled = True
            sem = asyncio.Semaphore(concurrency)
            committed: dict[str, bytes] = {}
            sizes = _sizes(rng, files, large)
            payloads = [rng.randbytes(n) for n in sizes]

            async def one(i: int) -> None:
                async with sem:
                    path = f"/f{i % max(1, files * 3 // 4)}.bin"  # a quarter overwrite a file
                    done = await _upload(client, path, payloads[i], out)
                    if done is not None:
                        committed[done[0]] = done[1]
                        await _download(client, done[0], done[1], out)

            await asyncio.gather(*(one(i) for i in range(files)))
            proxy.enabled = False
            for file_id, data in committed.items():  # what is current now reads back, faults off
                await _download(client, file_id, data, out)
            await verify_committed(srv, out)
    finally:
        proxy.enabled = False
        await srv.stop()
        await proxy.close()
    return out, proxy


# --- the proxy and the store's error handling, one fault kind at a time ----------------------

@pytest.fixture
async def direct_store(s3_server: S3Server, s3_bucket: str):
    store = S3BlockStore(bucket=s3_bucket, **_store_kwargs(s3_server, s3_server.endpoint_url))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def _store_kwargs(s3: S3Server, url: str) -> dict[str, Any]:
    return {"endpoint_url": url, "region": s3.region, "access_key_id": s3.access_key,
            "secret_access_key": s3.secret_key}


NAME = "ab" * 32


async def test_the_proxy_passes_calls_through_untouched(s3_server: S3Server, s3_bucket: str,
                                                        direct_store: S3BlockStore) -> None:
    async with S3FaultProxy(s3_server.endpoint_url, seed=1, plan=FaultPlan(share=0.0)) as proxy:
        store = S3BlockStore(bucket=s3_bucket, **_store_kwargs(s3_server, proxy.url))
        await store.start()
        try:
            assert await store.put_if_absent(NAME, b"x" * 100_000) is True
            assert await store.put_if_absent(NAME, b"x" * 100_000) is False  # 412 passed back
            assert await store.exists(NAME) and await store.stat_mtime(NAME)
            assert await store.get(NAME) == b"x" * 100_000
            assert [n async for n in store.iterate()] == [NAME]
            await store.delete(NAME)
            assert not await store.exists(NAME)
        finally:
            await store.close()
        assert proxy.counts == {"forwarded": proxy.calls} and proxy.calls >= 7


@pytest.mark.parametrize("kind", ["error500", "slowdown", "reset", "truncate"])
async def test_every_call_faulted_fails_clearly_after_retries(
        kind: str, s3_server: S3Server, s3_bucket: str, direct_store: S3BlockStore) -> None:
    """Each kind alone, on every call: the store retries (max_attempts calls), then raises a
    StorageError naming the endpoint — never another exception type, never wrong bytes."""
    await direct_store.put_if_absent(NAME, b"y" * 50_000)
    plan = FaultPlan(share=1.0, kinds=(kind,))
    async with S3FaultProxy(s3_server.endpoint_url, seed=2, plan=plan) as proxy:
        store = S3BlockStore(bucket=s3_bucket, max_attempts=2,
                             **_store_kwargs(s3_server, proxy.url))
        await store.start()
        try:
            # (A truncated body was an aiohttp error that escaped this boundary unretried, and
            # became a 500 "internal error": the regression this case holds.)
            with pytest.raises(StorageError, match="127.0.0.1"):
                await store.get(NAME)
            assert proxy.calls >= 2, proxy.summary()
        finally:
            await store.close()
    assert proxy.counts[kind] >= 2, proxy.summary()


@pytest.mark.parametrize("kind", ["error500", "slowdown", "reset", "lost_reply", "latency",
                                  "truncate"])
async def test_each_fault_on_some_calls_is_retried_through(
        kind: str, s3_server: S3Server, s3_bucket: str) -> None:
    """At a half share, every operation completes through the retries with the right answer
    (a write whose reply was lost is retried into a 412: "already there", which is true)."""
    plan = FaultPlan(share=0.4, kinds=(kind,), latency=(0.01, 0.05))
    async with S3FaultProxy(s3_server.endpoint_url, seed=3, plan=plan) as proxy:
        store = S3BlockStore(bucket=s3_bucket, max_attempts=8,
                             **_store_kwargs(s3_server, proxy.url))
        await store.start()
        try:
            for i in range(4):
                name = f"{i:02x}" * 32
                data = bytes([i]) * (20_000 + i)
                await store.put_if_absent(name, data)
                assert await store.exists(name)
                assert await store.get(name) == data
        finally:
            await store.close()
    assert proxy.faults >= 2, proxy.summary()


async def test_a_flipped_byte_from_s3_is_caught_and_never_served(
        tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    """Every GET body from S3 has one byte flipped, and S3's checksum headers are stripped (so
    the S3 client cannot notice): downloads fail with a clear error (a corrupt-block error, or a
    cut connection once streaming), and no wrong byte is served. (With the checksums, the S3
    client's check fails first and the read is retried: the mixed campaign below has those.)"""
    out, proxy = await run_campaign(tmp_path, s3_server, s3_bucket, seed=SEED, files=6,
                                    plan=FaultPlan(share=1.0, kinds=("bitflip",),
                                                  strip_checksums=True), large=False)
    assert out.corrupt == [] and out.unclear == [], out
    assert proxy.counts["bitflip"] >= 6, proxy.summary()
    assert out.uploads_ok == 6 and out.lost == []  # (uploads read nothing back from S3)


# --- the mix at >= 10 % of calls, through the whole server -----------------------------------

async def test_uploads_and_downloads_through_s3_faults_lose_and_corrupt_nothing(
        tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    plan = FaultPlan(share=0.15, kinds=ALL_KINDS, latency=(0.02, 0.2))
    out, proxy = await run_campaign(tmp_path, s3_server, s3_bucket, seed=SEED, files=40,
                                    plan=plan)
    summary = (proxy.summary(), out)
    assert out.corrupt == [], summary
    assert out.lost == [], summary
    assert out.unclear == [], summary
    assert proxy.faults / proxy.calls >= 0.10, summary
    assert all(proxy.counts[k] for k in DEFAULT_KINDS), summary
    # The retries carry nearly everything through at this share.
    assert out.uploads_ok >= 0.9 * 40, summary
    assert out.versions_verified >= out.uploads_ok and out.blocks_verified > 0, summary


async def test_an_s3_outage_is_a_clear_503_not_an_internal_error(
        tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    """S3 refuses every call through all the client's retries: an upload's blocks and a
    download answer ``503 storage_error`` with ``Retry-After`` (before, ``500 internal_error``),
    and nothing is committed."""
    plan = FaultPlan(share=1.0, kinds=("slowdown",))
    async with S3FaultProxy(s3_server.endpoint_url, seed=4, plan=plan, enabled=False) as proxy:
        srv = await start_server(
            tmp_path / "data", backend="s3", s3_endpoint_url=proxy.url, s3_bucket=s3_bucket,
            s3_region=s3_server.region, s3_access_key_id=s3_server.access_key,
            s3_secret_access_key=s3_server.secret_key)
        try:
            # Two tries per call instead of five: the same path, in a fifth of the backoff time.
            tiers = srv.app[appkeys.STORE]
            for tier in ("hot", "cold"):
                old = getattr(tiers, tier)
                quick = S3BlockStore(bucket=s3_bucket, prefix=old.prefix, max_attempts=2,
                                     **_store_kwargs(s3_server, proxy.url))
                await quick.start()
                await old.close()
                setattr(tiers, tier, quick)
            async with srv.user("outage@example.com") as client:
                r = await client.post("/api/files/upload-init", {"path": "/a.bin", "size": 5})
                assert r.status == 200, r
                proxy.enabled = True
                async with client.session.post(r.body["upload_url"], data=b"hello") as resp:
                    body = await _json(resp)
                    assert resp.status == 503, body
                    assert body["error"]["code"] == "storage_error"
                    assert resp.headers["Retry-After"] == "5"
                    assert "127.0.0.1" not in str(body)  # the endpoint stays in the log
                assert proxy.counts["slowdown"] >= 2, proxy.summary()
                proxy.enabled = False
                rows = await srv.app[appkeys.DB].fetchall("SELECT id FROM file_versions")
                assert rows == []
        finally:
            await srv.stop()


async def test_a_missing_block_is_block_missing_not_an_outage(alice: ApiClient,
                                                              server: RunningServer) -> None:
    """The other storage failure: a committed block gone from the store is data damage, a
    500 ``block_missing`` (logged as such), not the retry-later 503 of an outage."""
    r = await alice.post("/api/files/upload-init", {"path": "/gone.bin", "size": 6})
    async with alice.session.post(r.body["upload_url"], data=b"gone!!") as resp:
        blocks = (await resp.json())["blocks"]
    done = await alice.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": blocks})
    assert done.status == 200, done
    keyring = server.app[appkeys.KEYRING]
    await server.app[appkeys.STORE].delete(keyring.object_name(block_hash(b"gone!!")))
    r = await alice.get(f"/api/files/{done.body['file_id']}/content")
    assert r.status == 500 and r.error_code() == "block_missing", r
