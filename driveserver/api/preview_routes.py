"""Thumbnails of images for the web app's grid (``GET /api/files/{id}/thumbnail``).

Read access is decided first, by the same check as a download; then the thumbnail comes from
the cache or is made from the file's blocks (each verified, as every read is). See
:mod:`driveserver.previews.thumbnails` for the limits and why nothing is written to disk.
"""

from __future__ import annotations

from aiohttp import web

from .. import appkeys
from ..errors import BadRequest, UnsupportedMediaType
from ..meta.db import Row
from ..meta.versions import version_blocks
from ..previews.thumbnails import (
    CONTENT_TYPE,
    MAX_SOURCE_BYTES,
    SIZES,
    NotAnImage,
    ThumbnailCache,
    has_image_name,
)
from .download_routes import readable_version

routes = web.RouteTableDef()
THUMBNAILS: web.AppKey[ThumbnailCache] = web.AppKey("thumbnails", ThumbnailCache)


def setup_previews(app: web.Application) -> None:
    app[THUMBNAILS] = ThumbnailCache()
    app.add_routes(routes)


@routes.get("/api/files/{file_id}/thumbnail")
async def thumbnail(request: web.Request) -> web.Response:
    raw = request.query.get("size", "256")
    if not raw.isdigit() or int(raw) not in SIZES:
        raise BadRequest(f"size must be one of {', '.join(map(str, SIZES))}",
                         code="invalid_query")
    size = int(raw)
    file, version = await readable_version(request)
    if not has_image_name(file["name"]):
        raise UnsupportedMediaType("thumbnails are made of JPEG, PNG, GIF, WebP, BMP and TIFF"
                                   " images only")
    if int(version["size"]) > MAX_SOURCE_BYTES:
        raise UnsupportedMediaType(f"images over {MAX_SOURCE_BYTES // (1024 * 1024)} MiB get no"
                                   " thumbnail")
    checksum = str(version["checksum"])
    etag = f'"{checksum}-{size}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400",
               "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    cache = request.app[THUMBNAILS]
    data = cache.get(checksum, size)
    if data is None:
        async with cache.slots:
            data = cache.get(checksum, size) or await _make(request, version, size)
        cache.put(checksum, size, data)
    return web.Response(body=data, content_type=CONTENT_TYPE, headers=headers)


async def _make(request: web.Request, version: Row, size: int) -> bytes:
    blocks = await version_blocks(request.app[appkeys.DB], version["id"])
    source = bytearray()
    stream = request.app[appkeys.PIPELINE].stream([b.hash for b in blocks])
    try:
        async for block in stream:
            source += block
    finally:
        await stream.aclose()
    try:
        return await ThumbnailCache.render(bytes(source), size)
    except NotAnImage as exc:
        raise UnsupportedMediaType(str(exc)) from None
