"""``POST /api/files/content/batch``: many small files in one response.

A device receiving 10,000 small files would otherwise make 10,000 requests, each paying for
authentication, a few metadata lookups and an access-log line; the per-file work that remains
here is the permission check and one block read. Files up to one block (4 MiB) qualify, so every
file's bytes are read and verified in full before its frame is written, and a corrupt or missing
block becomes that file's error frame instead of a cut stream.

Response body: one frame per requested file, in request order. A frame
(:func:`driveproto.frames.content_frame`) is a 4-byte big-endian header length, a JSON header,
then ``header["length"]`` payload bytes (none for an error):

* ``{"file_id", "version", "size", "checksum", "encoding", "length"}`` — ``encoding`` is
  ``identity`` or ``zstd`` (as ``GET /blocks/{hash}`` sends it);
* ``{"file_id", "error": {"code", "message", "status"}}`` — a file that does not exist or is
  not readable by the caller is a 404, exactly as ``GET /api/files/{id}/content`` says.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from driveproto.blocks import BLOCK_SIZE, BlockCorrupt
from driveproto.frames import content_frame
from driveproto.wire import WIRE_IDENTITY

from .. import appkeys
from ..blocks.pipeline import BlockPipeline
from ..errors import ApiError, BadRequest, NotFound
from ..meta.db import Tx
from ..meta.versions import version_blocks, version_row
from ..permissions import Action, authorize
from ..storage.base import BlockNotFound, StorageError
from .common import batch_items, principal, read_json

routes = web.RouteTableDef()

PREFETCH = 8  # files read ahead while earlier frames are written ...
PREFETCH_BYTES = 8 * 1024 * 1024  # ... holding at most this much (one file at least)
WRITE_BYTES = 256 * 1024  # frames gathered into one write (two writes a file cost more)


@dataclass
class _Planned:
    header: dict[str, Any]
    blocks: tuple[str, ...] = ()  # none for an empty file or an error


def _error(file_id: Any, exc: ApiError) -> _Planned:
    return _Planned({"file_id": file_id, "error": {"code": exc.code, "message": exc.message,
                                                   "status": exc.status}})


async def _plan_one(q: Tx, user_id: str, item: Any) -> _Planned:
    if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
        raise BadRequest("each file must be an object with a string file_id",
                         code="invalid_field", field="files")
    wanted = item.get("version")
    if wanted is not None and (not isinstance(wanted, int) or isinstance(wanted, bool)):
        raise BadRequest("version must be an integer", code="invalid_field", field="version")
    file = await authorize(q, user_id, Action.READ, item["file_id"])
    if file["is_directory"]:
        raise BadRequest("a folder has no content", code="not_a_file")
    version = None if wanted is not None and not 0 < wanted < 2**63 else \
        await version_row(q, file["id"], wanted)
    if version is None:
        raise NotFound("no such version")
    if version["size"] > BLOCK_SIZE:
        raise BadRequest(f"only files of at most {BLOCK_SIZE} bytes come in a batch; use"
                         " /download or /content for this one", code="too_large_for_batch")
    blocks = await version_blocks(q, version["id"])
    return _Planned({"file_id": file["id"], "version": version["version"],
                     "size": version["size"], "checksum": version["checksum"]},
                    tuple(b.hash for b in blocks))


async def _read(pipeline: BlockPipeline, entry: _Planned) -> tuple[str, bytes]:
    """The file's bytes as ``(encoding, payload)``: its one block as stored (compressed when
    it was), or, for a small file an API client split into several blocks, the verified
    plaintext of all of them."""
    if len(entry.blocks) == 1:
        encoding, payload, _ = await pipeline.get_for_wire(entry.blocks[0],
                                                           entry.header["size"])
        return encoding, payload
    # In order, a few at a time (such a file may have thousands of tiny blocks).
    stream = pipeline.stream(list(entry.blocks))
    try:
        return WIRE_IDENTITY, b"".join([part async for part in stream])
    finally:
        await stream.aclose()


@routes.post("/api/files/content/batch")
async def content_batch(request: web.Request) -> web.StreamResponse:
    items = batch_items(await read_json(request))
    user_id = principal(request).user_id
    plan: list[_Planned] = []
    # All lookups first, on one snapshot, so every file is answered from the same state.
    async with request.app[appkeys.DB].snapshot() as q:
        for item in items:
            try:
                plan.append(await _plan_one(q, user_id, item))
            except ApiError as exc:
                plan.append(_error(item.get("file_id") if isinstance(item, dict) else None, exc))
    pipeline = request.app[appkeys.PIPELINE]
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    # Reads run ahead of the writes, bounded in files and in bytes; each file's bytes are let go
    # once written, so a response of 1,000 files holds at most a few of them.
    reads: dict[int, asyncio.Future[tuple[str, bytes]]] = {}
    ahead, ahead_bytes = 0, 0
    out = bytearray()  # frames not written yet: at most WRITE_BYTES plus one file

    async def send(*parts: bytes) -> None:
        for part in parts:
            out.extend(part)
        if len(out) >= WRITE_BYTES:
            await resp.write(bytes(out))
            out.clear()

    try:
        for i, entry in enumerate(plan):
            while ahead < len(plan) and (ahead == i or (
                    ahead - i < PREFETCH and
                    ahead_bytes + plan[ahead].header.get("size", 0) <= PREFETCH_BYTES)):
                if plan[ahead].blocks:
                    reads[ahead] = asyncio.ensure_future(_read(pipeline, plan[ahead]))
                    ahead_bytes += plan[ahead].header["size"]
                ahead += 1
            read = reads.pop(i, None)
            if read is None:  # an error, or an empty file
                await send(content_frame(entry.header if "error" in entry.header else
                                         {**entry.header, "encoding": WIRE_IDENTITY, "length": 0}))
                continue
            ahead_bytes -= entry.header["size"]
            try:
                encoding, payload = await read
            except (BlockCorrupt, StorageError) as exc:
                code, status = _READ_ERRORS[type(exc)] if type(exc) in _READ_ERRORS \
                    else ("storage_error", 503)
                await send(content_frame({"file_id": entry.header["file_id"], "error": {
                    "code": code, "status": status,
                    "message": "the stored block of this file could not be read"}}))
                continue
            await send(content_frame({**entry.header, "encoding": encoding,
                                      "length": len(payload)}), payload)
            del read, payload
        if out:
            await resp.write(bytes(out))
    finally:
        for read in reads.values():
            if not read.done():
                read.cancel()
            elif not read.cancelled():
                read.exception()  # retrieved, so an unsent file's error is not logged as lost
    await resp.write_eof()
    return resp


_READ_ERRORS: dict[type, tuple[str, int]] = {BlockCorrupt: ("block_corrupt", 500),
                                             BlockNotFound: ("block_missing", 500)}
