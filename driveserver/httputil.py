"""HTTP helpers below the routes: reading request bodies with a hard size limit (aiohttp's
client_max_size does not cover streamed reads), and the JSON error answer that the error
middleware and the connection guard both send."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import appkeys
from .errors import PayloadTooLarge, error_body


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


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    """An error answer in the API's one JSON shape; a ``retry_after`` detail also becomes the
    ``Retry-After`` header (whole seconds, rounded up, at least 1)."""
    headers = {}
    if "retry_after" in details:
        headers["Retry-After"] = str(max(1, int(details["retry_after"] + 0.999)))
    return web.Response(status=status, text=json.dumps(error_body(code, message, **details)),
                        content_type="application/json", headers=headers)
