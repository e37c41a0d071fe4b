"""Upload-init over the API, for one file or a batch: check each file, create its pending
entry if it is new, and hand out one upload grant (a signed token with a byte budget) for the
block routes. The bytes go to the block routes; ``complete_routes`` then commits the version.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from driveproto.blocks import BLOCK_SIZE, is_block_hash

from .. import appkeys
from ..blocks.grants import UploadGrant
from ..errors import ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge
from ..meta import accounts, tree, upload_grants
from ..meta.db import Tx
from ..meta.savepoints import optimistic
from ..meta.versions import BlockRef
from ..paths import split_path
from ..permissions import Action, authorize, readable_block_sizes, writable_base
from .common import (
    actor,
    base_url,
    batch_items,
    field,
    in_savepoint,
    int_field,
    principal,
    read_json,
)

routes = web.RouteTableDef()


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


def _checked_blocks(body: dict[str, Any], max_file_bytes: int) -> tuple[int, list[BlockRef] | None]:
    """A file's size and planned blocks, checked (the part of an upload-init that needs no
    database)."""
    size = int_field(body, "size")
    if size > max_file_bytes:
        raise PayloadTooLarge(f"a file may be at most {max_file_bytes} bytes")
    return size, _planned_blocks(body, size)


_Checked = tuple[int, list[BlockRef] | None] | ApiError


def _check_all(items: list[Any], max_file_bytes: int) -> dict[int, _Checked]:
    """:func:`_checked_blocks` of each object in a batch, or the error it raised: done once,
    before the write transaction (and not again if the batch runs twice, see
    ``meta.savepoints.optimistic``), so that a hostile item naming many blocks costs its
    validation once and never holds the single writer."""
    checked: dict[int, _Checked] = {}
    for i, item in enumerate(items):
        if isinstance(item, dict):
            try:
                checked[i] = _checked_blocks(item, max_file_bytes)
            except ApiError as exc:
                checked[i] = exc
    return checked


async def _init_one(request: web.Request, tx: Tx, body: dict[str, Any],
                    checked: _Checked | None = None) -> InitResult:
    """Check one file of an upload-init and create its pending entry if it is new;
    ``checked``: its :func:`_checked_blocks`, done already."""
    p = principal(request)
    config = request.app[appkeys.CONFIG]
    if checked is None:
        checked = _checked_blocks(body, config.max_file_bytes)
    if isinstance(checked, ApiError):
        raise checked
    size, planned = checked
    base_version = int_field(body, "base_version", default=None)
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
    owner = await accounts.workspace_owner(tx, file["workspace_id"])
    assert owner is not None
    await accounts.check_quota(tx, owner["id"], owner["quota_bytes"], size - file["size"],
                               "this upload would exceed the owner's quota")
    out: dict[str, Any] = {"file_id": file["id"], "version": file["version"]}
    if planned is not None:
        known = await _readable(tx, p.user_id, [b.hash for b in planned])
        out["blocks_already_exist"] = sorted({b.hash for b in planned if b.hash in known})
        out["blocks_to_upload"] = sorted({b.hash for b in planned if b.hash not in known})
    return InitResult(file["id"], file["version"], size, planned, out, file["workspace_id"])


# tx.memo key: (block hash -> size of those the user may read, the hashes asked), asked once
# for every hash a batch names; nothing an upload-init does changes the answer (it makes
# pending files, which reference no block).
_READABLE = "upload_init.readable"


async def _readable(tx: Tx, user_id: str, hashes: list[str]) -> dict[str, int]:
    """:func:`readable_block_sizes`, from the batch's one look-up where it asked for these."""
    memo: tuple[dict[str, int], set[str]] | None = tx.memo.get(_READABLE)
    if memo is not None and memo[1].issuperset(hashes):
        return {h: memo[0][h] for h in hashes if h in memo[0]}
    return await readable_block_sizes(tx, user_id, hashes)


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
    base = base_url(request)
    q = urllib.parse.quote(token)
    return {"token": token, "upload_url": f"{base}/blocks/upload?token={q}",
            "block_url": f"{base}/blocks/{{hash}}?token={q}",
            "batch_url": f"{base}/blocks/batch?token={q}"}


@routes.post("/api/files/upload-init")
async def upload_init(request: web.Request) -> web.Response:
    body = await read_json(request)

    async def unit(tx: Tx) -> tuple[InitResult, dict[str, str]]:
        result = await _init_one(request, tx, body)
        return result, await _grant_urls(request, tx, [result])

    result, urls = await request.app[appkeys.DB].write(unit)
    return web.json_response({**result.body, **urls})


@routes.post("/api/files/upload-init/batch")
async def upload_init_batch(request: web.Request) -> web.Response:
    """Many files in one round trip; each gets its own result (or error)."""
    items = batch_items(await read_json(request))
    checked = _check_all(items, request.app[appkeys.CONFIG].max_file_bytes)
    # Every block hash the well-formed items name (a malformed one costs no look-up).
    asked = {b.hash for c in checked.values() if not isinstance(c, ApiError)
             for b in c[1] or ()}

    async def unit(tx: Tx) -> tuple[list[dict[str, Any]], dict[str, str]]:
        results: list[dict[str, Any]] = []
        ok: list[InitResult] = []
        if asked:
            known = await readable_block_sizes(tx, principal(request).user_id, sorted(asked))
            tx.memo[_READABLE] = (known, asked)
        for i, item in enumerate(items):
            async def one(item: Any = item, i: int = i) -> dict[str, Any]:
                if not isinstance(item, dict):
                    raise BadRequest("each file must be an object", code="invalid_field")
                r = await _init_one(request, tx, item, checked[i])
                if r.file_id in {o.file_id for o in ok}:
                    # Each file's size counts once in the grant's budget: the same file twice
                    # would add its size again for nothing (a 100-times budget, say).
                    raise BadRequest("this file is already in the batch", code="duplicate_file",
                                     file_id=r.file_id)
                ok.append(r)
                return r.body
            results.append(await in_savepoint(tx, one))
        return results, await _grant_urls(request, tx, ok)

    results, urls = await optimistic(request.app[appkeys.DB].write, unit)
    return web.json_response({"results": results, **urls})

