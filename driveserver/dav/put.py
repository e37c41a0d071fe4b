"""PUT: a file's new content, streamed through the block pipeline into a new version.

What an API upload does in three requests (upload-init, the block routes, complete), in one:

1. The request is checked on the committed state (write permission, the parent folder
   exists, the conditions and locks of :func:`~driveserver.dav.locking.preconditions`, the
   quota for a ``Content-Length``), so a PUT that cannot succeed is refused before a byte is
   read. Nothing is written: a body that never arrives leaves no trace in the tree.
2. The body is split into 4 MiB blocks as it arrives, each hashed, sealed and stored by the
   pipeline (a few blocks in flight at most: bounded memory whatever the size). No
   transaction is open meanwhile.
3. One unit of work checks it all again, on the state it commits against, creates the file
   if it is new and commits the block list as its next version by :meth:`Versions.commit`'s
   compare-and-swap on the version just checked. So ``If-Match`` with an ETag that is no
   longer current (someone saved meanwhile) is a 412 and never overwrites. The store is
   asked about the blocks before that transaction and the answers re-checked against GC's
   tombstones inside it (``complete_routes.with_store_lookup``), so a block GC is deleting
   never ends up in a version. The journal entry is written by the same commit, so every
   ``drive-sync`` folder hears of the change.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import appkeys
from ..api.common import actor, principal
from ..api.complete_routes import STORED, with_store_lookup
from ..blocks.streaming import store_body
from ..errors import InsufficientStorage
from ..meta import accounts, tree
from ..meta import blocks as blocks_meta
from ..meta.db import Row, Tx
from ..meta.tree import get_file
from ..meta.versions import BlockRef, CommitResult
from ..permissions import Action, authorize, writable_base
from .errors import DavError
from .locking import preconditions
from .resources import etag, parts_of_request, resolve


async def _check(request: web.Request, q: Any, parts: list[str], *, quota: bool = True
                 ) -> tuple[Row | None, int]:
    """Whether this PUT may go ahead now: (the file it replaces, or None for a new one; the
    bytes the owner's quota has room for, if ``quota``). Asked twice: before the body is read,
    to refuse early, and inside the commit's transaction, where the answer is the one that
    counts (there the commit checks the quota itself, once)."""
    p = principal(request)
    target = await resolve(q, p.user_id, parts)
    if target.virtual or (target.row is not None and target.row["is_directory"]):
        raise DavError(405, "a folder has no content to PUT")
    if target.row is None and target.parent is None:
        raise DavError(409, "the parent folder does not exist")
    await preconditions(q, request, target, [(target.row or target.parent, False)])
    if target.row is not None:
        file = await authorize(q, p.user_id, Action.WRITE, target.row["id"])
        workspace_id, size = file["workspace_id"], int(file["size"])
    else:
        base, _ = await writable_base(q, p.user_id, parts)
        workspace_id, size = await tree.child_workspace(q, base), 0
    if not quota:
        return target.row, 0
    owner = await accounts.workspace_owner(q, workspace_id)
    assert owner is not None
    room = int(owner["quota_bytes"]) - await accounts.used_bytes(q, owner["id"]) + size
    return target.row, room


async def put(request: web.Request) -> web.Response:
    parts = parts_of_request(request)
    config = request.app[appkeys.CONFIG]
    db = request.app[appkeys.DB]
    length = request.content_length
    if length is not None and length > config.max_file_bytes:
        raise DavError(413, f"a file may be at most {config.max_file_bytes} bytes")
    if request.headers.get("Content-Range"):
        raise DavError(400, "a PUT with Content-Range (a partial update) is not supported")
    _, room = await _check(request, db, parts)
    if length is not None and length > room:
        raise InsufficientStorage("this file would exceed the owner's quota")
    blocks = await _store_body(request, min(config.max_file_bytes, max(0, room)))
    hashes = [b.hash for b in blocks]
    keyring = request.app[appkeys.KEYRING]
    names = {h: keyring.object_name(h) for h in hashes}

    async def commit(tx: Tx) -> tuple[CommitResult, bool]:
        stored = tx.memo.get(STORED, {})
        dead = await blocks_meta.tombstoned(tx, names.values())
        if any(not stored.get(h, False) for h in hashes) or any(n in dead for n in names.values()):
            raise DavError(503, "a block was being collected while it was stored; send the"
                           " file again")
        row, _ = await _check(request, tx, parts, quota=False)  # they hold now, in this commit
        who = actor(request)
        if row is None:
            base, rest = await writable_base(tx, principal(request).user_id, parts)
            pending = await tree.resolve(tx, base["id"], rest)  # an upload that never ended
            row = pending or await request.app[appkeys.TREE].create_file(tx, base, rest, who)
        result = await request.app[appkeys.VERSIONS].commit(
            tx, row["id"], who, blocks, int(row["version"]), names)
        return result, int(row["version"]) == 0

    result, created = await with_store_lookup(request, hashes, commit)
    row = await get_file(db, result.file_id)
    tag = etag(row) if row is not None else None
    return web.Response(status=201 if created else 204, headers={"ETag": tag} if tag else {})


async def _store_body(request: web.Request, limit: int) -> list[BlockRef]:
    """Split, hash, seal and store the body as it streams in; 413/507 past ``limit``."""
    pipeline = request.app[appkeys.PIPELINE]
    metrics = request.app[appkeys.METRICS]
    blocks: list[BlockRef] = []

    def stored(h: str, size: int) -> None:
        blocks.append(BlockRef(h, size))
        metrics.block_bytes.labels("in").inc(size)  # as the block routes count
        metrics.blocks.labels("in").inc()

    def too_large() -> Exception:
        return DavError(507 if limit < request.app[appkeys.CONFIG].max_file_bytes else 413,
                        f"this file may carry at most {limit} bytes here")

    await store_body(request, limit, pipeline.put, stored, too_large)
    return blocks
