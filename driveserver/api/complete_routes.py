"""``complete`` over the API, for one file or a batch: commit the block list the client
uploaded as the file's next version, by compare-and-swap on ``base_version``.

Every block must be one the user may claim: they can already read it, or it carries a receipt
the block routes signed for them, and it is really stored. The store is asked before the write
transaction (no store round trip holds the single writer) and the answers are re-checked
against GC's tombstones inside it (see driveserver/gc.py for why that is enough).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from driveproto.blocks import is_block_hash
from driveproto.chunking import FIXED_SCHEME, SCHEMES

from .. import appkeys
from ..errors import BadRequest
from ..meta import blocks as blocks_meta
from ..meta.db import Tx
from ..meta.journal import Actor
from ..meta.savepoints import optimistic
from ..meta.versions import BlockRef
from ..permissions import Action, authorize, own_device, readable_block_sizes
from .common import batch_items, field, in_savepoint, int_field, principal, read_json

routes = web.RouteTableDef()
T = TypeVar("T")

SYMLINK_TARGET_MAX = 4096  # PATH_MAX on Linux: no system can make a longer link


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
    # asked before this transaction (:func:`with_store_lookup`, which put the answers in
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


def _check_chunking(body: dict[str, Any], blocks: list[BlockRef]) -> str:
    """The version's chunking scheme (``chunking``, default the fixed 4 MiB one), checked.

    The scheme must be one :data:`driveproto.chunking.SCHEMES` names. It is a label the client
    compares like with like by (docs/chunking.md): the server never reinterprets a block list,
    so it does not re-cut the content to check it, and a client that mislabels its blocks
    only loses its own dedup. What the server does hold, whatever the label: blocks per version
    are bounded by the bytes they hold, at most ``FEW_BLOCKS`` plus one per
    ``MIN_AVERAGE_BLOCK`` bytes, none empty (every block is at most ``BLOCK_SIZE``, as
    ``upload-init`` and the block routes check). One 1-byte block listed 100,000 times made a
    100 KB file whose download answer was 38 MB of JSON built on the event loop and whose
    content cost 25 s of server work: references amplified, not data."""
    scheme = field(body, "chunking", str, default=FIXED_SCHEME)
    if scheme not in SCHEMES:
        raise BadRequest(f"unknown chunking scheme {scheme!r}; one of {sorted(SCHEMES)}",
                         code="invalid_field", field="chunking")
    total = sum(b.size for b in blocks)
    if any(b.size == 0 for b in blocks) or \
            len(blocks) > FEW_BLOCKS + total // MIN_AVERAGE_BLOCK:
        raise BadRequest(f"{len(blocks)} blocks for {total} bytes: a version may have at most "
                         f"{FEW_BLOCKS} plus one per {MIN_AVERAGE_BLOCK} bytes, none empty",
                         code="invalid_field", field="blocks")
    return scheme


STORED = "stored"  # tx.memo key: the store's answers, block hash -> stored
LOOKUP_TRIES = 3  # store look-ups before a straddled one counts its blocks missing


class _StaleLookup(Exception):
    """GC dropped tombstones after the store was asked: the answers may be out of date."""


async def with_store_lookup(request: web.Request, hashes: list[str],
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


# Per request: each receipt checked (with its block hash) -> the size it vouches for, or None.
RECEIPTS_SEEN: web.RequestKey[dict[tuple[Any, Any], int | None]] = \
    web.RequestKey("receipts_seen")


def _receipt_size(request: web.Request, item: Any) -> int | None:
    """The size a block object's receipt vouches for, if it is a valid receipt of this user for
    this block. Each receipt is checked once per request (a signature check each; a batch
    names every receipt twice: for the store look-up, then in its unit of work)."""
    if not isinstance(item, dict) or "receipt" not in item:
        return None
    seen = request.get(RECEIPTS_SEEN)
    if seen is None:
        seen = request[RECEIPTS_SEEN] = {}
    key = (item["receipt"], item.get("hash"))
    try:
        if key in seen:
            return seen[key]
    except TypeError:  # not hashable (a list, an object): no receipt
        return None
    receipt = request.app[appkeys.GRANTS].receipt_for(item["receipt"], principal(request).user_id,
                                                      item.get("hash"))
    seen[key] = None if receipt is None else receipt.size
    return seen[key]


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
    base_version = int_field(body, "base_version", default=None)
    blocks = await _resolve_blocks(request, tx, body.get("blocks"))
    scheme = _check_chunking(body, blocks)
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
                                                        executable=executable, symlink=symlink,
                                                        chunking=scheme)
    return {"status": result.status, "file_id": result.file_id, "version": result.version}


@routes.post("/api/files/{file_id}/complete")
async def complete(request: web.Request) -> web.Response:
    body = await read_json(request)
    if "blocks" not in body:
        raise BadRequest("field 'blocks' is required", code="missing_field", field="blocks")
    async def unit(tx: Tx) -> dict[str, Any]:
        return await _complete_one(request, tx, request.match_info["file_id"], body)

    out = await with_store_lookup(request, _receipted_hashes(request, [body]), unit)
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
            results.append(await in_savepoint(tx, one))
        return results

    hashes = _receipted_hashes(request, items)
    results = await optimistic(lambda fn: with_store_lookup(request, hashes, fn), unit)
    return web.json_response({"results": results})
