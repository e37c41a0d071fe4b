"""Block routes: the bytes of files, authorised by signed grants rather than a bearer token.

* ``POST /blocks/upload?token=`` — a whole file as a streamed body; split, sealed, stored.
* ``PUT /blocks/{hash}?token=`` — one block (the delta path); the hash is checked.
* ``POST /blocks/batch?token=`` — many small blocks in one request (:mod:`driveproto.frames`).
* ``GET /blocks/{hash}?token=`` — one verified block, zstd-compressed on the wire when it helps.

Uploads answer with a signed receipt per block, which ``complete`` checks.

These routes were meant to trust signed grants alone and never touch the metadata database, so
that block serving could scale out on its own. A signature can neither count nor be taken back,
though (issue 12): a grant for 1 MB stored any number of megabytes for six hours (finding 8),
and a saved block URL went on serving a revoked share for an hour (finding 13). So each use of
a grant now makes one small database call, through two narrow functions: uploads charge each
block to the grant's budget before storing it (:func:`~driveserver.meta.upload_grants.charge`,
one short write transaction per block or per batch), and reads check that the grant's epochs
still hold (:func:`~driveserver.meta.accounts.grant_epochs_hold`, one primary-key query on the
snapshot reader). Scaling block serving out means giving those two calls a shared database,
nothing more. A download of many blocks asks once per block request; nothing is cached across
requests, so a revocation takes effect at the next block.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from driveproto import frames
from driveproto.blocks import BLOCK_SIZE, BlockCorrupt, is_block_hash
from driveproto.wire import WIRE_ENCODINGS, WIRE_IDENTITY, decompress_from_wire

from .. import appkeys
from ..errors import ApiError, BadRequest, NotFound, PayloadTooLarge, Unauthorized
from ..httputil import read_body
from ..meta import upload_grants
from ..meta.accounts import grant_epochs_hold
from ..meta.upload_grants import GrantRevoked
from ..storage.base import BlockNotFound
from .grants import ReadGrant, UploadGrant
from .streaming import store_body

routes = web.RouteTableDef()

BATCH_MAX_BYTES = 64 * 1024 * 1024
BATCH_MAX_DECODED = 64 * 1024 * 1024  # plaintext bytes one batch request may inflate to
BATCH_PARALLEL = 16


class CorruptBlockError(ApiError):
    status, code = 500, "block_corrupt"


def _upload_grant(request: web.Request) -> UploadGrant:
    token = request.query.get("token", "")
    grant = request.app[appkeys.GRANTS].load_upload(token) if token else None
    if grant is None:
        raise Unauthorized("missing, invalid or expired upload token", code="invalid_token")
    return grant


async def _charge(request: web.Request, grant: UploadGrant,
                  blocks: list[tuple[str, int]]) -> set[str]:
    """Count ``blocks`` against the grant's budget for its whole life, before they are stored;
    the hashes the grant had stored already (see :func:`meta.upload_grants.charge`)."""
    if not grant.grant_id:
        raise GrantRevoked("this upload grant predates budgets; ask upload-init for a new one")
    grant_id = grant.grant_id
    return await request.app[appkeys.DB].write(
        lambda tx: upload_grants.charge(tx, grant_id, grant.user_id, blocks))


async def _charge_and_store(request: web.Request, grant: UploadGrant, h: str,
                            data: bytes) -> None:
    known = await _charge(request, grant, [(h, len(data))])
    await request.app[appkeys.PIPELINE].store_block(h, data, conceal=h not in known)


def _receipt_json(request: web.Request, user_id: str, h: str, size: int) -> dict:
    return {"hash": h, "size": size,
            "receipt": request.app[appkeys.GRANTS].receipt(user_id, h, size)}


def _count(request: web.Request, direction: str, nbytes: int, nblocks: int = 1) -> None:
    m = request.app[appkeys.METRICS]
    m.block_bytes.labels(direction).inc(nbytes)
    m.blocks.labels(direction).inc(nblocks)


@routes.post("/blocks/upload")
async def upload_stream(request: web.Request) -> web.Response:
    """Split a streamed body into blocks; memory stays bounded by a few blocks whatever its size."""
    grant = _upload_grant(request)
    if request.content_length is not None and request.content_length > grant.max_bytes:
        raise PayloadTooLarge(f"this upload may carry at most {grant.max_bytes} bytes")
    pipeline = request.app[appkeys.PIPELINE]
    results: list[dict] = []

    def stored(h: str, size: int) -> None:
        _count(request, "in", size)
        results.append(_receipt_json(request, grant.user_id, h, size))

    async def one(block: bytes) -> str:
        h = await pipeline.verified_hash(block)
        await _charge_and_store(request, grant, h, block)
        return h

    received = await store_body(request, grant.max_bytes, one, stored, lambda: PayloadTooLarge(
        f"this upload may carry at most {grant.max_bytes} bytes"))
    return web.json_response({"blocks": results, "size": received})


@routes.put("/blocks/{hash}")
async def put_block(request: web.Request) -> web.Response:
    grant = _upload_grant(request)
    h = request.match_info["hash"]
    if not is_block_hash(h):
        raise BadRequest("block hash must be 64 lowercase hex digits", code="invalid_hash")
    encoding = request.headers.get("X-Block-Encoding", WIRE_IDENTITY)
    if encoding not in WIRE_ENCODINGS:
        raise BadRequest(f"unknown X-Block-Encoding {encoding!r}", code="invalid_encoding")
    payload = await read_body(request, BLOCK_SIZE, "a block")
    data = _decode(encoding, payload)
    if len(data) > grant.max_bytes:
        raise PayloadTooLarge(f"this upload may carry at most {grant.max_bytes} bytes")
    try:
        await request.app[appkeys.PIPELINE].verified_hash(data, h)
    except BlockCorrupt:
        raise BadRequest("block content does not match its hash", code="hash_mismatch") from None
    await _charge_and_store(request, grant, h, data)
    _count(request, "in", len(data))
    return web.json_response(_receipt_json(request, grant.user_id, h, len(data)))


def _decode(encoding: str, payload: bytes, max_size: int = BLOCK_SIZE) -> bytes:
    try:
        return decompress_from_wire(encoding, payload, max_size)
    except BlockCorrupt as exc:
        raise BadRequest(f"undecodable block payload: {exc}", code="invalid_encoding") from None


def parse_batch(body: bytes, budget: int | None = None,
                known: dict[str, int] | None = None) -> list[tuple[str, bytes]]:
    """The blocks of a ``/blocks/batch`` body (:func:`driveproto.frames.parse_batch`, at most
    ``BATCH_MAX_DECODED`` decoded), its failures as HTTP errors: a malformed frame is 400
    ``invalid_batch``, an undecodable payload 400 ``invalid_encoding``, and decoded bytes past
    ``budget`` (what the grant has left) or past ``BATCH_MAX_DECODED`` 413."""
    try:
        return frames.parse_batch(body, budget, known, BATCH_MAX_DECODED)
    except frames.FrameError as exc:
        raise BadRequest(str(exc), code="invalid_batch") from None
    except frames.BudgetExceeded:
        raise PayloadTooLarge(f"this upload may carry at most {budget} more bytes, and one "
                              f"request at most {BATCH_MAX_DECODED} decoded") from None
    except BlockCorrupt as exc:
        raise BadRequest(f"undecodable block payload: {exc}", code="invalid_encoding") from None


@routes.post("/blocks/batch")
async def put_batch(request: web.Request) -> web.Response:
    grant = _upload_grant(request)
    # The frame headers come on top of the grant's bytes; the decoded total is checked below.
    body = await read_body(request, BATCH_MAX_BYTES, "a batch")
    # What may be inflated is settled before anything is: what the grant has *left* (a spent or
    # revoked grant decodes nothing), and never more than BATCH_MAX_DECODED per request
    # whatever the grant's size; blocks charged before (a retry) only to their known size.
    if not grant.grant_id:
        raise GrantRevoked("this upload grant predates budgets; ask upload-init for a new one")
    try:
        claimed = frames.frame_hashes(body)
    except frames.FrameError as exc:
        raise BadRequest(str(exc), code="invalid_batch") from None
    left, charged = await upload_grants.standing(
        request.app[appkeys.DB], grant.grant_id, grant.user_id, claimed)
    blocks = parse_batch(body, max(0, left), charged)
    pipeline = request.app[appkeys.PIPELINE]
    gate = asyncio.Semaphore(BATCH_PARALLEL)

    async def verify(h: str, data: bytes) -> None:
        async with gate:
            try:
                await pipeline.verified_hash(data, h)
            except BlockCorrupt:
                raise BadRequest(f"block {h} does not match its hash",
                                 code="hash_mismatch") from None

    await asyncio.gather(*(verify(h, d) for h, d in blocks))
    unique = dict(blocks)
    # One transaction for the whole batch: thousands of small blocks are one charge.
    known = await _charge(request, grant, [(h, len(d)) for h, d in unique.items()])
    # One batch write: the store groups the fsyncs of the batch (pipeline.store_blocks).
    await pipeline.store_blocks([(h, d, h not in known) for h, d in unique.items()])
    results = [_receipt_json(request, grant.user_id, h, len(d)) for h, d in blocks]
    _count(request, "in", sum(len(d) for _, d in blocks), len(blocks))
    return web.json_response({"blocks": results})


async def read_grant(request: web.Request, h: str) -> ReadGrant:
    """The read grant of ``?token=`` for block ``h``, if genuine, unexpired and still backed
    by the access it was minted under (401 / 403 ``grant_revoked`` otherwise)."""
    token = request.query.get("token", "")
    grant = request.app[appkeys.GRANTS].load_read(token, h) \
        if token and is_block_hash(h) else None
    if grant is None:
        raise Unauthorized("missing, invalid or expired block token", code="invalid_token")
    async with request.app[appkeys.DB].snapshot() as q:
        live = await grant_epochs_hold(q, grant.user_id, grant.epochs)
    if not live:
        raise GrantRevoked("the access this block URL was issued under was revoked (a share,"
                           " device, session or password changed); ask download again")
    return grant


@routes.get("/blocks/{hash}")
async def get_block(request: web.Request) -> web.Response:
    h = request.match_info["hash"]
    await read_grant(request, h)
    try:
        encoding, payload, size = await request.app[appkeys.PIPELINE].get_for_wire(h)
    except BlockCorrupt:
        raise CorruptBlockError("the stored block is corrupt; it was not served") from None
    except BlockNotFound:
        raise NotFound("no such block") from None
    _count(request, "out", size)
    return web.Response(body=payload, content_type="application/octet-stream",
                        headers={"X-Block-Encoding": encoding, "X-Block-Size": str(size),
                                 # Not kept past the grant (a revoked share must not go on
                                 # being served from a cache); the client verifies anyway.
                                 "Cache-Control": "private, no-store"})
