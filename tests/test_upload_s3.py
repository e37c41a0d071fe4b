"""The same upload/download paths with blocks in a real S3 server (SeaweedFS on 127.0.0.1),
plus the cold tier: stored objects are ciphertext under names that do not reveal hashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import botocore.session
import pytest

from driveproto.blocks import BLOCK_SIZE, block_hash
from driveserver import appkeys
from driveserver.gc import collect_garbage, move_cold_blocks
from tests.helpers import ApiClient, RunningServer, content, download_blocks, start_server, upload
from tests.s3server import S3Server


@pytest.fixture
async def s3_alice(tmp_path: Path, s3_server: S3Server, s3_bucket: str
                   ) -> AsyncIterator[tuple[RunningServer, ApiClient]]:
    srv = await start_server(
        tmp_path / "data", backend="s3", s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=s3_bucket, s3_region=s3_server.region, s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key, s3_cold_storage_class="GLACIER_IR")
    try:
        async with srv.user("alice@example.com", device="laptop") as alice:
            yield srv, alice
    finally:
        await srv.stop()


def bucket_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = botocore.session.get_session().create_client("s3", **s3.client_kwargs())
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 5])
async def test_round_trip_on_s3(s3_alice, size: int) -> None:
    _, alice = s3_alice
    data = bytes((i * 7 + size) % 251 for i in range(size))
    done = await upload(alice, f"/s{size}", data)
    assert await download_blocks(alice, done["file_id"]) == data
    r = await content(alice, done["file_id"])
    assert r.status == 200 and (r.body or b"") == data


async def test_bucket_holds_only_ciphertext(s3_alice, s3_server: S3Server, s3_bucket: str
                                            ) -> None:
    srv, alice = s3_alice
    marker = b"THESIS-DRAFT-MARKER-41d2"
    data = marker * 10_000
    await upload(alice, "/thesis.txt", data)
    objects = bucket_objects(s3_server, s3_bucket)
    blocks = {k: v for k, v in objects.items() if k.startswith("blocks/")}
    assert len(blocks) == 1
    (key, body), = blocks.items()
    assert marker not in body and block_hash(data) not in key
    assert key.endswith(srv.app[appkeys.KEYRING].object_name(block_hash(data)))


async def test_cold_tier_moves_old_blocks_and_reads_still_work(s3_alice, s3_server: S3Server,
                                                               s3_bucket: str) -> None:
    srv, alice = s3_alice
    old = await upload(alice, "/old.txt", b"written long ago " * 50)
    await upload(alice, "/old.txt", b"the new content " * 50)
    app = srv.app
    db = app[appkeys.DB]
    async with db.transaction() as tx:  # age version 1 past the cold threshold
        await tx.execute("UPDATE file_versions SET created_at = created_at - 40 * 86400"
                         " WHERE version = 1")
    moved = await move_cold_blocks(db, app[appkeys.STORE], srv.config.cold_after_days * 86400)
    assert moved == 1
    keys = bucket_objects(s3_server, s3_bucket)
    assert sum(k.startswith("cold/") for k in keys) == 1
    assert sum(k.startswith("blocks/") for k in keys) == 1
    client = botocore.session.get_session().create_client("s3", **s3_server.client_kwargs())
    cold_key = next(k for k in keys if k.startswith("cold/"))
    assert client.head_object(Bucket=s3_bucket, Key=cold_key).get("StorageClass") == "GLACIER_IR"
    # Reads of the old version go to the cold tier transparently.
    r = await content(alice, old["file_id"], params={"version": "1"})
    assert r.status == 200 and r.body == b"written long ago " * 50
    # GC leaves referenced cold blocks alone.
    await collect_garbage(db, app[appkeys.STORE], -1)
    r = await content(alice, old["file_id"], params={"version": "1"})
    assert r.body == b"written long ago " * 50
