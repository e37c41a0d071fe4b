"""Many small files uploaded together: one ``upload-init/batch``, their blocks in as few
``POST /blocks/batch`` bodies as the grant and the server's limits allow, one
``complete/batch``. Each file keeps its own result, as if it had been uploaded alone with
:func:`~syncclient.transfer.upload_file` (the same settled hashing, every block re-hashed as it
is read for sending).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from driveproto.blocks import block_hash, content_checksum
from driveproto.frames import encode_frame
from driveproto.replies import BlockReceipt, CompleteReply, ErrorBody

from .errors import ApiError
from .remote_api import RemoteApi
from .transfer import (
    HASH_ATTEMPTS,
    FileChanged,
    StatKey,
    Uploaded,
    _hash_with_sizes,
    _stat_key,
    read_at,
)

BATCH_BODY_MAX = 32 * 1024 * 1024
BATCH_RAW_MAX = 64 * 1024 * 1024  # the server inflates at most this much of one batch request
READ_GROUP = 64  # blocks read and encoded per worker-thread job (at most 64 MiB: 1 MiB files)


def _settle_all(paths: list[Path]) -> list[tuple[StatKey, list[dict[str, Any]]] | FileChanged]:
    """For each file, its stat and block list from a read during which the stat did not move
    (what ``transfer.hash_settled`` does for one file), or FileChanged if it never settled."""
    out: list[tuple[StatKey, list[dict[str, Any]]] | FileChanged] = []
    for path in paths:
        try:
            for _attempt in range(HASH_ATTEMPTS):
                before = _stat_key(path)
                blocks = _hash_with_sizes(path)
                if _stat_key(path) == before and sum(b["size"] for b in blocks) == before[0]:
                    out.append((before, blocks))
                    break
            else:
                out.append(FileChanged(f"{path} keeps changing; will retry later"))
        except OSError as exc:  # gone or unreadable meanwhile: the next round sees it
            out.append(FileChanged(f"{path}: {exc.strerror or exc}"))
    return out


def _frames(wanted: list[tuple[str, tuple[Path, int, int]]]
            ) -> list[tuple[str, Path, bytes | None, int]]:
    """Each wanted block read again, re-hashed and encoded as a batch frame; None for a block
    whose bytes no longer match (its file changed since it was hashed)."""
    out: list[tuple[str, Path, bytes | None, int]] = []
    for h, (path, offset, size) in wanted:
        try:
            data = read_at(path, offset, size)
        except OSError:
            out.append((h, path, None, size))
            continue
        out.append((h, path, encode_frame(h, data) if block_hash(data) == h else None, len(data)))
    return out


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
    # The whole batch hashed in one worker-thread job (a hand-off per file, four per file
    # before, was a good part of a 10,000-file sync).
    for i, (item, settled) in enumerate(zip(items, await asyncio.to_thread(
            _settle_all, [item.local_path for item in items]), strict=True)):
        if isinstance(settled, FileChanged):
            unsettled[i] = settled
        else:
            item.stat, item.blocks = settled
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
    # The server charges a batch's decoded bytes to the grant and takes bodies up to 64 MiB,
    # frame headers (69 bytes each) on top: a batch of small files is one request.
    limit = BATCH_BODY_MAX
    frames: list[bytes] = []  # each block encoded once, to measure it and to send it
    body_len = raw_len = 0

    async def flush() -> None:
        nonlocal frames, body_len, raw_len
        if frames:
            for r in await remote.put_batch(init["batch_url"], b"".join(frames)):
                receipts[r["hash"]] = r
        frames, body_len, raw_len = [], 0, 0

    wanted_list = list(wanted.items())
    for k in range(0, len(wanted_list), READ_GROUP):
        # Read, re-hash and encode a group of blocks in one worker-thread job.
        for _h, path, frame, size in await asyncio.to_thread(_frames,
                                                             wanted_list[k:k + READ_GROUP]):
            if frame is None:
                changed.add(path)
                continue
            if frames and (body_len + len(frame) > limit or raw_len + size > BATCH_RAW_MAX):
                await flush()
            frames.append(frame)
            body_len += len(frame)
            raw_len += size
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
