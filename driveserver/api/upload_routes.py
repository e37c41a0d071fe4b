"""File content over the API: upload-init, complete (single and batch), download, content,
versions and restore. These routes own the metadata; the block routes only move bytes."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from driveproto.blocks import BLOCK_SIZE, BlockCorrupt, is_block_hash

from .. import appkeys
from ..blocks.grants import UploadGrant
from ..blocks.routes import CorruptBlockError
from ..errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
)
from ..meta import accounts, tree, upload_grants
from ..meta import blocks as blocks_meta
from ..meta.db import Row, Tx
from ..meta.journal import Actor
from ..meta.versions import BlockRef, version_blocks, version_row
from ..paths import split_path
from ..permissions import Action, authorize, own_device, readable_block_sizes, writable_base
from ..storage.base import StorageError
from .common import actor, batch_items, field, news_to_every_device, principal, read_json
from .files_routes import version_list

routes = web.RouteTableDef()
T = TypeVar("T")


def _base_url(request: web.Request) -> str:
    return request.app[appkeys.CONFIG].public_url.rstrip("/") or str(request.url.origin())


def _int_field(body: dict, name: str, *, default: Any = ..., minimum: int = 0) -> Any:
    value = field(body, name, int) if default is ... else field(body, name, int, default=default)
    if value is not None and value < minimum:
        raise BadRequest(f"field {name!r} must be at least {minimum}", code="invalid_field",
                         field=name)
    return value


def _planned_blocks(body: dict, size: int) -> list[BlockRef] | None:
    raw = field(body, "blocks", list, default=None)
    if raw is None:
        return None
    planned: list[BlockRef] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not is_block_hash(item.get("hash")) or \
                not isinstance(item.get("size"), int) or isinstance(item.get("size"), bool) or \
                not 0 < item["size"] <= BLOCK_SIZE or item.get("order", i) != i:
            raise BadRequest(f"blocks[{i}] must be {{order: {i}, hash, size}} with a SHA-256 hex"
                             f" hash and 1..{BLOCK_SIZE} bytes", code="invalid_field",
                             field="blocks")
        planned.append(BlockRef(item["hash"], item["size"]))
    if sum(b.size for b in planned) != size:
        raise BadRequest("the sizes of blocks do not add up to size", code="invalid_field",
                         field="blocks")
    return planned


@dataclass
class InitResult:
    file_id: str
    version: int
    size: int
    planned: list[BlockRef] | None
    body: dict[str, Any]
    workspace_id: str = ""


async def _init_one(request: web.Request, tx: Tx, body: dict[str, Any]) -> InitResult:
    """Check one file of an upload-init and create its pending entry if it is new."""
    p = principal(request)
    config = request.app[appkeys.CONFIG]
    size = _int_field(body, "size")
    if size > config.max_file_bytes:
        raise PayloadTooLarge(f"a file may be at most {config.max_file_bytes} bytes")
    planned = _planned_blocks(body, size)
    base_version = _int_field(body, "base_version", default=None)
    file_id = field(body, "file_id", str, default=None)
    if file_id is not None:
        file = await authorize(tx, p.user_id, Action.WRITE, file_id)
        if file["trashed_at"] is not None:
            raise NotFound("no such file")
    else:
        parts = split_path(field(body, "path", str))
        root, rest = await writable_base(tx, p.user_id, parts)
        file = await tree.resolve(tx, root["id"], rest)
        if file is None:
            file = await request.app[appkeys.TREE].create_file(tx, root, rest, actor(request))
        else:
            await authorize(tx, p.user_id, Action.WRITE, file["id"])
    if file["is_directory"]:
        raise Conflict("a folder exists at this path", code="exists", file_id=file["id"],
                       is_directory=True)
    if base_version is not None and base_version != file["version"]:
        raise Conflict("the file changed since base_version", code="version_conflict",
                       current_version=file["version"], base_version=base_version)
    owner = await tx.fetchone(
        "SELECT u.id, u.quota_bytes FROM workspaces w JOIN users u ON u.id = w.owner_id"
        " WHERE w.id = ?", (file["workspace_id"],))
    assert owner is not None
    await accounts.check_quota(tx, owner["id"], owner["quota_bytes"], size - file["size"],
                               "this upload would exceed the owner's quota")
    out: dict[str, Any] = {"file_id": file["id"], "version": file["version"]}
    if planned is not None:
        known = await readable_block_sizes(tx, p.user_id, [b.hash for b in planned])
        out["blocks_already_exist"] = sorted({b.hash for b in planned if b.hash in known})
        out["blocks_to_upload"] = sorted({b.hash for b in planned if b.hash not in known})
    return InitResult(file["id"], file["version"], size, planned, out, file["workspace_id"])


async def _grant_urls(request: web.Request, tx: Tx, results: list[InitResult]
                      ) -> dict[str, str]:
    """Mint the upload grant for ``results`` and record it, in the transaction that created
    their files: its budget is the bytes the quota was checked for (for the grant's whole life,
    see ``meta.upload_grants``), its epochs the session and shares it relies on."""
    p = principal(request)
    config = request.app[appkeys.CONFIG]
    max_bytes = sum(r.size for r in results)
    epochs = await accounts.grant_epochs(tx, p.user_id, p.session_id,
                                         [r.workspace_id for r in results])
    grant_id = await upload_grants.open_grant(tx, p.user_id, max_bytes, epochs,
                                              config.upload_token_seconds)
    token = request.app[appkeys.GRANTS].upload_token(
        UploadGrant(p.user_id, tuple(r.file_id for r in results), max_bytes, grant_id))
    base = _base_url(request)
    q = urllib.parse.quote(token)
    return {"token": token, "upload_url": f"{base}/blocks/upload?token={q}",
            "block_url": f"{base}/blocks/{{hash}}?token={q}",
            "batch_url": f"{base}/blocks/batch?token={q}"}


SYMLINK_TARGET_MAX = 4096  # PATH_MAX on Linux: no system can make a longer link


@routes.post("/api/files/upload-init")
async def upload_init(request: web.Request) -> web.Response:
    body = await read_json(request)
    async with request.app[appkeys.DB].transaction() as tx:
        result = await _init_one(request, tx, body)
        urls = await _grant_urls(request, tx, [result])
    return web.json_response({**result.body, **urls})


async def _in_savepoint(tx: Tx, fn: Any) -> dict[str, Any]:
    """Run one file of a batch; its failure rolls back only its own writes."""
    await tx.execute("SAVEPOINT one_file")
    try:
        out = await fn()
    except ApiError as exc:
        await tx.execute("ROLLBACK TO one_file")
        await tx.execute("RELEASE one_file")
        return {"error": {"code": exc.code, "message": exc.message, "status": exc.status,
                          **exc.details}}
    await tx.execute("RELEASE one_file")
    return out


@routes.post("/api/files/upload-init/batch")
async def upload_init_batch(request: web.Request) -> web.Response:
    """Many files in one round trip; each gets its own result (or error)."""
    items = batch_items(await read_json(request))
    results: list[dict[str, Any]] = []
    ok: list[InitResult] = []
    async with request.app[appkeys.DB].transaction() as tx:
        for item in items:
            async def one(item: Any = item) -> dict[str, Any]:
                if not isinstance(item, dict):
                    raise BadRequest("each file must be an object", code="invalid_field")
                r = await _init_one(request, tx, item)
                if r.file_id in {o.file_id for o in ok}:
                    # Each file's size counts once in the grant's budget: the same file twice
                    # would add its size again for nothing (a 100-times budget, say).
                    raise BadRequest("this file is already in the batch", code="duplicate_file",
                                     file_id=r.file_id)
                ok.append(r)
                return r.body
            results.append(await _in_savepoint(tx, one))
        urls = await _grant_urls(request, tx, ok)
    return web.json_response({"results": results, **urls})


async def _resolve_blocks(request: web.Request, tx: Tx, raw: Any) -> list[BlockRef]:
    """Turn the client's block list into sizes it is entitled to: either the user can already
    read the block, or it carries a receipt the block routes signed for this user; and the block
    must really be stored. Anything else is listed in a 400."""
    if not isinstance(raw, list):
        raise BadRequest("field 'blocks' must be a list", code="invalid_field", field="blocks")
    p = principal(request)
    hashes: list[str] = []
    receipts: dict[str, int] = {}
    for i, item in enumerate(raw):
        h = item if isinstance(item, str) else item.get("hash") if isinstance(item, dict) else None
        if not is_block_hash(h):
            raise BadRequest(f"blocks[{i}] is not a block hash or block object",
                             code="invalid_field", field="blocks")
        assert isinstance(h, str)
        hashes.append(h)
        size = _receipt_size(request, item)
        if size is not None:
            receipts[h] = size
    known = await readable_block_sizes(tx, p.user_id, hashes)
    sizes = {**receipts, **known}
    missing = sorted({h for h in hashes if h not in sizes})
    # A receipt proves the upload happened; the block must still be stored. The store was
    # asked before this transaction (:func:`_with_store_lookup`, which put the answers in
    # ``tx.memo``); a block GC has tombstoned since counts as missing whatever the store said
    # (see driveserver/gc.py for why that is enough).
    stored: dict[str, bool] = tx.memo.get(STORED, {})
    missing += [h for h in receipts if h not in known and not stored.get(h, False)]
    keyring = request.app[appkeys.KEYRING]
    names = {h: keyring.object_name(h) for h in set(hashes)}
    dead = await blocks_meta.tombstoned(tx, names.values())
    missing += [h for h, name in names.items() if name in dead]
    if missing:
        raise BadRequest(f"{len(missing)} block(s) were never uploaded by you; upload them first",
                         code="missing_blocks", missing=sorted(set(missing)))
    return [BlockRef(h, sizes[h]) for h in hashes]


MIN_AVERAGE_BLOCK = 4096  # bytes: blocks per version are bounded by the data they hold
FEW_BLOCKS = 64  # ...and any version may have this many, however small


def _check_chunking(blocks: list[BlockRef]) -> None:
    """Blocks per version are bounded by the bytes they hold: at most ``FEW_BLOCKS`` plus one
    per ``MIN_AVERAGE_BLOCK`` bytes, and none empty. The sync client cuts at 4 MiB, and an API
    client may cut smaller, but one 1-byte block listed 100,000 times made a 100 KB file whose
    download answer was 38 MB of JSON built on the event loop and whose content cost 25 s of
    server work: references amplified, not data."""
    total = sum(b.size for b in blocks)
    if any(b.size == 0 for b in blocks) or \
            len(blocks) > FEW_BLOCKS + total // MIN_AVERAGE_BLOCK:
        raise BadRequest(f"{len(blocks)} blocks for {total} bytes: a version may have at most "
                         f"{FEW_BLOCKS} plus one per {MIN_AVERAGE_BLOCK} bytes, none empty",
                         code="invalid_field", field="blocks")


STORED = "stored"  # tx.memo key: the store's answers, block hash -> stored
LOOKUP_TRIES = 3  # store look-ups before a straddled one counts its blocks missing


class _StaleLookup(Exception):
    """GC dropped tombstones after the store was asked: the answers may be out of date."""


async def _with_store_lookup(request: web.Request, hashes: list[str],
                             unit: Callable[[Tx], Awaitable[T]]) -> T:
    """Ask the store whether each of ``hashes`` is stored, *then* run ``unit`` as one write
    transaction with the answers in ``tx.memo[STORED]``: no store round trip holds the writer.

    The GC epoch is read before the look-up and again inside the transaction; if GC dropped
    tombstones in between, one of its deletes may postdate the look-up, so the transaction is
    rolled back and the store asked again (up to ``LOOKUP_TRIES`` times; the last try counts
    the blocks missing instead, and the client sends them again). Safety: driveserver/gc.py."""
    db = request.app[appkeys.DB]
    todo = sorted(set(hashes))
    for attempt in range(LOOKUP_TRIES):
        epoch = await blocks_meta.gc_epoch(db)
        gone = set(await request.app[appkeys.PIPELINE].missing(todo)) if todo else set()
        stored = {h: h not in gone for h in todo}
        last = attempt == LOOKUP_TRIES - 1

        async def fn(tx: Tx, stored: dict[str, bool] = stored, last: bool = last,
                     epoch: int = epoch) -> T:
            if await blocks_meta.gc_epoch(tx) != epoch:
                if not last:
                    raise _StaleLookup
                stored = {}
            tx.memo[STORED] = stored
            return await unit(tx)

        try:
            return await db.write(fn)
        except _StaleLookup:
            continue
    raise AssertionError("unreachable: the last try does not raise _StaleLookup")


def _receipt_size(request: web.Request, item: Any) -> int | None:
    """The size a block object's receipt vouches for, if it is a valid receipt of this user for
    this block."""
    if not isinstance(item, dict) or "receipt" not in item:
        return None
    receipt = request.app[appkeys.GRANTS].receipt_for(item["receipt"], principal(request).user_id,
                                                      item.get("hash"))
    return None if receipt is None else receipt.size


def _receipted_hashes(request: web.Request, items: list[Any]) -> list[str]:
    """The blocks a batch of ``complete`` bodies brings valid receipts for."""
    return [b["hash"] for item in items if isinstance(item, dict)
            and isinstance(item.get("blocks"), list)
            for b in item["blocks"] if _receipt_size(request, b) is not None]


async def _device(request: web.Request, tx: Tx, body: dict) -> str | None:
    p = principal(request)
    device_id = field(body, "device_id", str, default=None)
    if device_id is None:
        return p.device_id
    if not await own_device(tx, p.user_id, device_id):
        raise BadRequest("device_id is not one of your devices", code="invalid_field",
                         field="device_id")
    return device_id


async def _complete_one(request: web.Request, tx: Tx, file_id: str, body: dict[str, Any]
                        ) -> dict[str, Any]:
    p = principal(request)
    await authorize(tx, p.user_id, Action.WRITE, file_id)
    base_version = _int_field(body, "base_version", default=None)
    blocks = await _resolve_blocks(request, tx, body.get("blocks"))
    _check_chunking(blocks)
    actor = Actor(p.user_id, await _device(request, tx, body))
    keyring = request.app[appkeys.KEYRING]
    names = {b.hash: keyring.object_name(b.hash) for b in blocks}
    executable = field(body, "executable", bool, default=None)
    # Omitted means "not a link" (unlike the exec bit, which an older client leaves as it is):
    # an edit by a client that knows nothing of links must not stay a link, nor slip past the
    # size limit below.
    symlink = field(body, "symlink", bool, default=False)
    if symlink and sum(b.size for b in blocks) > SYMLINK_TARGET_MAX:
        raise BadRequest(f"a symlink's target is at most {SYMLINK_TARGET_MAX} bytes",
                         code="invalid_field", field="symlink")
    result = await request.app[appkeys.VERSIONS].commit(tx, file_id, actor, blocks,
                                                        base_version, names,
                                                        executable=executable, symlink=symlink)
    return {"status": result.status, "file_id": result.file_id, "version": result.version}


@routes.post("/api/files/{file_id}/complete")
async def complete(request: web.Request) -> web.Response:
    body = await read_json(request)
    if "blocks" not in body:
        raise BadRequest("field 'blocks' is required", code="missing_field", field="blocks")
    async def unit(tx: Tx) -> dict[str, Any]:
        return await _complete_one(request, tx, request.match_info["file_id"], body)

    out = await _with_store_lookup(request, _receipted_hashes(request, [body]), unit)
    return web.json_response(out)


@routes.post("/api/files/complete/batch")
async def complete_batch(request: web.Request) -> web.Response:
    """Complete many files in one transaction; each is its own compare-and-swap and result."""
    items = batch_items(await read_json(request))

    async def unit(tx: Tx) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for item in items:
            async def one(item: Any = item) -> dict[str, Any]:
                if not isinstance(item, dict):
                    raise BadRequest("each file must be an object", code="invalid_field")
                return await _complete_one(request, tx, field(item, "file_id", str), item)
            results.append(await _in_savepoint(tx, one))
        return results

    results = await _with_store_lookup(request, _receipted_hashes(request, items), unit)
    return web.json_response({"results": results})


async def _readable_version(request: web.Request) -> tuple[Any, Any]:
    p = principal(request)
    db = request.app[appkeys.DB]
    file = await authorize(db, p.user_id, Action.READ, request.match_info["file_id"])
    if file["is_directory"]:
        raise BadRequest("a folder has no content", code="not_a_file")
    raw = request.query.get("version")
    try:
        wanted = int(raw) if raw is not None else None
    except ValueError:
        raise BadRequest("version must be an integer", code="invalid_query") from None
    if wanted is not None and not 0 < wanted < 2**63:
        raise NotFound("no such version")
    version = await version_row(db, file["id"], wanted)
    if version is None:
        raise NotFound("no such version")
    return file, version


@routes.get("/api/files/{file_id}/download")
async def download(request: web.Request) -> web.Response:
    """The block list of a version with one short-lived URL per block."""
    p = principal(request)
    file, version = await _readable_version(request)
    db = request.app[appkeys.DB]
    blocks = await version_blocks(db, version["id"])
    grants = request.app[appkeys.GRANTS]
    # The block URLs die with the session, the password and the share (if any) that let the
    # user read this file (issue 12, finding 13).
    epochs = await accounts.grant_epochs(db, p.user_id, p.session_id, [file["workspace_id"]])
    base = _base_url(request)
    return web.json_response({
        "file_id": file["id"], "version": version["version"], "size": version["size"],
        "checksum": version["checksum"], "chunking": version["chunking"],
        "executable": bool(version["executable"]), "symlink": bool(version["symlink"]),
        "blocks": [{"order": i, "hash": b.hash, "size": b.size,
                    "url": f"{base}/blocks/{b.hash}?token="
                           f"{urllib.parse.quote(grants.read_token(p.user_id, b.hash, epochs))}"}
                   for i, b in enumerate(blocks)]})


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single byte range, None for the whole file, or 416."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # malformed or multi-range: serve the whole file, as RFC 9110 allows
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) + 1 if m.group(2) else size
    else:
        start, end = max(0, size - int(m.group(2))), size
    end = min(end, size)
    if start >= size or start >= end:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, end


@routes.get("/api/files/{file_id}/content")
async def content(request: web.Request) -> web.StreamResponse:
    """The whole file (or one byte range), streamed block by block, each block verified."""
    file, version = await _readable_version(request)
    return await stream_version(request, file["name"], version)


async def stream_version(request: web.Request, name: str, version: Row,
                         headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """Serve one stored version as a download: ETag/304, single Range (206/416), streaming.

    Shared by every route that hands out file bytes (the API's content route, public links), so
    all of them verify blocks, honour ranges and fail the same way. The caller has already
    decided that the requester may read ``version``; ``headers`` are added to the response.
    """
    etag = f'"{version["checksum"]}"'
    size = int(version["size"])
    if_none_match = request.headers.get("If-None-Match", "")
    if etag in if_none_match or if_none_match.strip() == "*":  # "*": any current version matches
        return web.Response(status=304, headers={**(headers or {}), "ETag": etag})
    rng = _parse_range(request.headers.get("Range", ""), size) \
        if "Range" in request.headers and request.headers.get("If-Range", etag) == etag else None
    start, end = rng if rng else (0, size)
    blocks = await version_blocks(request.app[appkeys.DB], version["id"])
    quoted = urllib.parse.quote(name)
    resp = web.StreamResponse(status=206 if rng else 200, headers={
        **(headers or {}),
        "ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
        "Content-Length": str(end - start),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}"})
    if rng:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    # Only the blocks that overlap the range are fetched.
    wanted: list[str] = []
    offsets: list[int] = []
    pos = 0
    for b in blocks:
        if pos + b.size > start and pos < end:
            wanted.append(b.hash)
            offsets.append(pos)
        pos += b.size
    stream = request.app[appkeys.PIPELINE].stream(wanted)
    try:
        # The first block is fetched before the headers go out, so a missing or corrupt block
        # at the start is a clean JSON error rather than a cut connection.
        first = await anext(stream) if wanted else None
    except BlockCorrupt:
        raise CorruptBlockError("a stored block of this file is corrupt; it was not served") \
            from None
    await resp.prepare(request)
    try:
        i = 0
        data = first
        while data is not None:
            off = offsets[i]
            await resp.write(memoryview(data)[max(0, start - off): max(0, end - off)])
            i += 1
            data = await anext(stream) if i < len(wanted) else None
    except (BlockCorrupt, StorageError):
        # Headers are gone: the only honest signal left is to cut the connection short.
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError("block read failed mid-stream") from None
    finally:
        await stream.aclose()
    await resp.write_eof()
    return resp


@routes.get("/api/files/{file_id}/versions")
async def versions(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    file = await authorize(db, p.user_id, Action.READ, request.match_info["file_id"])
    return web.json_response({"file_id": file["id"], "versions": await version_list(db, file["id"])})


@routes.post("/api/files/{file_id}/restore/{version}")
async def restore_version(request: web.Request) -> web.Response:
    """A new version with the content of an old one; no block is copied."""
    p = principal(request)
    try:
        number = int(request.match_info["version"])
    except ValueError:
        raise BadRequest("version must be an integer", code="invalid_path") from None
    if not 0 < number < 2**63:
        raise NotFound("no such version")
    async with request.app[appkeys.DB].transaction() as tx:
        file = await authorize(tx, p.user_id, Action.WRITE, request.match_info["file_id"])
        old = await version_row(tx, file["id"], number)
        if old is None or file["trashed_at"] is not None:
            raise NotFound("no such version")
        blocks = await version_blocks(tx, old["id"])
        keyring = request.app[appkeys.KEYRING]
        result = await request.app[appkeys.VERSIONS].commit(
            tx, file["id"], Actor(p.user_id, p.device_id), blocks, file["version"],
            {b.hash: keyring.object_name(b.hash) for b in blocks}, restored_from=number,
            journal_as=news_to_every_device(request), executable=bool(old["executable"]),
            symlink=bool(old["symlink"]))
    return web.json_response({"status": result.status, "file_id": result.file_id,
                              "version": result.version, "restored_from": number})
