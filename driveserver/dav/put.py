"""PUT: a file's new content, streamed through the block pipeline into a new version.

Three steps, as an API upload takes (upload-init, the block routes, complete), in one request:

1. One unit of work checks the request (write permission, the parent folder exists, the
   conditions and locks of :func:`~driveserver.dav.locking.preconditions`, the quota for a
   ``Content-Length``) and creates the pending entry of a new file (version 0, hidden until a
   version commits, collected by GC if none ever does). It notes the version the body is
   based on: with ``If-Match`` (or an ``If`` header's entity tag), the one the client named.
2. The body is split into 4 MiB blocks as it arrives, each hashed, sealed and stored by the
   pipeline (a few blocks in flight at most: bounded memory whatever the size; a block that is
   stored already is not stored twice). No transaction is open meanwhile.
3. The block list is committed by :meth:`Versions.commit`, with the compare-and-swap on that
   base version: a version committed by anyone else in between makes it a 412, and nothing
   is overwritten. The store is asked about the blocks before the commit and the answers are
   re-checked against GC's tombstones inside it (``complete_routes._with_store_lookup``), so a
   block GC is deleting never ends up in a version. The journal entry is written by the same
   commit, so every ``drive-sync`` folder hears of it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiohttp import web

from driveproto.blocks import BlockSplitter

from .. import appkeys
from ..api.common import actor, principal
from ..api.complete_routes import STORED, _with_store_lookup
from ..errors import Conflict, InsufficientStorage, NotFound
from ..meta import accounts
from ..meta import blocks as blocks_meta
from ..meta.db import Tx
from ..meta.tree import get_file
from ..meta.versions import BlockRef, CommitResult
from ..permissions import Action, authorize, writable_base
from .errors import DavError
from .locking import preconditions
from .resources import etag, parts_of_request, resolve

READ_CHUNK = 1024 * 1024
IN_FLIGHT = 3  # blocks being sealed and stored at once


async def put(request: web.Request) -> web.Response:
    p = principal(request)
    parts = parts_of_request(request)
    config = request.app[appkeys.CONFIG]
    db = request.app[appkeys.DB]
    length = request.content_length
    if length is not None and length > config.max_file_bytes:
        raise DavError(413, f"a file may be at most {config.max_file_bytes} bytes")
    if request.headers.get("Content-Range"):
        raise DavError(400, "a PUT with Content-Range (a partial update) is not supported")

    async def prepare(tx: Tx) -> tuple[str, int | None, bool, int]:
        target = await resolve(tx, p.user_id, parts)
        if target.virtual or (target.row is not None and target.row["is_directory"]):
            raise DavError(405, "a folder has no content to PUT")
        if target.row is None and target.parent is None:
            raise DavError(409, "the parent folder does not exist")
        conditional = any(h in request.headers for h in ("If-Match", "If"))
        existing = target.row or target.pending
        await preconditions(tx, request, target,
                            [(target.row, False)] if target.row is not None
                            else [(target.parent, False)])
        if existing is not None:
            file = await authorize(tx, p.user_id, Action.WRITE, existing["id"])
        else:
            base, rest = await writable_base(tx, p.user_id, parts)
            file = await request.app[appkeys.TREE].create_file(tx, base, rest, actor(request))
        owner = await accounts.workspace_owner(tx, file["workspace_id"])
        assert owner is not None
        room = int(owner["quota_bytes"]) - await accounts.used_bytes(tx, owner["id"]) \
            + int(file["size"])
        if length is not None and length > room:
            raise InsufficientStorage("this file would exceed the owner's quota",
                                      quota=owner["quota_bytes"])
        base_version = int(file["version"]) if conditional and target.row is not None else None
        return file["id"], base_version, target.row is None, room

    file_id, base_version, created, room = await db.write(prepare)
    limit = min(config.max_file_bytes, max(0, room))
    blocks = await _store_body(request, limit)
    hashes = [b.hash for b in blocks]
    keyring = request.app[appkeys.KEYRING]
    names = {h: keyring.object_name(h) for h in hashes}

    async def commit(tx: Tx) -> CommitResult:
        stored = tx.memo.get(STORED, {})
        dead = await blocks_meta.tombstoned(tx, names.values())
        if any(not stored.get(h, False) for h in hashes) or any(n in dead for n in names.values()):
            raise DavError(503, "a block was being collected while it was stored; send the"
                           " file again")
        await authorize(tx, p.user_id, Action.WRITE, file_id)
        try:
            return await request.app[appkeys.VERSIONS].commit(
                tx, file_id, actor(request), blocks, base_version, names)
        except Conflict as exc:
            if exc.code == "version_conflict":
                raise DavError(412, "the file changed since the version this PUT was based"
                               " on; nothing was overwritten") from None
            raise
        except NotFound:
            raise DavError(409, "the file was deleted or moved while it was sent") from None

    await _with_store_lookup(request, hashes, commit)
    row = await get_file(db, file_id)
    tag = etag(row) if row is not None else None
    return web.Response(status=201 if created else 204, headers={"ETag": tag} if tag else {})


async def _store_body(request: web.Request, limit: int) -> list[BlockRef]:
    """Split, hash, seal and store the body as it streams in; 413/507 past ``limit``."""
    pipeline = request.app[appkeys.PIPELINE]
    splitter = BlockSplitter()
    in_flight: deque[asyncio.Task[str]] = deque()
    sizes: deque[int] = deque()
    blocks: list[BlockRef] = []
    received = 0

    async def one(block: bytes) -> str:
        return await pipeline.put(block)

    async def settle(keep: int) -> None:
        while len(in_flight) > keep:
            h = await in_flight.popleft()
            blocks.append(BlockRef(h, sizes.popleft()))

    def start(block: bytes) -> None:
        in_flight.append(asyncio.ensure_future(one(block)))
        sizes.append(len(block))

    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            received += len(chunk)
            if received > limit:
                raise DavError(507 if limit < request.app[appkeys.CONFIG].max_file_bytes
                               else 413, f"this file may carry at most {limit} bytes here")
            for block in splitter.feed(chunk):
                start(block)
                await settle(IN_FLIGHT - 1)
        tail = splitter.finish()
        if tail is not None:
            start(tail)
        await settle(0)
    finally:
        for task in in_flight:
            task.cancel()
        request[appkeys.BYTES_IN] = received
    return blocks
