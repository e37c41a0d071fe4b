"""Reading a file's content over the API: the block list of a version with a URL per block
(``download``), and the bytes themselves, streamed and verified (``content``, and every other
route that hands out file bytes through :func:`stream_version`)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from driveproto.blocks import BlockCorrupt

from .. import appkeys
from ..blocks.routes import CorruptBlockError
from ..errors import BadRequest, NotFound
from ..meta import accounts
from ..meta.db import Row
from ..meta.versions import version_blocks, version_row
from ..permissions import Action, authorize
from ..previews.inline import inline_headers, inline_type
from ..storage.base import StorageError
from .common import base_url, principal

routes = web.RouteTableDef()


async def readable_version(request: web.Request) -> tuple[Any, Any]:
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


async def _held_since(request: web.Request, file_id: str) -> set[str]:
    """``?since=N``: the blocks of the file's version N, which the client says it holds (so
    their URLs are left out); none if there is no such version."""
    raw = request.query.get("since")
    if raw is None:
        return set()
    try:
        since = int(raw)
    except ValueError:
        raise BadRequest("since must be an integer", code="invalid_query") from None
    if not 0 < since < 2**63:
        return set()
    db = request.app[appkeys.DB]
    row = await version_row(db, file_id, since)
    return set() if row is None else {b.hash for b in await version_blocks(db, row["id"])}


@routes.get("/api/files/{file_id}/download")
async def download(request: web.Request) -> web.Response:
    """The block list of a version with one short-lived URL per block (but for the blocks of
    version ``since``, which the client holds: a changed 100 MB file's answer is then a few
    KB of URLs, not 40)."""
    p = principal(request)
    file, version = await readable_version(request)
    db = request.app[appkeys.DB]
    blocks = await version_blocks(db, version["id"])
    held = await _held_since(request, file["id"])
    grants = request.app[appkeys.GRANTS]
    # The block URLs die with the session, the password and the share (if any) that let the
    # user read this file (issue 12, finding 13).
    epochs = await accounts.grant_epochs(db, p.user_id, p.session_id, [file["workspace_id"]])
    base = base_url(request)
    return web.json_response({
        "file_id": file["id"], "version": version["version"], "size": version["size"],
        "checksum": version["checksum"], "chunking": version["chunking"],
        "executable": bool(version["executable"]), "symlink": bool(version["symlink"]),
        "blocks": [{"order": i, "hash": b.hash, "size": b.size, **({} if b.hash in held else {
                    "url": f"{base}/blocks/{b.hash}?token="
                           f"{urllib.parse.quote(grants.read_token(p.user_id, b.hash, epochs))}"})}
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
    """The whole file (or one byte range), streamed block by block, each block verified.
    ``?inline=1``: for the browser to show, if the name is of a kind it may (see
    :mod:`driveserver.previews.inline`), else a download as without it."""
    file, version = await readable_version(request)
    shown = inline_type(file["name"]) if request.query.get("inline") == "1" else None
    return await stream_version(request, file["name"], version,
                                inline_headers(shown) if shown else None)


async def stream_version(request: web.Request, name: str, version: Row,
                         headers: Mapping[str, str] | None = None,
                         etag: str | None = None) -> web.StreamResponse:
    """Serve one stored version as a download: ETag/304, single Range (206/416), streaming.

    Shared by every route that hands out file bytes (the API's content route, public links,
    WebDAV's GET), so all of them verify blocks, honour ranges and fail the same way. The
    caller has already decided that the requester may read ``version``; ``headers`` are added
    to the response. ``etag`` replaces the API's (the whole checksum, quoted) in the answer and
    in If-None-Match / If-Range: WebDAV's is shorter (see driveserver/dav/resources.py).
    """
    etag = etag or f'"{version["checksum"]}"'
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
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
        **(headers or {}),
        "ETag": etag, "Accept-Ranges": "bytes", "Content-Length": str(end - start)})
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

