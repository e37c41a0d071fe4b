"""Block routes for patches (issue 15): a block sent or served as the difference from blocks
both sides hold (:mod:`driveproto.patches`).

* ``GET /blocks/{hash}/signature?token=`` (upload grant) — the base's piece signature, so a
  client whose own copy of the base was overwritten can still find what it kept.
* ``PUT /blocks/{hash}/patch?token=`` (upload grant) — block ``hash`` as a zstd patch against
  1–3 bases. The server fetches the bases (each verified as every read is), builds the
  dictionary, applies the patch with a bounded output, checks the result's SHA-256 against
  ``hash`` and only then charges and stores it: an ordinary sealed block with an ordinary
  receipt. Nothing else learns that a patch was involved, and a patch that fails any check
  leaves nothing behind.
* ``GET /blocks/{hash}/patch?token=&base=h1,h2`` (read grant) — block ``hash`` as a patch
  against bases the client holds, when that is smaller than the block's usual wire form.

A base must be a block the user may read now — one that a version of a file they can read
references (:func:`~driveserver.permissions.readable_block_sizes`, the rule ``complete`` uses
for blocks sent without a receipt) — or one this user sent, proved by their receipt. Anything
else is 404 ``no such base block``, the same answer as a base that is not stored, so naming
hashes teaches nothing about other people's data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from driveproto import patches
from driveproto.blocks import BLOCK_SIZE, BlockCorrupt, block_hash, is_block_hash
from driveproto.wire import compress_for_wire

from .. import appkeys
from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..httputil import read_body
from ..meta import upload_grants
from ..permissions import readable_block_sizes
from ..storage.base import BlockNotFound
from .routes import (
    CorruptBlockError,
    _charge_and_store,
    _count,
    _receipt_json,
    _upload_grant,
    read_grant,
)

routes = web.RouteTableDef()
T = TypeVar("T")

PATCH_BODY_MAX = BLOCK_SIZE + patches.MAX_HEADER + 8
PATCH_PARALLEL = 2
"""Patches made or applied at once: each holds up to 16 MiB of blocks and zstd's tables, so a
burst of patch requests waits its turn instead of taking the server's memory."""
PATCH_GATE = web.AppKey("patch_gate", asyncio.Semaphore)


def setup(app: web.Application) -> None:
    """The routes and the gate that bounds their CPU work."""
    app[PATCH_GATE] = asyncio.Semaphore(PATCH_PARALLEL)
    app.add_routes(routes)


async def _cpu(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    async with request.app[PATCH_GATE]:
        return await asyncio.to_thread(fn, *args)


def _hash_of(request: web.Request) -> str:
    h = request.match_info["hash"]
    if not is_block_hash(h):
        raise BadRequest("block hash must be 64 lowercase hex digits", code="invalid_hash")
    return h


async def _readable(request: web.Request, user_id: str, refs: list[patches.BaseRef]) -> None:
    """404 unless every base is readable by ``user_id`` now or carries their receipt for it."""
    grants = request.app[appkeys.GRANTS]
    unproved = [r.hash for r in refs
                if grants.receipt_for(r.receipt, user_id, r.hash) is None]
    if unproved:
        async with request.app[appkeys.DB].snapshot() as q:
            readable = await readable_block_sizes(q, user_id, unproved)
        if any(h not in readable for h in unproved):
            raise NotFound("no such base block", code="no_such_base")


async def _bases(request: web.Request, hashes: list[str]) -> list[bytes]:
    """The bases' verified plaintexts (404 if one is not stored, 500 if one is corrupt)."""
    pipeline = request.app[appkeys.PIPELINE]
    try:
        return list(await asyncio.gather(*(pipeline.get(h) for h in hashes)))
    except BlockNotFound:
        raise NotFound("no such base block", code="no_such_base") from None
    except BlockCorrupt:
        raise CorruptBlockError("a stored base block is corrupt; nothing was built") from None


async def _live(request: web.Request, grant_id: str, user_id: str) -> None:
    if not grant_id:
        raise upload_grants.GrantRevoked("this upload grant predates budgets; ask upload-init"
                                         " for a new one")
    await upload_grants.standing(request.app[appkeys.DB], grant_id, user_id, [])


@routes.get("/blocks/{hash}/signature")
async def get_signature(request: web.Request) -> web.Response:
    grant = _upload_grant(request)
    h = _hash_of(request)
    await _live(request, grant.grant_id, grant.user_id)
    await _readable(request, grant.user_id, [patches.BaseRef(h)])
    (data,) = await _bases(request, [h])
    sig = await _cpu(request, patches.signature, data)
    return web.Response(body=sig, content_type="application/octet-stream",
                        headers={"Cache-Control": "private, no-store"})


def _build(bases: list[bytes], refs: list[patches.BaseRef], patch: bytes, h: str,
           limit: int) -> bytes:
    """The block the patch makes (CPU work: run in a thread), or BadRequest."""
    try:
        data = patches.apply_patch(patch, patches.dictionary(bases, refs), limit)
    except patches.PatchError as exc:
        raise BadRequest(str(exc), code="invalid_patch") from None
    except BlockCorrupt as exc:
        raise BadRequest(f"the patch does not apply to these bases: {exc}",
                         code="patch_mismatch") from None
    if block_hash(data) != h:
        raise BadRequest("the patched block does not match its hash", code="patch_mismatch")
    return data


@routes.put("/blocks/{hash}/patch")
async def put_patch(request: web.Request) -> web.Response:
    grant = _upload_grant(request)
    h = _hash_of(request)
    body = await read_body(request, PATCH_BODY_MAX, "a patch")
    try:
        refs, patch = patches.parse_upload(body)
    except patches.PatchError as exc:
        raise BadRequest(str(exc), code="invalid_patch") from None
    if len(patch) > BLOCK_SIZE:
        raise PayloadTooLarge(f"a patch may be at most {BLOCK_SIZE} bytes")
    await _live(request, grant.grant_id, grant.user_id)
    await _readable(request, grant.user_id, refs)
    bases = await _bases(request, [r.hash for r in refs])
    data = await _cpu(request, _build, bases, refs, patch, h, min(BLOCK_SIZE, grant.max_bytes))
    await _charge_and_store(request, grant, h, data)
    _count(request, "in", len(data))
    return web.json_response(_receipt_json(request, grant.user_id, h, len(data)))


def parse_bases(raw: str) -> list[str]:
    """The ``base=`` parameter of a patched read: 1..MAX_BASES hashes, comma-separated."""
    hashes = [h for h in raw.split(",") if h]
    if not 1 <= len(hashes) <= patches.MAX_BASES or not all(map(is_block_hash, hashes)):
        raise BadRequest(f"base is 1..{patches.MAX_BASES} block hashes, comma-separated",
                         code="invalid_query")
    return list(dict.fromkeys(hashes))


def _wire_form(data: bytes, bases: list[bytes]) -> tuple[str, bytes]:
    """The smaller of the block's usual wire form and a patch against ``bases``."""
    encoding, payload = compress_for_wire(data)
    patch = patches.make_patch(data, b"".join(bases))
    return (patches.PATCH_ENCODING, patch) if len(patch) < len(payload) else (encoding, payload)


@routes.get("/blocks/{hash}/patch")
async def get_patch(request: web.Request) -> web.Response:
    """Block ``hash`` (under its read grant, as ``GET /blocks/{hash}``) as a patch against the
    bases the client holds (``base=``, in this order), or as usual when that is not smaller:
    ``X-Block-Encoding`` says which. The bases must be blocks the reader may read now."""
    h = request.match_info["hash"]
    grant = await read_grant(request, h)
    hashes = parse_bases(request.query.get("base", ""))
    await _readable(request, grant.user_id, [patches.BaseRef(b) for b in hashes])
    try:
        data = await request.app[appkeys.PIPELINE].get(h)
    except BlockNotFound:
        raise NotFound("no such block") from None
    except BlockCorrupt:
        raise CorruptBlockError("the stored block is corrupt; it was not served") from None
    bases = await _bases(request, hashes)
    encoding, payload = await _cpu(request, _wire_form, data, bases)
    _count(request, "out", len(data))
    headers = {"X-Block-Encoding": encoding, "X-Block-Size": str(len(data)),
               "Cache-Control": "private, no-store"}
    if encoding == patches.PATCH_ENCODING:
        headers["X-Block-Bases"] = ",".join(hashes)
    return web.Response(body=payload, content_type="application/octet-stream", headers=headers)
