"""Blocks on a replicated SeaweedFS cluster (tests/seaweed_cluster.py: one master with
``-defaultReplication=001``, three volume servers, a filer, the S3 gateway), through the real
server on a real port with the S3 store pointed at the gateway, as docs/scale-out.md deploys it.

What must hold: every block is stored twice, on two volume servers (each server asked itself);
with one volume server killed (SIGKILL) every file still downloads byte for byte and new
uploads succeed on the two left; once it is back every volume has its two copies again; with
the gateway down the server answers ``503 storage_error`` and works again once it is back.

What SeaweedFS does when a volume server dies (seen here, and what the docs describe): the
master drops it as soon as its heartbeat stream breaks (a killed process on a reachable
machine: at once), the volumes it held a copy of stop taking writes (one copy is fewer than
``001`` asks for), readers are sent to the copy left, and the first write after that grows
new two-copy volumes on the servers left (a fraction of a second). The wait for the master
is bounded, not assumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from driveproto.blocks import BLOCK_SIZE
from driveserver import appkeys
from driveserver.storage.s3 import S3BlockStore
from tests.helpers import ApiClient, RunningServer, content, download_blocks, start_server, upload
from tests.seaweed_cluster import (
    REPLICATION,
    SeaweedCluster,
    WeedNode,
    build_cluster,
    start_cluster,
)

COPIES = 1 + sum(int(d) for d in REPLICATION)  # "001": one more copy on another server
ROOT = Path(__file__).resolve().parents[1]
# Flags whose value the docs must give as the test does (the rest are addresses and paths).
SETTINGS = ("-defaultReplication", "-volumePreallocate", "-telemetry", "-autoCreateBucket",
            "-port.iceberg", "-port.lance")
SIZES = [0, 1, 1000, 70_000, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 5]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedCluster]:
    """One cluster for this module; a test that kills a part starts it again before it ends
    (and the next test's fixture checks the cluster is whole)."""
    started = start_cluster(tmp_path_factory.mktemp("seaweed"))
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Drive:
    server: RunningServer
    alice: ApiClient
    bucket: str


@pytest.fixture
async def drive(tmp_path: Path, cluster: SeaweedCluster) -> AsyncIterator[Drive]:
    """A drive-server whose blocks go to a fresh bucket on the cluster's gateway."""
    down = [node.name for node in cluster.nodes if not node.running]
    assert not down, f"a test left part of the cluster down: {down}"
    assert len(await asyncio.to_thread(cluster.data_nodes)) == len(cluster.volumes)
    bucket = await asyncio.to_thread(cluster.new_bucket, f"drive-{uuid.uuid4().hex[:16]}")
    s3 = cluster.s3_server
    srv = await start_server(
        tmp_path / "data", backend="s3", s3_endpoint_url=s3.endpoint_url, s3_bucket=bucket,
        s3_region=s3.region, s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key)
    try:
        async with srv.user("alice@example.com", device="laptop") as alice:
            yield Drive(srv, alice, bucket)
    finally:
        await srv.stop()


async def upload_files(drive: Drive, prefix: str, sizes: list[int]) -> dict[str, bytes]:
    """Upload one file of random bytes per size (several blocks, some tiny); file id → bytes."""
    files = {}
    for i, size in enumerate(sizes):
        data = os.urandom(size)
        done = await upload(drive.alice, f"/{prefix}-{i}.bin", data)
        files[done["file_id"]] = data
    return files


async def assert_all_download(drive: Drive, files: dict[str, bytes]) -> None:
    """Both download paths give back exactly what was uploaded: the content route, and the
    block URLs (each block's hash checked by download_blocks)."""
    alice = drive.alice
    for file_id, data in files.items():
        # The raw bytes (ApiClient would parse a body that happens to be JSON, as b"7" is).
        async with alice.session.get(f"{alice.base_url}/api/files/{file_id}/content",
                                     headers=alice.headers) as resp:
            assert resp.status == 200, await resp.text()
            got = await resp.read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), file_id
        assert await download_blocks(alice, file_id) == data


def copies_of_every_chunk(cluster: SeaweedCluster, bucket: str) -> dict[str, set[str]]:
    """For every chunk of every object in the bucket: the volume servers holding a copy of its
    volume (each server's own ``/status``), after checking that each of them serves the chunk's
    bytes, all the same, and that the master sends readers to exactly those servers.
    Returns file id → holders."""
    holders = cluster.volume_holders(bucket)
    by_port = {f"127.0.0.1:{node.port}": node for node in cluster.volumes}
    out: dict[str, set[str]] = {}
    for key in cluster.keys(bucket):
        chunks = cluster.object_chunks(bucket, key)
        assert chunks, f"{key} has no chunk on a volume server (kept in the filer only?)"
        for file_id in chunks:
            volume_id = int(file_id.split(",")[0])
            names = holders.get(volume_id, set())
            bodies = {cluster.needle_from(node, file_id)
                      for node in cluster.volumes if node.name in names}
            assert len(bodies) == 1 and None not in bodies, (key, file_id, names)
            located = {by_port[url].name for url in cluster.master_locations(volume_id)}
            assert located == names, (key, file_id, located, names)
            out[file_id] = names
    return out


async def test_every_block_is_stored_on_two_volume_servers(cluster: SeaweedCluster,
                                                           drive: Drive) -> None:
    files = await upload_files(drive, "f", SIZES)
    await assert_all_download(drive, files)
    keys = await asyncio.to_thread(cluster.keys, drive.bucket)
    blocks = [k for k in keys if k.startswith("blocks/")]
    # One object per block: 1 + 1 + 1 + 2 + 3 (the empty file has none).
    assert len(blocks) == 8, keys
    chunks = await asyncio.to_thread(copies_of_every_chunk, cluster, drive.bucket)
    assert len(chunks) >= len(blocks)  # a 4 MiB block is more than one chunk of the gateway
    # Each on two distinct servers (a set of names: two copies on one server count once).
    assert {len(names) for names in chunks.values()} == {COPIES}, chunks


async def test_a_killed_volume_server_loses_nothing_and_uploads_go_on(
        cluster: SeaweedCluster, drive: Drive) -> None:
    before = await upload_files(drive, "old", SIZES)
    chunks = await asyncio.to_thread(copies_of_every_chunk, cluster, drive.bucket)
    # Kill the server with copies of the most chunks: the one whose loss matters most.
    victim: WeedNode = max(cluster.volumes,
                           key=lambda n: sum(n.name in names for names in chunks.values()))
    on_victim = {f for f, names in chunks.items() if victim.name in names}
    assert on_victim, chunks
    survivors = {n.name for n in cluster.volumes} - {victim.name}

    victim.kill()
    try:
        await asyncio.to_thread(cluster.wait_dropped, victim)
        assert len(await asyncio.to_thread(cluster.data_nodes)) == len(cluster.volumes) - 1

        # Every file reads back whole, the chunks on the victim from their other copy.
        await assert_all_download(drive, before)

        # New uploads succeed: the volumes with a copy on the victim take no writes (one copy
        # is fewer than 001 asks for), so the master grows new ones on the two servers left.
        during = await upload_files(drive, "during", [5, 300_000, BLOCK_SIZE + 7])
        await assert_all_download(drive, during)
        now = await asyncio.to_thread(copies_of_every_chunk, cluster, drive.bucket)
        new = {f: names for f, names in now.items() if f not in chunks}
        assert new, now
        assert all(names == survivors for names in new.values()), (new, survivors)
        # And the old chunks the victim held still have their other copy, on a survivor.
        assert all(len(now[f]) == COPIES - 1 for f in on_victim), now
    finally:
        victim.start()  # same port, same data (the main thread: see WeedNode.start)
        await asyncio.to_thread(cluster.wait_volume, victim)

    # Whole again: the victim holds its copies again, every chunk is on two servers, the
    # master sends readers to both, and everything, old and new, reads back.
    after = await asyncio.to_thread(copies_of_every_chunk, cluster, drive.bucket)
    assert {len(names) for names in after.values()} == {COPIES}, after
    assert all(victim.name in after[f] for f in on_victim), after
    more = await upload_files(drive, "after", [10, BLOCK_SIZE])
    await assert_all_download(drive, {**before, **during, **more})


async def _quick_stores(drive: Drive, cluster: SeaweedCluster) -> None:
    """Two tries per S3 call instead of five: the same failure path, without botocore's
    backoff of up to 15 s per call while the gateway is down (tests/test_s3_faults.py does the
    same)."""
    s3 = cluster.s3_server
    tiers = drive.server.app[appkeys.STORE]
    for tier in ("hot", "cold"):
        old = getattr(tiers, tier)
        quick = S3BlockStore(endpoint_url=s3.endpoint_url, bucket=drive.bucket,
                             prefix=old.prefix, region=s3.region, access_key_id=s3.access_key,
                             secret_access_key=s3.secret_key, max_attempts=2)
        await quick.start()
        await old.close()
        setattr(tiers, tier, quick)


async def test_the_gateway_down_is_a_clear_503_and_it_works_again_when_back(
        cluster: SeaweedCluster, drive: Drive) -> None:
    await _quick_stores(drive, cluster)
    files = await upload_files(drive, "g", [100, 70_000])
    db = drive.server.app[appkeys.DB]
    versions = len(await db.fetchall("SELECT id FROM file_versions"))
    file_id = next(iter(files))

    cluster.s3.kill()
    try:
        r = await drive.alice.post("/api/files/upload-init", {"path": "/new.bin", "size": 5})
        assert r.status == 200, r  # (metadata only: no block store call yet)
        async with drive.alice.session.post(r.body["upload_url"], data=b"hello") as resp:
            body = await resp.json()
            assert resp.status == 503, body
            assert body["error"]["code"] == "storage_error"
            assert resp.headers["Retry-After"] == "5"
        got = await content(drive.alice, file_id)
        assert got.status == 503 and got.error_code() == "storage_error", got
        listing = await drive.alice.get(f"/api/files/{file_id}/download")
        assert listing.status == 200, listing  # the block list is metadata
        async with drive.alice.session.get(listing.body["blocks"][0]["url"]) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "storage_error"
        assert len(await db.fetchall("SELECT id FROM file_versions")) == versions
    finally:
        cluster.s3.start()
        await asyncio.to_thread(cluster.wait_s3)

    # Back: the same server, with no restart of its own, reads and writes again.
    more = await upload_files(drive, "back", [5, 200_000])
    await assert_all_download(drive, {**files, **more})


def test_the_documented_commands_are_the_tested_ones(tmp_path: Path) -> None:
    """docs/scale-out.md's SeaweedFS commands and units use only flags this cluster runs with,
    and the same values for the settings that matter."""
    doc = (ROOT / "docs" / "scale-out.md").read_text()
    section = doc.split("## Blocks on a replicated SeaweedFS cluster", 1)[1].split("\n## ", 1)[0]
    layout = build_cluster(tmp_path)  # the processes' command lines; nothing is started
    tested = {"master": layout.master.args, "volume": layout.volumes[0].args,
              "filer": layout.filer.args, "s3": layout.s3.args}
    seen = set()
    text = section.replace("\\\n", " ")
    for line in text.splitlines():
        words = line.replace("ExecStart=", "").split()
        if not words or not re.fullmatch(r"(\S*/)?weed", words[0]):
            continue
        words = [w for w in words[1:] if not w.startswith("-logdir=")]
        if words[0] not in tested:
            continue
        seen.add(words[0])
        args = dict(flag.partition("=")[::2] for flag in tested[words[0]][1:])
        for flag in words[1:]:
            name, _, value = flag.partition("=")
            assert name in args, f"the docs' weed {words[0]} has {name}, the test does not"
            if name in SETTINGS:
                assert value == args[name], (words[0], name, value, args[name])
    assert seen == set(tested), seen
