"""Uploads and downloads of file content, block by block, with atomic local writes.

Upload: hash the file with the shared block module, ``upload-init`` with the block list, PUT only
``blocks_to_upload`` (a few in parallel), ``complete`` with ``base_version``. Each block sent is
re-read and re-hashed, so a file that changes mid-upload can never produce a half-old half-new
version: the blocks either match the list we announced or the upload is redone.

Download: ask for the block list, take every block we already hold (from the synced tree's block
index: the old version of the file or any other synced file, re-hashed after reading) from disk
and fetch the rest, verifying each SHA-256; write into a hidden temp file beside the target,
fsync, and let the caller check the target is still what the synced tree says before the atomic
``os.replace``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from driveproto.blocks import BLOCK_SIZE, block_hash, content_checksum, hash_file
from driveproto.codes import MISSING_BLOCKS
from driveproto.frames import encode_frame
from driveproto.replies import (
    BlockReceipt,
    CompleteReply,
    DownloadBlock,
    DownloadReply,
    ErrorBody,
)

from .errors import ApiError
from .ignore import TEMP_PREFIX
from .remote_api import RemoteApi

BATCH_BODY_MAX = 32 * 1024 * 1024
BATCH_RAW_MAX = 64 * 1024 * 1024  # the server inflates at most this much of one batch request


class FileChanged(Exception):
    """The local file changed while it was read: upload it again."""


@dataclass(frozen=True)
class Uploaded:
    file_id: str
    version: int
    size: int
    mtime_ns: int
    inode: int
    checksum: str
    blocks: tuple[str, ...]
    executable: bool = False
    symlink: bool = False


def _read_at(path: Path, offset: int, size: int) -> bytes:
    """Bytes of a file's content; a symlink's content is its target (never followed)."""
    if path.is_symlink():
        return os.fsencode(os.readlink(path))[offset:offset + size]
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


StatKey = tuple[int, int, int, bool, bool]


def _stat_key(path: Path) -> StatKey:
    """What says a file is as it was: size, mtime, inode, the exec bit and whether it is a
    symlink (both part of a version). Of the link itself, never of what it points at."""
    st = path.lstat()
    link = stat.S_ISLNK(st.st_mode)
    return st.st_size, st.st_mtime_ns, st.st_ino, not link and bool(st.st_mode & stat.S_IXUSR), link


def _hash_with_sizes(path: Path) -> list[dict[str, Any]]:
    if path.is_symlink():
        target = os.fsencode(os.readlink(path))
        return [{"order": 0, "hash": block_hash(target), "size": len(target)}]
    return [{"order": i, "hash": b.hash, "size": b.size} for i, b in enumerate(hash_file(path))]


class ReceiptStore(Protocol):
    """Where receipts of sent blocks survive a crash (the state database)."""

    def receipts(self, hashes: list[str]) -> dict[str, BlockReceipt]: ...
    def put_receipt(self, h: str, receipt: BlockReceipt) -> None: ...
    def drop_receipts(self, hashes: list[str] | None = None) -> None: ...


HASH_ATTEMPTS = 5  # reads of a file that keeps changing while it is hashed, before giving up


async def _hash_settled(path: Path) -> tuple[StatKey, list[dict[str, Any]]]:
    """The file's stat and block list, from a read during which the stat did not move: a list
    hashed while the file was being written could describe content that never existed on disk
    (an old first block and a new second one). Raises :class:`FileChanged` if it never
    settles; nothing was sent then, and the next round tries again."""
    for _attempt in range(HASH_ATTEMPTS):
        before = await asyncio.to_thread(_stat_key, path)
        blocks = await asyncio.to_thread(_hash_with_sizes, path)
        if await asyncio.to_thread(_stat_key, path) == before and \
                sum(b["size"] for b in blocks) == before[0]:
            return before, blocks
    raise FileChanged(f"{path} keeps changing; will retry later")


async def upload_file(remote: RemoteApi, local_path: Path, remote_path: str, file_id: str | None,
                      base_version: int | None, parallel: int = 4,
                      on_bytes: Callable[[int], None] | None = None,
                      receipts: ReceiptStore | None = None) -> Uploaded:
    """Upload one file as a new version. Raises :class:`ApiError` (e.g. 409 ``version_conflict``:
    the caller makes a conflicted copy) and redoes the upload if a block changed before it was
    sent.

    What it returns is always what the server committed: the content as it was when it was
    hashed, with the stat it had then. If the file changed after that, the caller records the
    committed version all the same (the server has it, with this device's name on it) and the
    next round sends the newer content on top of it; a client that dropped the result instead
    would upload on a stale base for ever.

    With ``receipts``, each block's receipt is kept as soon as the server has the block, so an
    upload cut short (kill -9, a lost connection) resumes by sending only what is still missing.
    """
    for _attempt in range(HASH_ATTEMPTS):
        before, blocks = await _hash_settled(local_path)
        size = before[0]
        body: dict[str, Any] = {"size": size, "blocks": blocks}
        body.update({"file_id": file_id} if file_id else {"path": remote_path})
        if base_version is not None:
            body["base_version"] = base_version
        init = await remote.upload_init(body)
        offsets = {b["hash"]: (i * BLOCK_SIZE, b["size"]) for i, b in enumerate(blocks)}
        needed = sorted(set(init.get("blocks_to_upload", [])))
        kept = receipts.receipts(needed) if receipts is not None else {}
        try:
            sent = await _send_blocks(remote, local_path, init["block_url"],
                                      [h for h in needed if h not in kept], offsets, parallel,
                                      on_bytes, receipts)
        except FileChanged:
            continue
        sent.update(kept)
        done_body: dict[str, Any] = {
            "blocks": [sent.get(b["hash"], b["hash"]) for b in blocks], "executable": before[3],
            "symlink": before[4]}
        if base_version is not None:
            done_body["base_version"] = base_version
        try:
            result = await remote.complete(init["file_id"], done_body)
        except ApiError as exc:
            if exc.status == 400 and exc.code == MISSING_BLOCKS and kept:
                # A kept receipt's block is gone from the server (collected since): send it.
                if receipts is not None:
                    receipts.drop_receipts(list(kept))
                continue
            raise
        if receipts is not None:
            receipts.drop_receipts(list(sent))
        hashes = tuple(b["hash"] for b in blocks)
        return Uploaded(init["file_id"], result["version"], size, before[1], before[2],
                        content_checksum(hashes), hashes, before[3], before[4])
    raise FileChanged(f"{local_path} keeps changing; will retry later")


async def _send_blocks(remote: RemoteApi, local_path: Path, block_url: str, needed: list[str],
                       offsets: dict[str, tuple[int, int]], parallel: int,
                       on_bytes: Callable[[int], None] | None,
                       store: ReceiptStore | None = None) -> dict[str, BlockReceipt]:
    """PUT the blocks the server lacks, ``parallel`` at a time, each re-read and re-hashed."""
    receipts: dict[str, BlockReceipt] = {}
    sem = asyncio.Semaphore(parallel)

    async def send(h: str) -> None:
        async with sem:
            offset, bsize = offsets[h]
            data = await asyncio.to_thread(_read_at, local_path, offset, bsize)
            if block_hash(data) != h:
                raise FileChanged(str(local_path))
            receipts[h] = await remote.put_block(block_url, h, data)
            if store is not None:
                store.put_receipt(h, receipts[h])
            if on_bytes:
                on_bytes(len(data))

    await asyncio.gather(*(send(h) for h in needed))
    return receipts


@dataclass
class BatchItem:
    remote_path: str
    local_path: Path
    file_id: str | None
    base_version: int | None
    stat: StatKey = (0, 0, 0, False, False)
    blocks: list[dict[str, Any]] | None = None


async def upload_batch(remote: RemoteApi, items: list[BatchItem]
                       ) -> list[Uploaded | Exception]:
    """Upload many small files with three requests: upload-init/batch, one POST /blocks/batch,
    complete/batch. Each file keeps its own result (an exception for a failed one)."""
    unsettled: dict[int, FileChanged] = {}

    async def prepare(i: int, item: BatchItem) -> None:
        try:
            item.stat, item.blocks = await _hash_settled(item.local_path)
        except FileChanged as exc:
            unsettled[i] = exc

    await asyncio.gather(*(prepare(i, item) for i, item in enumerate(items)))
    if unsettled:
        # Still being written: left to the next round, and not announced to the server.
        rest = [i for i in range(len(items)) if i not in unsettled]
        done_rest = await upload_batch(remote, [items[i] for i in rest]) if rest else []
        by_index: dict[int, Uploaded | Exception] = dict(unsettled)
        by_index.update(zip(rest, done_rest, strict=True))
        return [by_index[i] for i in range(len(items))]
    bodies = []
    for item in items:
        assert item.blocks is not None
        body: dict[str, Any] = {"size": item.stat[0], "blocks": item.blocks}
        body.update({"file_id": item.file_id} if item.file_id else {"path": item.remote_path})
        if item.base_version is not None:
            body["base_version"] = item.base_version
        bodies.append(body)
    init = await remote.upload_init_batch(bodies)
    results: list[Uploaded | Exception] = []
    wanted: dict[str, tuple[Path, int, int]] = {}
    for item, res in zip(items, init["results"], strict=True):
        if "error" in res:
            continue
        assert item.blocks is not None
        offset = 0
        for b in item.blocks:
            if b["hash"] in res.get("blocks_to_upload", []):
                wanted.setdefault(b["hash"], (item.local_path, offset, b["size"]))
            offset += b["size"]
    receipts: dict[str, BlockReceipt] = {}
    changed: set[Path] = set()
    # The server accepts a batch body of at most the grant's bytes + 4096, headers included
    # (69 bytes a frame), so many tiny blocks go in several requests.
    granted = sum(item.stat[0] for item, res in zip(items, init["results"], strict=True)
                  if "error" not in res)
    limit = min(BATCH_BODY_MAX, granted + 4096)
    frames: list[bytes] = []  # each block encoded once, to measure it and to send it
    body_len = raw_len = 0

    async def flush() -> None:
        nonlocal frames, body_len, raw_len
        if frames:
            for r in await remote.put_batch(init["batch_url"], b"".join(frames)):
                receipts[r["hash"]] = r
        frames, body_len, raw_len = [], 0, 0

    for h, (path, offset, size) in wanted.items():
        data = await asyncio.to_thread(_read_at, path, offset, size)
        if block_hash(data) != h:
            changed.add(path)
            continue
        frame = encode_frame(h, data)
        if frames and (body_len + len(frame) > limit or raw_len + len(data) > BATCH_RAW_MAX):
            await flush()
        frames.append(frame)
        body_len += len(frame)
        raw_len += len(data)
    await flush()
    completes, order = [], []
    for i, (item, res) in enumerate(zip(items, init["results"], strict=True)):
        if "error" in res or item.local_path in changed:
            continue
        assert item.blocks is not None
        body = {"file_id": res["file_id"], "executable": item.stat[3], "symlink": item.stat[4],
                "blocks": [receipts.get(b["hash"], b["hash"]) for b in item.blocks]}
        if item.base_version is not None:
            body["base_version"] = item.base_version
        completes.append(body)
        order.append(i)
    done: dict[int, CompleteReply | ErrorBody] = dict(zip(
        order, await remote.complete_batch(completes) if completes else [], strict=True))
    for i, (item, res) in enumerate(zip(items, init["results"], strict=True)):
        err = _error_of(res) or _error_of(done.get(i))
        if err:
            results.append(ApiError(err.get("status", 400), err.get("code"),
                                    err.get("message", ""), err))
            continue
        if i not in done:
            results.append(FileChanged(str(item.local_path)))
            continue
        # Committed. The file may have changed since it was hashed: what the server has is
        # still that content, with this stat, and the caller records exactly that (dropping it
        # would leave every later upload on a stale base); the next round sends the rest.
        assert item.blocks is not None
        hashes = tuple(b["hash"] for b in item.blocks)
        committed = cast(CompleteReply, done[i])
        results.append(Uploaded(committed["file_id"], committed["version"], item.stat[0],
                                item.stat[1], item.stat[2], content_checksum(hashes), hashes,
                                item.stat[3], item.stat[4]))
    return results


def _error_of(result: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``error`` of one file's result in a batch answer, if it failed."""
    return result.get("error") if result else None


def temp_path_for(target: Path) -> Path:
    """A hidden name beside ``target`` that the ignore rules skip (same folder: same file system,
    so the final rename is atomic)."""
    return target.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}.tmp"


def read_local_block(path: Path, offset: int, size: int, h: str) -> bytes | None:
    try:
        data = _read_at(path, offset, size)
    except OSError:
        return None
    return data if len(data) == size and block_hash(data) == h else None


async def download_to_temp(remote: RemoteApi, file_id: str, target: Path,
                           local_sources: dict[str, tuple[Path, int]], parallel: int = 4,
                           on_fetch: Callable[[int], None] | None = None
                           ) -> tuple[Path, DownloadReply]:
    """Assemble the current version of ``file_id`` in a temp file beside ``target`` (fsynced).

    Returns the temp path and the download answer (version, checksum, blocks). The caller renames
    it into place after checking the target, or deletes it.
    """
    info = await remote.download_info(file_id)
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    # 0o666 less the umask, as any new file; the caller gives a replaced file its old mode.
    fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    sem = asyncio.Semaphore(parallel)
    try:
        offsets = []
        offset = 0
        for b in info["blocks"]:
            offsets.append(offset)
            offset += b["size"]

        async def one(b: DownloadBlock, at: int) -> None:
            data: bytes | None = None
            src = local_sources.get(b["hash"])
            if src is not None:
                data = await asyncio.to_thread(read_local_block, src[0], src[1], b["size"],
                                               b["hash"])
            if data is None:
                async with sem:
                    data = await remote.get_block(b["url"], b["hash"], b["size"])
                if on_fetch:
                    on_fetch(len(data))
            await asyncio.to_thread(os.pwrite, fd, data, at)

        await asyncio.gather(*(one(b, at) for b, at in zip(info["blocks"], offsets, strict=True)))
        await asyncio.to_thread(os.ftruncate, fd, offset)
        await asyncio.to_thread(os.fsync, fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp, info


SMALL_FILE_BYTES = 1024 * 1024


def _write_temp(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # less the umask
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


# Files up to this size arrive in batches (``POST /api/files/content/batch``), a hundred per
# request; a batch of them is held in memory until written.
BATCH_DOWNLOAD_MAX_FILE_BYTES = 256 * 1024


def verified_small(data: bytes, checksum: str) -> tuple[str, ...] | None:
    """The block hashes of ``data`` if its checksum is ``checksum``, else None."""
    hashes = tuple(block_hash(data[i:i + BLOCK_SIZE]) for i in range(0, len(data), BLOCK_SIZE))
    return hashes if content_checksum(hashes) == checksum else None


async def download_small(remote: RemoteApi, file_id: str, checksum: str, target: Path
                         ) -> tuple[Path, tuple[str, ...]] | None:
    """One request for a small file (``GET /content``) instead of block list + block: half the
    round trips when thousands of small files arrive. The bytes are verified against the
    checksum the feed announced; None if they do not match (the file changed meanwhile: the
    caller falls back to the block path)."""
    data = await remote.content(file_id)
    hashes = verified_small(data, checksum)
    if hashes is None:
        return None
    return await asyncio.to_thread(_write_temp, target, data), hashes


async def write_from_local(data: bytes, target: Path) -> Path:
    return await asyncio.to_thread(_write_temp, target, data)
