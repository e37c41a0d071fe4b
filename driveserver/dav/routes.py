"""The ``/dav/`` routes: one handler per WebDAV method, each mapped onto the units of work the
JSON API uses (tree, versions, trash, permissions, journal), so a change made here reaches
every ``drive-sync`` folder through the change feed, and shares apply as they do in the API.

This module holds the small methods (OPTIONS, GET/HEAD, MKCOL, DELETE) and the dispatch;
PROPFIND/PROPPATCH are in :mod:`.properties`, PUT in :mod:`.put`, COPY/MOVE in
:mod:`.copymove`, LOCK/UNLOCK and conditions in :mod:`.locking`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import appkeys
from ..api.common import actor, principal
from ..api.download_routes import stream_version
from ..meta import dav_locks
from ..meta.db import Tx
from ..meta.versions import version_row
from ..permissions import authorize_trash, writable_base
from .copymove import copy_or_move
from .errors import DavError
from .locking import lock, preconditions, unlock
from .properties import ACTIVE_TYPES, content_type, http_date, propfind, proppatch
from .put import put
from .resources import etag, parts_of_request, resolve

METHODS = ("OPTIONS", "GET", "HEAD", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "PROPFIND",
           "PROPPATCH", "LOCK", "UNLOCK")
ALLOW = ", ".join(METHODS)


async def options(request: web.Request) -> web.Response:
    return web.Response(status=200, headers={
        "DAV": "1, 2", "Allow": ALLOW, "MS-Author-Via": "DAV", "Content-Length": "0"})


async def get(request: web.Request) -> web.StreamResponse:
    """A file's bytes (one byte range, ETag and 304 as the API's content route: the same
    :func:`stream_version`, blocks verified as they are read). A folder answers a short
    text saying what it is: browsing is PROPFIND's."""
    p = principal(request)
    db = request.app[appkeys.DB]
    target = await resolve(db, p.user_id, parts_of_request(request))
    if not target.exists:
        raise DavError(404, "no such resource")
    if target.is_collection:
        return web.Response(text="This is a WebDAV folder of drive: open it with a WebDAV"
                                 " client (docs/webdav.md).\n")
    assert target.row is not None
    await preconditions(db, request, target)
    version = await version_row(db, target.row["id"], None)
    if version is None:
        raise DavError(404, "no such resource")
    kind = content_type(target.row["name"])
    tag = etag(target.row) or ""
    headers = {"Content-Type": "application/octet-stream" if kind in ACTIVE_TYPES else kind,
               "Last-Modified": http_date(target.row["modified_at"])}
    if_none = [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]
    if tag in if_none or "*" in if_none:
        return web.Response(status=304, headers={"ETag": tag})
    if request.method == "HEAD":
        return web.Response(headers={**headers, "ETag": tag, "Accept-Ranges": "bytes",
                                     "Content-Length": str(version["size"])})
    return await stream_version(request, target.row["name"], version, headers, etag=tag)


async def mkcol(request: web.Request) -> web.Response:
    if request.content_length or request.headers.get("Transfer-Encoding"):
        if await request.content.read(1):
            raise DavError(415, "MKCOL with a body is not supported")
    p = principal(request)
    parts = parts_of_request(request)

    async def unit(tx: Tx) -> None:
        target = await resolve(tx, p.user_id, parts)
        if target.exists or target.pending is not None:
            raise DavError(405, "something exists at this URL already")
        if target.parent is None:
            raise DavError(409, "the parent folder does not exist")
        await preconditions(tx, request, target, [(target.parent, False)])
        base, rest = await writable_base(tx, p.user_id, parts)
        await request.app[appkeys.TREE].create_folder(tx, base, rest, actor(request))

    await request.app[appkeys.DB].write(unit)
    return web.Response(status=201)


async def delete(request: web.Request) -> web.Response:
    """To the trash, as every other client's deletes (restorable, journalled)."""
    if "#" in request.rel_url.raw_path or request.url.fragment:
        raise DavError(400, "a URL with a fragment names no resource")
    p = principal(request)
    parts = parts_of_request(request)

    async def unit(tx: Tx) -> None:
        target = await resolve(tx, p.user_id, parts)
        if target.virtual or not parts:
            raise DavError(403, "this folder cannot be deleted")
        if target.row is None:
            raise DavError(404, "no such resource")
        await preconditions(tx, request, target, [(target.row, True), (target.parent, False)])
        file = await authorize_trash(tx, p.user_id, target.row["id"])
        await request.app[appkeys.TREE].trash(tx, file, actor(request))
        await dav_locks.remove_locks_on(tx, file["id"])

    await request.app[appkeys.DB].write(unit)
    return web.Response(status=204)


HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "OPTIONS": options, "GET": get, "HEAD": get, "PUT": put, "DELETE": delete,
    "MKCOL": mkcol, "COPY": copy_or_move, "MOVE": copy_or_move, "PROPFIND": propfind,
    "PROPPATCH": proppatch, "LOCK": lock, "UNLOCK": unlock,
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    handler = HANDLERS.get(request.method)
    if handler is None:
        raise DavError(405, f"{request.method} is not a WebDAV method this server knows")
    return await handler(request)
