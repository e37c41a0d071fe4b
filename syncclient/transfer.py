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

A file is cut by content (``driveproto.chunking``), and a changed block goes up, or comes
down, as a patch against the synced version's blocks when that is smaller (``patching.py``).

Many small files go up together in three requests (``batch_upload.py``, which shares this
module's hashing and reading) and come down in batches (``down.py``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from driveproto import patches
from driveproto.blocks import BLOCK_SIZE, block_hash, content_checksum
from driveproto.chunking import DEFAULT_SCHEME, hash_file_as
from driveproto.codes import MISSING_BLOCKS
from driveproto.replies import BlockReceipt, DownloadBlock, DownloadReply

from .errors import ApiError
from .ignore import TEMP_PREFIX
from .patching import PATCH_MIN_BYTES, fetch_patched, held_chunks, send_patch
from .remote_api import RemoteApi


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


def read_at(path: Path, offset: int, size: int) -> bytes:
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


def _hash_with_sizes(path: Path, scheme: str = DEFAULT_SCHEME) -> list[dict[str, Any]]:
    if path.is_symlink():
        target = os.fsencode(os.readlink(path))
        return [{"order": 0, "hash": block_hash(target), "size": len(target)}]
    return [{"order": i, "hash": b.hash, "size": b.size}
            for i, b in enumerate(hash_file_as(path, scheme))]


class ReceiptStore(Protocol):
    """Where receipts of sent blocks survive a crash (the state database)."""

    def receipts(self, hashes: list[str]) -> dict[str, BlockReceipt]: ...
    def put_receipt(self, h: str, receipt: BlockReceipt) -> None: ...
    def drop_receipts(self, hashes: list[str] | None = None) -> None: ...


HASH_ATTEMPTS = 5  # reads of a file that keeps changing while it is hashed, before giving up


async def hash_settled(path: Path) -> tuple[StatKey, list[dict[str, Any]]]:
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
                      receipts: ReceiptStore | None = None,
                      base_blocks: tuple[str, ...] = ()) -> Uploaded:
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

    The file is cut by the default (content-defined) scheme, so an edit changes one or two
    blocks; ``base_blocks``, the block list of the synced version, lets each changed block go
    up as a patch against the base block it most likely came from when that is smaller
    (:func:`_send_patch`).
    """
    for _attempt in range(HASH_ATTEMPTS):
        before, blocks = await hash_settled(local_path)
        size = before[0]
        body: dict[str, Any] = {"size": size, "blocks": blocks}
        body.update({"file_id": file_id} if file_id else {"path": remote_path})
        if base_version is not None:
            body["base_version"] = base_version
        init = await remote.upload_init(body)
        offsets: dict[str, tuple[int, int]] = {}
        at = 0
        for b in blocks:
            offsets.setdefault(b["hash"], (at, b["size"]))
            at += b["size"]
        bases = patches.pick_bases(base_blocks, [b["hash"] for b in blocks])
        base_of = {blocks[i]["hash"]: v for i, v in bases.items()}
        needed = sorted(set(init.get("blocks_to_upload", [])))
        kept = receipts.receipts(needed) if receipts is not None else {}
        try:
            sent = await _send_blocks(remote, local_path, init["block_url"],
                                      [h for h in needed if h not in kept], offsets, parallel,
                                      on_bytes, receipts, base_of)
        except FileChanged:
            continue
        sent.update(kept)
        done_body: dict[str, Any] = {
            "blocks": [sent.get(b["hash"], b["hash"]) for b in blocks], "executable": before[3],
            "symlink": before[4], "chunking": DEFAULT_SCHEME}
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
                       store: ReceiptStore | None = None,
                       bases: dict[str, list[str]] | None = None) -> dict[str, BlockReceipt]:
    """PUT the blocks the server lacks, ``parallel`` at a time, each re-read and re-hashed;
    a block with likely ``bases`` as a patch when that is smaller."""
    receipts: dict[str, BlockReceipt] = {}
    sem = asyncio.Semaphore(parallel)
    signatures: dict[str, asyncio.Task[bytes]] = {}  # each base's fetched once per upload

    def signature(base: str) -> asyncio.Task[bytes]:
        if base not in signatures:
            signatures[base] = asyncio.ensure_future(remote.block_signature(block_url, base))
        return signatures[base]

    async def send(h: str) -> None:
        async with sem:
            offset, bsize = offsets[h]
            data = await asyncio.to_thread(read_at, local_path, offset, bsize)
            if block_hash(data) != h:
                raise FileChanged(str(local_path))
            receipt = await send_patch(remote, block_url, h, data, (bases or {}).get(h, []),
                                        signature)
            receipts[h] = receipt or await remote.put_block(block_url, h, data)
            if store is not None:
                store.put_receipt(h, receipts[h])
            if on_bytes:
                on_bytes(len(data))

    await asyncio.gather(*(send(h) for h in needed))
    return receipts


def temp_path_for(target: Path) -> Path:
    """A hidden name beside ``target`` that the ignore rules skip (same folder: same file system,
    so the final rename is atomic)."""
    return target.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}.tmp"


def read_local_block(path: Path, offset: int, size: int, h: str) -> bytes | None:
    try:
        data = read_at(path, offset, size)
    except OSError:
        return None
    return data if len(data) == size and block_hash(data) == h else None


async def download_to_temp(remote: RemoteApi, file_id: str, target: Path,
                           local_sources: dict[str, tuple[Path, int]], parallel: int = 4,
                           on_fetch: Callable[[int], None] | None = None,
                           base_blocks: tuple[str, ...] = (), base_version: int | None = None
                           ) -> tuple[Path, DownloadReply]:
    """Assemble the current version of ``file_id`` in a temp file beside ``target`` (fsynced).

    Blocks come from ``local_sources`` and from ``target`` itself (the synced version this
    device holds, whose block list is ``base_blocks``) when they are there; the rest from the
    server, as a patch against the blocks of ``target`` they most likely came from when that
    is smaller. The answer leaves out the URLs of ``base_version``'s blocks (``since``): a
    block of it that is not here after all is fetched with a URL asked for then. Returns the
    temp path and the download answer (version, checksum, blocks).
    The caller renames it into place after checking the target, or deletes it.
    """
    info = await remote.download_info(file_id, base_version if base_blocks else None)
    full: list[asyncio.Task[DownloadReply]] = []

    async def url_of(b: DownloadBlock) -> str:
        """The block's URL, from a second answer with every URL if the first left it out."""
        if "url" in b:
            return b["url"]
        if not full:
            full.append(asyncio.ensure_future(remote.download_info(file_id)))
        again = await full[0]
        urls = {x["hash"]: x["url"] for x in again["blocks"] if "url" in x}
        if again["version"] != info["version"] or b["hash"] not in urls:
            raise FileChanged(f"{target} changed on the server during the download")
        return urls[b["hash"]]

    held: dict[str, tuple[int, int]] = {}
    bases: dict[int, list[str]] = {}
    if base_blocks:
        held, order = await asyncio.to_thread(held_chunks, target, info.get("chunking", ""),
                                              base_blocks)
        bases = patches.pick_bases(order, [b["hash"] for b in info["blocks"]])
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

        async def one(i: int, b: DownloadBlock, at: int) -> None:
            data: bytes | None = None
            if b["hash"] in held:
                data = await asyncio.to_thread(read_local_block, target, held[b["hash"]][0],
                                               b["size"], b["hash"])
            src = local_sources.get(b["hash"])
            if data is None and src is not None:
                data = await asyncio.to_thread(read_local_block, src[0], src[1], b["size"],
                                               b["hash"])
            if data is None:
                async with sem:
                    url = await url_of(b)
                    if i in bases and b["size"] >= PATCH_MIN_BYTES:
                        datas = [await asyncio.to_thread(read_local_block, target, held[h][0],
                                                         held[h][1], h) for h in bases[i]]
                        if all(d is not None for d in datas):  # a base as it was here
                            data = await fetch_patched(remote, url, b, bases[i],
                                                       [d for d in datas if d is not None])
                    if data is None:
                        data = await remote.get_block(url, b["hash"], b["size"])
                if on_fetch:
                    on_fetch(len(data))
            await asyncio.to_thread(os.pwrite, fd, data, at)

        await asyncio.gather(*(one(i, b, at) for i, (b, at)
                               in enumerate(zip(info["blocks"], offsets, strict=True))))
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
