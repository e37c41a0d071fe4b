"""The batch paths that make thousands of small files fast (issue 15), held to the guarantees of
the one-by-one paths they replace: the block pipeline's batch store, on a real local store, and
the sync client's batch writer of small downloads, on a real folder and state database."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import pytest

from driveproto import durable
from driveproto.blocks import block_hash, content_checksum
from driveserver.blocks.keys import KeyRing
from driveserver.blocks.pipeline import INLINE_BYTES, BlockPipeline
from driveserver.storage import LocalBlockStore, TieredBlockStore
from syncclient import batch_download
from syncclient.batch_download import write_prefetched
from syncclient.batch_upload import BatchItem, upload_batch
from syncclient.config import MARKER, Config
from syncclient.context import RoundResult, SyncContext
from syncclient.localtree import LocalFile, Scan
from syncclient.planner import Node, Op
from syncclient.remote import Remote
from syncclient.remote_api import RemoteApi
from syncclient.state import State
from syncclient.transfer import FileChanged, Uploaded
from tests.helpers import RunningServer
from tests.needs import need
from tests.stored_blocks import raw_bytes, stored_names


def _objects(root: Path) -> set[str]:
    return stored_names(root)


async def test_store_blocks_seals_stores_and_conceals_like_store_block(tmp_path: Path) -> None:
    """A batch of small and large blocks is sealed and stored, each readable and verified; a
    block stored before, sent again with ``conceal``, costs one more write under a decoy name
    (deleted again) and leaves the stored object as it was; without ``conceal`` nothing more
    is written."""
    store = TieredBlockStore(LocalBlockStore(tmp_path / "hot"), LocalBlockStore(tmp_path / "cold"))
    async with store:
        pipeline = BlockPipeline(KeyRing.generate(), store)
        try:
            datas = [os.urandom(100 + 37 * i) for i in range(70)] + \
                    [os.urandom(INLINE_BYTES + 1), b"z" * (3 * INLINE_BYTES)]
            blocks = [(block_hash(d), d, True) for d in datas]
            await pipeline.store_blocks(blocks)
            for h, d, _ in blocks:
                assert await pipeline.get(h) == d
            stored = _objects(tmp_path / "hot")
            assert len(stored) == len(blocks)
            first = stored.pop()
            before = raw_bytes(tmp_path / "hot", first)

            writes: list[str] = []
            real = store.hot.put_many_if_absent  # type: ignore[attr-defined]

            async def counted(items: list[tuple[str, bytes]]) -> list[bool]:
                writes.extend(name for name, _ in items)
                return await real(items)

            store.hot.put_many_if_absent = counted  # type: ignore[attr-defined]
            again = blocks[:5] + [(block_hash(b"new"), b"new", True)]
            await pipeline.store_blocks(again)
            assert len(writes) == 6  # the five known ones too, under decoy names
            assert sum(w in {pipeline.keyring.object_name(h) for h, _, _ in again}
                       for w in writes) == 1  # only the new block under its own name
            for _ in range(100):  # the decoys are deleted in the background
                if not pipeline._cleanups:
                    break
                await asyncio.sleep(0.02)
            assert _objects(tmp_path / "hot") == stored | {first} | \
                {pipeline.keyring.object_name(block_hash(b"new"))}
            assert raw_bytes(tmp_path / "hot", first) == before

            writes.clear()
            await pipeline.store_blocks([(h, d, False) for h, d, _ in blocks[:3]])
            assert writes == [pipeline.keyring.object_name(h) for h, _, _ in blocks[:3]]
            assert len(_objects(tmp_path / "hot")) == len(blocks) + 1
        finally:
            await pipeline.aclose()


# --- the client's batch writer of small downloads (syncclient.batch_download) -------------------

def _ctx(tmp_path: Path) -> SyncContext:
    root = tmp_path / "folder"
    (root / MARKER).mkdir(parents=True)
    state = State(tmp_path / "state.db")
    remote = cast(RemoteApi, object())  # the content is prefetched: no server call is made
    return SyncContext(Config("http://fake", "a@example.com", str(root), "laptop"), state, remote)


def _arrived(ctx: SyncContext, path: str, data: bytes, file_id: str,
             executable: bool = False) -> None:
    """The feed announced ``path`` and its content is in the round's prefetched batch."""
    checksum = content_checksum([block_hash(data)])
    ctx.state.put_remote(path, Node(False, checksum, file_id, 3, None, len(data), executable))
    ctx.prefetched[file_id] = data


def _spy_effects(monkeypatch: pytest.MonkeyPatch, ctx: SyncContext,
                 events: list[tuple[str, str]]) -> None:
    """Record the batch writer's effects in ``events``, in order: each fsync (with the path
    fsynced), each rename (its source, then its destination as renamed) and each state
    transaction begun (commit)."""
    real_fsync, real_replace, real_tx = os.fsync, os.replace, ctx.state.transaction

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def replace(src: Any, dst: Any) -> None:
        events.append(("rename", str(src)))
        real_replace(src, dst)
        events.append(("renamed", str(dst)))

    def transaction() -> Any:
        events.append(("commit", ""))
        return real_tx()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(ctx.state, "transaction", transaction)


async def test_batch_writer_puts_files_in_place_durably_before_recording_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file's bytes are fsynced before it is renamed under its name, and its folder
    (and the folders made for it) after, all before the state transaction that records them;
    the records say what is on disk, and the exec bit arrives. (Where one syncfs can flush
    the batch, the next test; here it cannot, as on a FUSE mount or an old kernel.)"""
    ctx = _ctx(tmp_path)
    monkeypatch.setattr(batch_download, "syncfs_works", lambda _root: False)
    files = {f"/new/sub{i % 3}/f{i}.txt": os.urandom(500 + i) for i in range(20)}
    for i, (path, data) in enumerate(files.items()):
        _arrived(ctx, path, data, f"id{i}", executable=i == 4)
    events: list[tuple[str, str]] = []
    _spy_effects(monkeypatch, ctx, events)
    out = RoundResult()
    ops = [Op("download", p, "new on the server") for p in files]
    assert await write_prefetched(ctx, ops, Scan(), out) == []
    monkeypatch.undo()
    assert [op.path for op in out.ops] == list(files) and not out.errors
    commit = events.index(("commit", ""))
    synced = ctx.state.synced_entries()
    for i, (path, data) in enumerate(files.items()):
        target = ctx.root / path.lstrip("/")
        assert target.read_bytes() == data
        assert bool(target.stat().st_mode & 0o100) == (i == 4)
        renamed = events.index(("renamed", str(target)))
        temp = events[renamed - 1][1]
        assert events.index(("fsync", temp)) < renamed, "bytes durable before the name"
        assert ("fsync", str(target.parent)) in events[renamed:commit], "entry durable"
        st = target.stat()
        entry = synced[path]
        assert (entry.file_id, entry.version, entry.size, entry.mtime_ns, entry.inode) == \
            (f"id{i}", 3, len(data), st.st_mtime_ns, st.st_ino)
        assert ctx.own.is_own_write(path)  # the watcher will not wake a round for it
    for made in ("/new", "/new/sub0"):  # the folders made: their entries too
        parent = (ctx.root / made.lstrip("/")).parent
        assert ("fsync", str(parent)) in events[:commit]
    assert not [p for p in ctx.root.rglob(".~drive-sync-*")]  # no temp file left
    assert ctx.prefetched == {}
    ctx.state.close()


async def test_batch_writer_flushes_the_file_system_twice_instead_of_fsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of many files on ext4/XFS/Btrfs (Linux 5.8+): every temp file written, one
    syncfs, the renames, a second syncfs, then the state transaction; no fsync at all. A
    batch with a temp file on another file system (a disk mounted inside the folder) keeps
    its fsyncs, since a syncfs of the folder's would not flush it."""
    ctx = _ctx(tmp_path)
    need(durable.syncfs_works(ctx.root), "syncfs(2) with write-back errors (Linux 5.8 or later)")
    files = {f"/new/sub{i % 3}/f{i}.txt": os.urandom(500 + i) for i in range(durable.SYNCFS_FROM)}
    for i, (path, data) in enumerate(files.items()):
        _arrived(ctx, path, data, f"id{i}")
    events: list[tuple[str, str]] = []
    real_syncfs = batch_download.syncfs

    def syncfs(root: Path, fd: int | None = None) -> None:
        real_syncfs(root, fd)
        events.append(("syncfs", str(root)))

    monkeypatch.setattr(batch_download, "syncfs", syncfs)
    _spy_effects(monkeypatch, ctx, events)
    out = RoundResult()
    ops = [Op("download", p, "new on the server") for p in files]
    assert await write_prefetched(ctx, ops, Scan(), out) == []
    kinds = [kind for kind, _ in events if kind != "renamed"]
    assert kinds[:kinds.index("commit") + 1] == \
        ["syncfs", *["rename"] * len(files), "syncfs", "commit"]
    assert events[0][1] == str(ctx.root)
    assert set(ctx.state.synced_entries()) == set(files)
    for path, data in files.items():
        assert (ctx.root / path.lstrip("/")).read_bytes() == data

    # One temp file on another device: the fsyncs of the test above, for the whole batch.
    events.clear()
    real_fstat, root_dev = os.fstat, os.stat(ctx.root).st_dev
    moved: list[int] = []

    def fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if not moved:
            moved.append(fd)
            fields = list(st)
            fields[2] = root_dev + 1  # st_dev
            return os.stat_result(fields)
        return st

    monkeypatch.setattr(os, "fstat", fstat)
    more = {f"/other/f{i}.txt": os.urandom(300 + i) for i in range(durable.SYNCFS_FROM)}
    for i, (path, data) in enumerate(more.items()):
        _arrived(ctx, path, data, f"more{i}")
    assert await write_prefetched(ctx, [Op("download", p, "new") for p in more], Scan(),
                                  RoundResult()) == []
    monkeypatch.undo()
    kinds = [kind for kind, _ in events]
    assert "syncfs" not in kinds and kinds.count("fsync") >= len(more)
    assert set(ctx.state.synced_entries()) == set(files) | set(more)
    ctx.state.close()


@pytest.mark.parametrize("which", ["first", "second"])
async def test_batch_writer_records_nothing_when_a_flush_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """A syncfs that fails (a full disk, an I/O error): no file of the batch is recorded as
    synced and no temp file is left. Failing before the renames, no target appears; failing
    after them, the files are in place but unrecorded, so the next round compares them with
    the server instead of trusting them."""
    ctx = _ctx(tmp_path)
    need(durable.syncfs_works(ctx.root), "syncfs(2) with write-back errors (Linux 5.8 or later)")
    files = {f"/f{i}.txt": os.urandom(400) for i in range(durable.SYNCFS_FROM)}
    for i, (path, data) in enumerate(files.items()):
        _arrived(ctx, path, data, f"id{i}")
    calls: list[str] = []
    real_syncfs = batch_download.syncfs

    def syncfs(root: Path, fd: int | None = None) -> None:
        assert fd is not None  # opened before the writes
        calls.append("syncfs")
        if len(calls) == (1 if which == "first" else 2):
            raise OSError(28, "No space left on device")
        real_syncfs(root, fd)

    monkeypatch.setattr(batch_download, "syncfs", syncfs)
    out = RoundResult()
    await write_prefetched(ctx, [Op("download", p, "new") for p in files], Scan(), out)
    assert ctx.state.synced_entries() == {}
    assert not [p for p in ctx.root.rglob(".~drive-sync-*")]
    present = [p for p in files if (ctx.root / p.lstrip("/")).exists()]
    assert present == ([] if which == "first" else list(files))
    ctx.state.close()


async def test_batch_writer_never_replaces_a_file_changed_since_the_scan(tmp_path: Path) -> None:
    """A file saved here after the scan is left as it is, not recorded (the next round plans
    again from what is there); a symlink and a file whose prefetched bytes fail their checksum
    are left to the one-by-one download; the others are written."""
    ctx = _ctx(tmp_path)
    (ctx.root / "mine.txt").write_bytes(b"scanned")
    st = (ctx.root / "mine.txt").stat()
    scan = Scan(items={"/mine.txt": LocalFile(False, 7, st.st_mtime_ns, st.st_ino, "old", ())})
    (ctx.root / "mine.txt").write_bytes(b"saved by the user meanwhile")
    _arrived(ctx, "/mine.txt", b"the server's version", "id1")
    _arrived(ctx, "/ok.txt", b"fine", "id2")
    _arrived(ctx, "/bad.txt", b"expected", "id3")
    ctx.prefetched["id3"] = b"corrupted"
    link_data = b"target.txt"
    ctx.state.put_remote("/link", Node(False, content_checksum([block_hash(link_data)]), "id4",
                                       1, None, len(link_data), False, True))
    ctx.prefetched["id4"] = link_data
    out = RoundResult()
    ops = [Op("download", p, "changed on the server")
           for p in ("/mine.txt", "/ok.txt", "/bad.txt", "/link")]
    rest = await write_prefetched(ctx, ops, scan, out)
    assert [op.path for op in rest] == ["/bad.txt", "/link"]
    assert [op.path for op in out.ops] == ["/mine.txt", "/ok.txt"]  # done, or deferred
    assert (ctx.root / "mine.txt").read_bytes() == b"saved by the user meanwhile"
    assert (ctx.root / "ok.txt").read_bytes() == b"fine"
    assert set(ctx.state.synced_entries()) == {"/ok.txt"}
    assert not [p for p in ctx.root.glob(".~drive-sync-*")]
    ctx.state.close()


# --- the client's batch upload (syncclient.batch_upload) ----------------------------------------

async def test_a_batch_of_small_files_goes_up_in_three_requests(
        server: RunningServer, tmp_path: Path) -> None:
    """100 incompressible files (whose frames together outgrow their bytes) are one upload-init,
    one blocks/batch body and one complete; a file deleted before it is hashed is deferred to
    the next round, not an error of the round."""
    async with server.user("alice@example.com", device="laptop") as client:
        remote = Remote(server.url, client.token)
        calls: list[str] = []
        for name in ("upload_init_batch", "put_batch", "complete_batch"):
            real = getattr(remote, name)

            async def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
                calls.append(_name)
                return await _real(*args)

            setattr(remote, name, counted)
        folder = tmp_path / "files"
        folder.mkdir()
        items = []
        for i in range(100):
            (folder / f"f{i}").write_bytes(os.urandom(1000 + 100 * i))
            items.append(BatchItem(f"/up/f{i}", folder / f"f{i}", None, None))
        items.append(BatchItem("/up/gone", folder / "gone", None, None))
        try:
            results = await upload_batch(remote, items)
        finally:
            await remote.close()
        assert calls == ["upload_init_batch", "put_batch", "complete_batch"]
        assert all(isinstance(r, Uploaded) for r in results[:100])
        assert isinstance(results[100], FileChanged)
        listing = await client.listdir("/up")
        assert len(listing) == 100


def test_a_big_sync_is_logged_in_a_hundred_lines_and_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    """10,000 new files made 10,000 log lines (a tenth of the daemon's time): the first
    hundred operations are logged one per line, the rest counted by kind in one line."""
    from syncclient.daemon import LOGGED_OPS, _log_done

    done = [Op("upload", f"/f{i}", "new in the folder") for i in range(240)] + \
        [Op("mkdir_remote", f"/d{i}", "new in the folder") for i in range(10)]
    with caplog.at_level("INFO", logger="syncclient.daemon"):
        _log_done(done)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == LOGGED_OPS + 1 == 101
    assert lines[0] == done[0].describe() and lines[99] == done[99].describe()
    assert lines[-1] == "... and 150 more: 140 upload, 10 mkdir_remote"
    caplog.clear()
    with caplog.at_level("INFO", logger="syncclient.daemon"):
        _log_done(done[:3])
    assert [r.getMessage() for r in caplog.records] == [op.describe() for op in done[:3]]
