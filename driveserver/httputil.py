"""Reading request bodies with a hard size limit (aiohttp's client_max_size does not cover
streamed reads)."""

from __future__ import annotations

from aiohttp import web

from . import appkeys
from .errors import PayloadTooLarge


async def read_body(request: web.Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes (without reading the rest).

    A request that nobody vouches for gets the lower limit the body guard set on it."""
    limit = min(limit, request.get(appkeys.BODY_LIMIT, limit))
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"{what} may be at most {limit} bytes")
    buf = bytearray()
    async for chunk in request.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            request[appkeys.BYTES_IN] = len(buf)
            raise PayloadTooLarge(f"{what} may be at most {limit} bytes")
    request[appkeys.BYTES_IN] = len(buf)
    return bytes(buf)
