"""The BlockStore contract, run against every backend: a directory, a real S3 server
(SeaweedFS started by tests/s3server.py) and a hot/cold pair; then what is
specific to each."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from driveproto import durable
from driveproto.blocks import block_hash
from driveserver.blocks.keys import KeyRing
from driveserver.storage import (
    BlockNotFound,
    BlockStore,
    LocalBlockStore,
    S3BlockStore,
    StorageError,
    StorageUnavailable,
    TieredBlockStore,
)
from driveserver.storage import local as local_storage
from driveserver.storage.base import BatchStore, exists_many, put_many
from driveserver.storage.packed import PACK_MAX
from tests.needs import need
from tests.s3server import S3Server
from tests.stored_blocks import raw_objects


def _name(label: str) -> str:
    """A valid object name (names are hex digests)."""
    return block_hash(label.encode())


def _s3_store(server: S3Server, bucket: str, **kwargs: Any) -> S3BlockStore:
    return S3BlockStore(
        server.endpoint_url,
        bucket,
        server.region,
        kwargs.pop("access_key_id", server.access_key),
        kwargs.pop("secret_access_key", server.secret_key),
        **kwargs,
    )


@dataclass
class Backend:
    kind: str
    make: Callable[[], BlockStore]
    server: S3Server | None = None
    bucket: str | None = None


@pytest.fixture(params=["local", "local-files", "s3", "tiered"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """``local`` packs small objects into its SQLite file (the default on a local disk);
    ``local-files`` keeps every object a file (a store on a network file system)."""
    kind = request.param
    if kind == "local":
        return Backend(kind, lambda: LocalBlockStore(tmp_path / "blocks"))
    if kind == "local-files":
        return Backend(kind, lambda: LocalBlockStore(tmp_path / "blocks", pack_small=False))
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    if kind == "s3":
        return Backend(kind, lambda: _s3_store(server, bucket), server, bucket)
    return Backend(
        kind,
        lambda: TieredBlockStore(
            LocalBlockStore(tmp_path / "hot"),
            _s3_store(server, bucket, prefix="cold/", storage_class="GLACIER_IR"),
        ),
        server,
        bucket,
    )


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[BlockStore]:
    s = backend.make()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def _names(store: BlockStore) -> list[str]:
    return [name async for name in store.iterate()]


# -- the contract ------------------------------------------------------------------


async def test_put_get_exists_delete(store: BlockStore) -> None:
    assert isinstance(store, BlockStore)
    name = _name("one")
    assert not await store.exists(name)
    assert await store.stat_mtime(name) is None
    with pytest.raises(BlockNotFound) as info:
        await store.get(name)
    assert info.value.name == name

    before = time.time()
    assert await store.put_if_absent(name, b"first") is True
    assert await store.put_if_absent(name, b"second") is False  # the first copy stays
    assert await store.get(name) == b"first"
    assert await store.exists(name)
    mtime = await store.stat_mtime(name)
    assert mtime is not None and before - 2 <= mtime <= time.time() + 2  # S3: whole seconds

    await store.delete(name)
    await store.delete(name)  # idempotent
    assert not await store.exists(name)
    with pytest.raises(BlockNotFound):
        await store.get(name)
    assert await store.put_if_absent(name, b"again") is True
    assert await store.get(name) == b"again"


async def test_empty_and_large_objects(store: BlockStore) -> None:
    big = os.urandom(4 * 1024 * 1024 + 102)  # a sealed incompressible 4 MiB block
    assert await store.put_if_absent(_name("empty"), b"")
    assert await store.put_if_absent(_name("big"), big)
    assert await store.get(_name("empty")) == b""
    assert await store.get(_name("big")) == big


async def test_iterate_lists_every_name_once(store: BlockStore) -> None:
    assert await _names(store) == []
    names = {_name(f"block {i}") for i in range(25)}
    await asyncio.gather(*(store.put_if_absent(n, n.encode()) for n in names))
    listed = await _names(store)
    assert sorted(listed) == sorted(names)
    await store.delete(next(iter(names)))
    assert len(await _names(store)) == 24


async def test_concurrent_writers_of_one_name_have_one_winner(store: BlockStore) -> None:
    name = _name("contended")
    # Only three: SeaweedFS answers each losing conditional PUT after about a second.
    results = await asyncio.gather(*(store.put_if_absent(name, b"x%d" % i) for i in range(3)))
    assert results.count(True) == 1
    assert await store.get(name) == b"x%d" % results.index(True)


async def test_put_many_stores_each_once_like_put_if_absent(store: BlockStore) -> None:
    """The batch write (``storage.base.put_many``: the local store's grouped fsyncs, the tiered
    store's one look-up per tier, S3's single PUTs) answers for each object what
    ``put_if_absent`` would, keeps a copy already there, and lists every name once."""
    there = _name("already there")
    assert await store.put_if_absent(there, b"old copy")
    items = [(_name(f"batch {i}"), os.urandom(1000 + i)) for i in range(40)]
    items.insert(7, (there, b"new copy"))
    results = await put_many(store, items)
    assert results == [name != there for name, _ in items]
    for name, data in items:
        assert await store.get(name) == (b"old copy" if name == there else data)
    assert await exists_many(store, [there, _name("absent"), items[0][0]]) == [True, False, True]
    assert sorted(await _names(store)) == sorted(name for name, _ in items)
    assert await put_many(store, []) == []
    assert await put_many(store, items[:3]) == [False, False, False]  # again: all there


async def test_check_and_idempotent_lifecycle(store: BlockStore) -> None:
    await store.check()
    await store.start()  # again: no effect
    await store.check()
    await store.close()
    await store.close()


async def test_malformed_names_are_refused(store: BlockStore) -> None:
    for bad in ["", "../../etc/passwd", "ABCDEF0123", "abc", "0123456789abcdef/x", "g" * 64]:
        with pytest.raises(ValueError):
            await store.put_if_absent(bad, b"x")
        with pytest.raises(ValueError):
            await store.get(bad)


async def test_storage_sees_only_ciphertext_under_opaque_names(
    store: BlockStore, backend: Backend, tmp_path: Path
) -> None:
    ring = KeyRing.generate()
    marker = f"PLAINTEXT-MARKER-{uuid.uuid4()}".encode()
    blocks = [
        marker * 1000,  # compressible: stored zstd'ed, then encrypted
        os.urandom(50_000) + marker + os.urandom(50_000),  # incompressible
    ]
    sealed_blobs = []
    for data in blocks:
        digest = block_hash(data)
        sealed = ring.seal(digest, data)
        sealed_blobs.append(sealed)
        assert await store.put_if_absent(ring.object_name(digest), sealed)
        assert ring.open(digest, await store.get(ring.object_name(digest))) == data
    if isinstance(store, TieredBlockStore):  # one block in each tier
        await store.move_to_cold(ring.object_name(block_hash(blocks[1])))

    raw = await _raw_objects(store, backend)
    assert len(raw) == 2
    for sealed in sealed_blobs:  # control: the scan really sees the stored bytes
        assert sealed in raw.values()
    for data in blocks:
        digest = block_hash(data)
        for where, content in raw.items():
            assert marker not in content
            assert digest not in where and digest.encode() not in content
            assert bytes.fromhex(digest) not in content

    if backend.server is not None:
        # Below the S3 API too: nothing in SeaweedFS's files on disk.
        files = [p for p in backend.server.data_dir.rglob("*") if p.is_file()]
        assert not [p for p in files if _file_contains(p, marker)]
        assert any(_file_contains(p, sealed_blobs[1][200:264]) for p in files)  # control


def _file_contains(path: Path, needle: bytes, chunk: int = 8 * 1024 * 1024) -> bool:
    """Search a possibly large file in overlapping chunks (SeaweedFS volumes grow big)."""
    overlap = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            if needle in overlap + block:
                return True
            overlap = block[-(len(needle) - 1) :]
    return False


async def _raw_objects(store: BlockStore, backend: Backend) -> dict[str, bytes]:
    """Every stored object, read around the store: file paths or bucket keys -> raw bytes."""
    if isinstance(store, TieredBlockStore):
        return await _raw_objects(store.hot, backend) | await _raw_objects(store.cold, backend)
    if isinstance(store, LocalBlockStore):
        return raw_objects(store.root)
    assert backend.server is not None and backend.bucket is not None
    found: dict[str, bytes] = {}
    async with get_session().create_client("s3", **backend.server.client_kwargs()) as client:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=backend.bucket):
            for obj in page.get("Contents", ()):
                response = await client.get_object(Bucket=backend.bucket, Key=obj["Key"])
                async with response["Body"] as body:
                    found[obj["Key"]] = await body.read()
    return found


# -- local directory -------------------------------------------------------------


async def test_local_leftover_temp_files_are_not_blocks(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    async with LocalBlockStore(root, pack_small=False) as store:
        name = _name("real")
        await store.put_if_absent(name, b"data")
        leaf = root / name[:2] / name[2:4]
        (leaf / ".tmp-abandoned").write_bytes(b"partial")
        (root / ".tmp" / "put-crashed").write_bytes(b"partial")
        (root / "README").write_text("not a block")
        assert await _names(store) == [name]

    fresh = root / ".tmp" / "put-in-progress"
    fresh.write_bytes(b"another process is writing this")
    old = root / ".tmp" / "put-crashed"
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    async with LocalBlockStore(root, stale_temp_age=3600) as store:
        assert not old.exists()  # abandoned long ago: removed at start
        assert fresh.exists()  # may belong to a live writer: kept
        assert await _names(store) == [name]


async def test_local_failed_write_leaves_no_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "blocks"
    async with LocalBlockStore(root) as store:
        name = _name("doomed")

        def failing_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(StorageError, match="No space left"):
            await store.put_if_absent(name, b"x" * 100_000)
        monkeypatch.undo()

        assert not await store.exists(name)
        assert list((root / ".tmp").iterdir()) == []
        assert await store.put_if_absent(name, b"ok")


async def test_local_batch_makes_each_object_durable_before_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch write's order, object by object, when each block has its own fsyncs (a small
    batch, or a system without syncfs): its bytes are fsynced before it is linked under its
    name, and its folder (and the folders a new leaf was made in) are fsynced after the link and
    before the batch returns: a crash never shows a partial block under a real name, and a block
    reported stored survives one."""
    root = tmp_path / "blocks"
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def link(src: str, dst: Any) -> None:
        real_link(src, dst)
        events.append(("link", str(dst)))
        events.append(("linked-from", str(Path(src).resolve())))

    async with LocalBlockStore(root, pack_small=False) as store:
        assert isinstance(store, BatchStore)
        items = [(_name(f"durable {i}"), os.urandom(500)) for i in range(30)]
        monkeypatch.setattr(local_storage, "syncfs_works", lambda _root: False)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "link", link)
        assert await store.put_many_if_absent(items) == [True] * 30
        monkeypatch.undo()
        for name, data in items:
            final = root / name[:2] / name[2:4] / name
            assert final.read_bytes() == data
            at = events.index(("link", str(final)))
            temp = events[at + 1][1]
            assert ("fsync", temp) in events[:at], "bytes durable before the name"
            after = [p for kind, p in events[at:] if kind == "fsync"]
            assert str(final.parent) in after and str(final.parent.parent) in after \
                and str(root) in after, "its folder entries durable before the answer"
        assert list((root / ".tmp").iterdir()) == []  # no temp file left
        with pytest.raises(ValueError, match="distinct"):
            await store.put_many_if_absent([items[0], items[0]])


async def test_local_big_batch_flushes_the_file_system_before_naming_and_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of many blocks on Linux: every temp file written, then one syncfs of the store's
    file system, then the links, then a second syncfs before the answer (the same guarantees as
    the fsyncs above, with two waits for the disk). Small batches keep their fsyncs."""
    root = tmp_path / "blocks"
    root.mkdir()
    need(local_storage.syncfs_works(root), "syncfs(2) with write-back errors (Linux 5.8 or later)")
    events: list[tuple[str, str]] = []
    real_syncfs, real_link, real_fsync = local_storage.syncfs, os.link, os.fsync

    def syncfs(directory: Path, fd: int | None = None) -> None:
        assert fd is not None and opened == [fd]  # one descriptor, opened before the writes
        real_syncfs(directory, fd)
        events.append(("syncfs", str(directory)))

    opened: list[int] = []
    real_open, real_write = local_storage.open_directory, local_storage._write_new

    def open_directory(directory: Path) -> int | None:
        fd = real_open(directory)
        assert fd is not None
        opened.append(fd)
        events.append(("open", str(directory)))
        return fd

    def write_new(path: str, data: bytes, fsync: bool = False) -> None:
        real_write(path, data, fsync)
        events.append(("write", path))

    def link(src: str, dst: Any) -> None:
        assert Path(src).read_bytes(), "a temp file is complete before it is linked"
        real_link(src, dst)
        events.append(("link", str(dst)))

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    async with LocalBlockStore(root, pack_small=False) as store:
        big = [(_name(f"many {i}"), os.urandom(500)) for i in range(local_storage.SYNCFS_FROM)]
        monkeypatch.setattr(local_storage, "syncfs_works", lambda _root: True)  # probed above
        monkeypatch.setattr(local_storage, "syncfs", syncfs)
        monkeypatch.setattr(local_storage, "open_directory", open_directory)
        monkeypatch.setattr(local_storage, "_write_new", write_new)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(os, "fsync", fsync)
        assert await store.put_many_if_absent(big) == [True] * len(big)
        kinds = [kind for kind, _ in events]
        assert kinds == ["open", *["write"] * len(big), "syncfs", *["link"] * len(big),
                         "syncfs"], kinds
        assert events[0][1] == str(root)
        for name, data in big:
            assert (root / name[:2] / name[2:4] / name).read_bytes() == data
        events.clear()
        opened.clear()
        small = [(_name(f"few {i}"), os.urandom(500)) for i in range(local_storage.SYNCFS_FROM - 1)]
        assert await store.put_many_if_absent(small) == [True] * len(small)
        assert "syncfs" not in [kind for kind, _ in events]
        assert [kind for kind, _ in events].count("fsync") >= 2 * len(small)
        monkeypatch.undo()
        assert list((root / ".tmp").iterdir()) == []


async def test_local_batch_keeps_its_fsyncs_where_syncfs_flushes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a FUSE mount (sshfs, rclone, s3fs) syncfs returns without asking the daemon to flush,
    while an fsync is passed on: a big batch there keeps a file and a folder fsync per block."""
    fuse = 0x65735546  # FUSE_SUPER_MAGIC
    monkeypatch.setattr(durable, "fs_magic", lambda _d: fuse)
    monkeypatch.setattr(local_storage, "fs_magic", lambda _d: fuse)
    assert not durable.syncfs_works(tmp_path)
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))

    def no_syncfs(directory: Path, fd: int | None = None) -> None:
        raise AssertionError("syncfs called on a file system where it flushes nothing")

    monkeypatch.setattr(local_storage, "syncfs", no_syncfs)
    async with LocalBlockStore(tmp_path / "blocks") as store:
        items = [(_name(f"fuse {i}"), os.urandom(300)) for i in range(40)]
        monkeypatch.setattr(os, "fsync", fsync)
        assert await store.put_many_if_absent(items) == [True] * 40
        monkeypatch.undo()
    assert len(calls) >= 2 * 40
    assert not (tmp_path / "blocks" / "small.sqlite3").exists()  # SQLite's locks need a local disk


@pytest.mark.parametrize("flush", ["fsync", "syncfs"])
async def test_local_failed_batch_leaves_no_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush: str
) -> None:
    """A flush that fails (a full disk) fails the whole batch, and no block is left under its
    name: with per-block fsyncs, and with a syncfs of the whole file system."""
    root = tmp_path / "blocks"
    async with LocalBlockStore(root, pack_small=False) as store:
        items = [(_name(f"doomed {i}"), os.urandom(2000)) for i in range(20)]

        def failing(*_args: Any, **_kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        if flush == "fsync":
            monkeypatch.setattr(local_storage, "syncfs_works", lambda _root: False)
            monkeypatch.setattr(os, "fsync", failing)
        else:
            need(local_storage.syncfs_works(root),
                 "syncfs(2) with write-back errors (Linux 5.8 or later)")
            monkeypatch.setattr(local_storage, "syncfs_works", lambda _root: True)
            monkeypatch.setattr(local_storage, "syncfs", failing)
        with pytest.raises(StorageError, match="No space left"):
            await store.put_many_if_absent(items)
        monkeypatch.undo()
        assert await store.exists_many([n for n, _ in items]) == [False] * 20
        assert list((root / ".tmp").iterdir()) == []
        assert await store.put_many_if_absent(items) == [True] * 20


async def test_local_small_objects_are_packed_and_large_ones_are_files(tmp_path: Path) -> None:
    """On a local disk a new store keeps objects up to PACK_MAX in its SQLite file (no inode
    each) and larger ones as files; both are read, found, timed, listed and deleted alike."""
    root = tmp_path / "blocks"
    small = [(_name(f"small {i}"), os.urandom(100 + i)) for i in range(30)]
    edge = (_name("edge"), os.urandom(PACK_MAX))
    large = (_name("large"), os.urandom(PACK_MAX + 1))
    before = time.time()
    async with LocalBlockStore(root) as store:
        assert await store.put_many_if_absent([*small, edge, large]) == [True] * 32
        assert await store.put_if_absent(_name("single"), b"one by one")
        files = {p.name for p in root.glob("*/*/*")}
        assert files == {large[0]}
        packed = {w for w in raw_objects(root) if w.startswith("small.sqlite3:")}
        assert len(packed) == 32
        for made in root.glob("small.sqlite3*"):  # the file, its -wal and -shm
            assert made.stat().st_mode & 0o777 == 0o600, made
        for name, data in [*small, edge, large]:
            assert await store.get(name) == data
            assert before - 1 <= (await store.stat_mtime(name) or 0) <= time.time() + 1
        assert await store.exists(edge[0]) and await store.exists(large[0])
        assert await store.exists_many([small[3][0], _name("nothing"), large[0]]) == \
            [True, False, True]
        assert not await store.put_if_absent(small[0][0], b"a second copy")
        assert await store.get(small[0][0]) == small[0][1]
        await store.delete(small[1][0])
        await store.delete(large[0])
        assert not await store.exists(small[1][0]) and not await store.exists(large[0])
        assert await store.stat_mtime(small[1][0]) is None
        with pytest.raises(BlockNotFound):
            await store.get(small[1][0])
        assert sorted(await _names(store)) == sorted(
            [n for n, _ in small[:1] + small[2:]] + [edge[0], _name("single")]
        )
    async with LocalBlockStore(root) as store:  # durable across a restart
        assert await store.get(small[5][0]) == small[5][1]
    # The same store started again after close: reads from its reopened pack.
    await store.start()
    try:
        assert await store.get(small[6][0]) == small[6][1]
        assert await store.put_if_absent(_name("after restart"), b"new")
    finally:
        await store.close()


async def test_local_pack_reads_at_once_share_thread_jobs(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of packed objects asked for together (a batch download reads several ahead) are
    served a batch per thread job, each reader getting its own bytes; a name not in the pack
    falls through to its file; a reader cancelled while waiting does not disturb the others;
    a failing job fails the reads it was serving with a StorageError, and the next works."""
    root = tmp_path / "blocks"
    small = [(_name(f"read {i}"), os.urandom(200 + i)) for i in range(60)]
    large = (_name("big"), os.urandom(PACK_MAX + 10))
    async with LocalBlockStore(root) as store:
        await store.put_many_if_absent([*small, large])
        assert store._packed is not None
        jobs: list[int] = []
        real = store._packed.get_many

        def counted(names: Any) -> dict[str, bytes]:
            jobs.append(len(names))
            return real(names)

        monkeypatch.setattr(store._packed, "get_many", counted)
        got = await asyncio.gather(*(store.get(n) for n, _ in [*small, large]))
        assert got == [d for _, d in [*small, large]]
        assert sum(jobs) == 61 and len(jobs) <= 3, jobs  # not one job per read

        victim = asyncio.ensure_future(store.get(small[0][0]))
        others = [asyncio.ensure_future(store.get(n)) for n, _ in small[1:20]]
        await asyncio.sleep(0)
        victim.cancel()
        assert await asyncio.gather(*others) == [d for _, d in small[1:20]]

        def broken(names: Any) -> dict[str, bytes]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(store._packed, "get_many", broken)
        failed = await asyncio.gather(*(store.get(n) for n, _ in small[:5]),
                                      return_exceptions=True)
        assert all(isinstance(f, StorageError) and "disk I/O error" in str(f) for f in failed)
        monkeypatch.setattr(store._packed, "get_many", real)
        assert await store.get(small[3][0]) == small[3][1]


async def test_local_store_of_files_is_read_as_before_once_packing_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade: a store written by the code before packing (every object a file) opened by
    today's: each old object is read, found and listed once, a small one stored again is not
    copied into the pack, new small objects are packed, and the listing pages through both."""
    root = tmp_path / "blocks"
    old = [(_name(f"old {i}"), os.urandom(200 + i)) for i in range(12)]
    async with LocalBlockStore(root, pack_small=False) as store:
        assert await store.put_many_if_absent(old) == [True] * 12
    assert not (root / "small.sqlite3").exists()
    monkeypatch.setattr(local_storage, "_PAGE", 5)  # several pages of packed names
    new = [(_name(f"new {i}"), os.urandom(300 + i)) for i in range(13)]
    async with LocalBlockStore(root) as store:
        assert await store.put_many_if_absent([*old[:4], *new]) == [False] * 4 + [True] * 13
        assert not await store.put_if_absent(old[5][0], b"again")
        assert {w for w in raw_objects(root) if w.startswith("small.sqlite3:")} == \
            {f"small.sqlite3:{n}" for n, _ in new}
        for name, data in [*old, *new]:
            assert await store.get(name) == data
        listed = await _names(store)
        assert sorted(listed) == sorted(n for n, _ in [*old, *new])  # each once
        await store.delete(old[0][0])
        assert not await store.exists(old[0][0])
    # Not packed where the store did not pack before and packing is off: still files only.
    async with LocalBlockStore(tmp_path / "other", pack_small=False) as store:
        assert await store.put_if_absent(_name("x"), b"x")
    assert not (tmp_path / "other" / "small.sqlite3").exists()


async def test_local_two_processes_sharing_a_pack_store_each_name_once(tmp_path: Path) -> None:
    """Two server processes on one machine share the block directory (docs/scale-out.md): two
    stores on one pack, each with its own connections and lock, writing the same names at
    once, store each name once, and each sees the other's objects."""
    root = tmp_path / "blocks"
    one, two = LocalBlockStore(root), LocalBlockStore(root)
    async with one, two:
        items = [(_name(f"shared {i}"), os.urandom(500)) for i in range(200)]
        batches = [items[i:i + 20] for i in range(0, 200, 20)]
        results = await asyncio.gather(
            *(s.put_many_if_absent(b) for b in batches for s in (one, two))
        )
        for k, batch in enumerate(batches):
            first, second = results[2 * k], results[2 * k + 1]
            assert [a + b for a, b in zip(first, second, strict=True)] == [1] * len(batch)
        for name, _ in items:
            assert await one.get(name) == await two.get(name)
        assert len(await _names(one)) == 200


_KILLED_WRITER = """
import asyncio, hashlib, os, sys
from driveserver.storage import LocalBlockStore
async def main():
    async with LocalBlockStore(sys.argv[1]) as store:
        for batch in range(10_000):
            items = []
            for i in range(50):
                data = os.urandom(64 + (batch * 50 + i) % 4000)
                items.append((hashlib.sha256(data).hexdigest(), data))
            await store.put_many_if_absent(items)
            print(" ".join(name for name, _ in items), flush=True)
asyncio.run(main())
"""


async def test_local_pack_killed_mid_write_keeps_every_reported_object(tmp_path: Path) -> None:
    """kill -9 of a process writing batches of small objects: every object whose batch returned
    (printed after put_many_if_absent) is there after a restart, and every object there is
    whole (its name is the SHA-256 of its bytes, so a torn write would show)."""
    import sys

    root = tmp_path / "blocks"
    for round_ in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLED_WRITER, str(root),
            stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent,
        )
        assert proc.stdout is not None
        reported: list[str] = []
        while len(reported) < 50 * (5 + 7 * round_):  # a different moment each round
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the writer stopped by itself"
            reported.extend(line.decode().split())
        proc.kill()
        await proc.wait()
        async with LocalBlockStore(root) as store:
            names = await _names(store)
            assert set(reported) <= set(names)
            for name in names:
                assert block_hash(await store.get(name)) == name


_CLOSED_UNDER_LOAD = """
import asyncio, hashlib, os, sys
from driveserver.storage import LocalBlockStore, StorageUnavailable
async def main():
    store = LocalBlockStore(sys.argv[1])
    await store.start()
    items = [(hashlib.sha256(b).hexdigest(), b) for b in (os.urandom(30000) for _ in range(200))]
    await store.put_many_if_absent(items)
    names = [n for n, _ in items]
    async def busy():
        while True:
            await store.exists_many(names)
            await store.put_if_absent(os.urandom(32).hex(), b"y" * 100)
            async for _ in store.iterate():
                pass
    tasks = [asyncio.create_task(busy()) for _ in range(16)]
    await asyncio.sleep(0.3)
    for task in tasks:  # what a server's shutdown does: handlers cancelled, then the store closed
        task.cancel()
    await store.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # the cancelled calls' threads finish their statements
    for call in (store.get(names[0]), store.put_if_absent(names[0], items[0][1])):
        try:
            await call
        except StorageUnavailable:
            continue
        raise SystemExit("a closed store answered")
    print("ok")
asyncio.run(main())
"""


async def test_local_pack_closed_while_threads_use_it(tmp_path: Path) -> None:
    """Closing the store at shutdown while threads of cancelled requests are still inside
    statements on the pack: close waits for them (closing a connection under a running
    statement crashed the process, SIGSEGV, in most runs), and a call after close is refused
    with StorageUnavailable rather than answered from the block files alone (which called
    every packed block missing, and stored a second copy of one already packed)."""
    import sys

    for run in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CLOSED_UNDER_LOAD, str(tmp_path / f"blocks{run}"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0 and out.decode().strip().endswith("ok"), out.decode()


async def test_local_pack_fails_clearly_when_its_file_is_unusable(tmp_path: Path) -> None:
    """A pack that is not a database (damaged, or a file in its place) is a StorageError that
    names the file at start, not a block read as missing later."""
    root = tmp_path / "blocks"
    root.mkdir()
    (root / "small.sqlite3").write_bytes(b"this is not a database" * 100)
    store = LocalBlockStore(root)
    with pytest.raises(StorageError, match="small.sqlite3"):
        await store.start()
    await store.close()


async def test_local_check_reports_a_missing_directory(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path / "nowhere")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        await store.check()


# -- S3 --------------------------------------------------------------------------


async def test_s3_wrong_secret_is_refused(s3_server: S3Server, s3_bucket: str) -> None:
    async with _s3_store(s3_server, s3_bucket, secret_access_key="wrong-secret") as store:
        with pytest.raises(StorageUnavailable, match="refused access"):
            await store.check()
        with pytest.raises(StorageUnavailable, match="refused access"):
            await store.put_if_absent(_name("x"), b"x")
    async with _s3_store(s3_server, s3_bucket, access_key_id="nobody") as store:
        with pytest.raises(StorageUnavailable, match="InvalidAccessKeyId"):
            await store.check()


async def test_s3_missing_bucket_and_ensure_bucket(s3_server: S3Server) -> None:
    bucket = f"made-{uuid.uuid4().hex[:16]}"
    async with _s3_store(s3_server, bucket) as store:
        with pytest.raises(StorageUnavailable, match="does not exist"):
            await store.check()
        with pytest.raises(StorageUnavailable, match="does not exist"):
            await store.put_if_absent(_name("x"), b"x")  # not auto-created
        await store.ensure_bucket()
        await store.ensure_bucket()  # idempotent
        await store.check()
        assert await store.put_if_absent(_name("x"), b"x")
    async with get_session().create_client("s3", **s3_server.client_kwargs()) as client:
        await client.delete_bucket(Bucket=bucket)


async def test_s3_unreachable_endpoint(s3_server: S3Server) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3BlockStore(
        f"http://127.0.0.1:{port}", "bucket", "us-east-1", "test", "test", max_attempts=1
    )
    async with store:
        with pytest.raises(StorageUnavailable, match="cannot reach"):
            await store.check()


async def test_s3_prefix_isolates_and_foreign_keys_are_skipped(
    s3_server: S3Server, s3_bucket: str
) -> None:
    async with (
        _s3_store(s3_server, s3_bucket, prefix="a/") as a,
        _s3_store(s3_server, s3_bucket, prefix="b/") as b,
        get_session().create_client("s3", **s3_server.client_kwargs()) as client,
    ):
        name = _name("shared name")
        assert await a.put_if_absent(name, b"in a")
        assert not await b.exists(name)
        await client.put_object(Bucket=s3_bucket, Key="a/not-a-block-name", Body=b"x")
        await client.put_object(Bucket=s3_bucket, Key="a/sub/" + _name("nested"), Body=b"x")
        assert await _names(a) == [name]
        assert await _names(b) == []


async def test_s3_without_conditional_writes(s3_server: S3Server, s3_bucket: str) -> None:
    async with _s3_store(s3_server, s3_bucket, conditional_writes=False) as store:
        name = _name("fallback")
        assert await store.put_if_absent(name, b"1") is True
        assert await store.put_if_absent(name, b"2") is False
        assert await store.get(name) == b"1"


def test_s3_refuses_archive_storage_classes() -> None:
    with pytest.raises(ValueError, match="restore"):
        S3BlockStore("http://127.0.0.1:1", "bucket", storage_class="DEEP_ARCHIVE")
    with pytest.raises(ValueError, match="both"):
        S3BlockStore("http://127.0.0.1:1", "bucket", access_key_id="only-half")


# -- hot and cold tiers ----------------------------------------------------------


async def test_tiered_move_to_cold(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    hot = _s3_store(s3_server, s3_bucket, prefix="hot/")
    cold = _s3_store(s3_server, s3_bucket, prefix="cold/", storage_class="GLACIER_IR")
    async with (
        TieredBlockStore(hot, cold) as store,
        get_session().create_client("s3", **s3_server.client_kwargs()) as client,
    ):
        name, other = _name("ageing"), _name("fresh")
        await store.put_if_absent(name, b"old data")
        await store.put_if_absent(other, b"new data")
        assert await hot.exists(name) and not await cold.exists(name)

        assert await store.move_to_cold(name) is True
        assert not await hot.exists(name) and await cold.exists(name)
        assert await store.get(name) == b"old data"
        assert await store.exists(name)
        head = await client.head_object(Bucket=s3_bucket, Key="cold/" + name)
        assert head.get("StorageClass") == "GLACIER_IR"

        assert await store.move_to_cold(name) is False  # already cold
        assert await store.put_if_absent(name, b"old data") is False  # not copied back to hot
        assert not await hot.exists(name)
        assert sorted(await _names(store)) == sorted([name, other])

        # An interrupted move leaves the block in both tiers: still one name, still readable.
        await cold.put_if_absent(other, b"new data")
        assert sorted(await _names(store)) == sorted([name, other])
        assert await store.move_to_cold(other) is True
        assert await store.get(other) == b"new data"
        assert not await hot.exists(other)

        with pytest.raises(BlockNotFound):
            await store.move_to_cold(_name("never stored"))
        await store.delete(name)
        assert not await store.exists(name)


async def test_tiered_exists_answers_from_the_hot_tier_while_the_cold_one_fails(
        tmp_path: Path) -> None:
    """Both tiers are asked at once (issue 12, finding 10), but a cold-tier outage must not
    fail a lookup the hot tier answers: every ``complete`` asks it."""
    class Flaky(LocalBlockStore):
        down = False

        async def exists(self, name: str) -> bool:
            if self.down:
                raise OSError("cold tier unreachable")
            return await super().exists(name)

    cold = Flaky(tmp_path / "cold")
    async with TieredBlockStore(LocalBlockStore(tmp_path / "hot"), cold) as store:
        name = _name("hot")
        await store.put_if_absent(name, b"data")
        cold.down = True
        assert await store.exists(name)
        with pytest.raises(OSError):
            await store.exists(_name("nowhere"))
