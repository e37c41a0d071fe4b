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
from .transfer import FileChanged, StatKey, Uploaded, hash_settled, read_at

BATCH_BODY_MAX = 32 * 1024 * 1024
BATCH_RAW_MAX = 64 * 1024 * 1024  # the server inflates at most this much of one batch request


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
            item.stat, item.blocks = await hash_settled(item.local_path)
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
        data = await asyncio.to_thread(read_at, path, offset, size)
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
