"""COPY and MOVE (RFC 4918 sections 9.8 and 9.9), each one unit of work.

MOVE is the tree's own move (``Tree.move``: one row update, journalled; into or out of a
shared folder only for the owner of both, as in the API). COPY makes new items through the
tree and commits each file's current block list as the copy's first version (the blocks are
readable by the asker, so no byte is sent or stored again), with its dead properties. A
destination that exists is moved to the trash first when ``Overwrite`` is T (the default)
and refused with 412 when it is F. All in one transaction: a COPY of a folder that fails
halfway leaves nothing behind.
"""

from __future__ import annotations

from aiohttp import web

from driveproto.names import name_key

from .. import appkeys
from ..api.common import actor, principal
from ..meta import dav_locks, dav_properties, tree
from ..meta.db import Row, Tx
from ..meta.versions import version_blocks, version_row
from ..permissions import authorize_move, authorize_trash, writable_base
from .errors import DavError
from .locking import preconditions
from .resources import parts_of_request, parts_of_url, resolve

PAGE = 5000
MAX_COPY = 10_000  # items one COPY makes


def _below(inner: list[str], outer: list[str]) -> bool:
    """Whether path ``inner`` is ``outer`` or lies below it (names compared as the tree does)."""
    return len(inner) >= len(outer) and all(
        name_key(a) == name_key(b) for a, b in zip(inner, outer, strict=False))


async def copy_or_move(request: web.Request) -> web.Response:
    move = request.method == "MOVE"
    destination = request.headers.get("Destination")
    if not destination:
        raise DavError(400, f"{request.method} needs a Destination header")
    dest_parts = parts_of_url(destination)
    src_parts = parts_of_request(request)
    overwrite = request.headers.get("Overwrite", "T").strip().upper()
    if overwrite not in ("T", "F"):
        raise DavError(400, "Overwrite must be T or F")
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth not in ("0", "infinity") or (move and depth != "infinity"):
        raise DavError(400, "Depth must be infinity for MOVE, 0 or infinity for COPY")
    if not src_parts or not dest_parts:
        raise DavError(403, "the root folder cannot be copied, moved or replaced")
    same = len(src_parts) == len(dest_parts) and _below(src_parts, dest_parts)
    if same and (not move or src_parts == dest_parts):
        raise DavError(403, "the source and the destination are the same")
    if not same and (_below(dest_parts, src_parts) or _below(src_parts, dest_parts)):
        raise DavError(403, "the source and the destination overlap")
    p = principal(request)

    async def unit(tx: Tx) -> int:
        src = await resolve(tx, p.user_id, src_parts)
        if src.virtual:
            raise DavError(403, "/Shared with me is managed by sharing")
        if src.row is None:
            raise DavError(404, "no such resource")
        dst = await resolve(tx, p.user_id, dest_parts)
        if dst.virtual:
            raise DavError(403, "/Shared with me is managed by sharing")
        if dst.parent is None:
            raise DavError(409, "the destination's parent folder does not exist")
        writes: list[tuple[Row | None, bool]] = [(dst.row, True), (dst.parent, False)]
        if move:
            writes += [(src.row, True), (src.parent, False)]
        await preconditions(tx, request, src, writes)
        status = 201
        if dst.row is not None and not same:  # (same: a MOVE that changes only case)
            if overwrite == "F":
                raise DavError(412, "the destination exists and Overwrite is F")
            doomed = await authorize_trash(tx, p.user_id, dst.row["id"])
            await request.app[appkeys.TREE].trash(tx, doomed, actor(request))
            await dav_locks.remove_locks_on(tx, doomed["id"])
            status = 204
        elif same:
            status = 204
        base, rest = await writable_base(tx, p.user_id, dest_parts)
        if move:
            file = await authorize_move(tx, p.user_id, src.row["id"])
            await request.app[appkeys.TREE].move(tx, file, base, rest, actor(request))
            await dav_locks.remove_locks_on(tx, file["id"])  # a lock stays with its URL
        else:
            await _copy(request, tx, src.row, base, rest, depth == "infinity", [0])
        return status

    status = await request.app[appkeys.DB].write(unit)
    return web.Response(status=status)


async def _copy(request: web.Request, tx: Tx, src: Row, base: Row, rest: list[str],
                deep: bool, count: list[int]) -> None:
    """Copy ``src`` to ``rest`` below ``base`` (the folders above it exist), and with ``deep``
    everything below it; ``count`` is how many items the COPY made so far (at most
    ``MAX_COPY``: one transaction holds the single writer, so it must stay short)."""
    count[0] += 1
    if count[0] > MAX_COPY:
        raise DavError(403, f"a COPY may make at most {MAX_COPY} items; copy the folder's"
                       " parts one by one")
    who = actor(request)
    if src["is_directory"]:
        folder = await request.app[appkeys.TREE].create_folder(tx, base, rest, who)
        await dav_properties.copy_properties(tx, src["id"], folder["id"])
        if not deep:
            return
        after = None
        while True:
            children = await tree.list_children(tx, src["id"], PAGE, after)
            for child in children:
                await _copy(request, tx, child, base, [*rest, child["name"]], True, count)
            if len(children) < PAGE:
                return
            after = children[-1]["name_key"]
    version = await version_row(tx, src["id"], None)
    if version is None:
        raise DavError(409, f"{src['name']!r} has no content yet")
    blocks = await version_blocks(tx, version["id"])
    keyring = request.app[appkeys.KEYRING]
    names = {b.hash: keyring.object_name(b.hash) for b in blocks}
    file = await request.app[appkeys.TREE].create_file(tx, base, rest, who)
    await request.app[appkeys.VERSIONS].commit(
        tx, file["id"], who, blocks, 0, names, executable=bool(version["executable"]),
        symlink=bool(version["symlink"]), chunking=str(version["chunking"]))
    await dav_properties.copy_properties(tx, src["id"], file["id"])
