"""The one middleware that renders every error as JSON.

Handlers raise :class:`~driveserver.errors.ApiError` subclasses; nothing else builds an error
response. Anything unexpected becomes a 500 with a generic message (details go to the log, never
to the client), so the body shape ``{"error": {"code", "message"}}`` holds for every failure,
including aiohttp's own 404/405, body-size and range errors. An ``HTTPException``'s headers that
carry meaning survive the rebuild: a 416 keeps ``Content-Range: bytes */SIZE`` (code
``range_not_satisfiable``, see docs/api.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import ApiError
from ..httputil import error_response
from ..observability import loggable_path
from ..storage.base import BlockNotFound, StorageError

log = logging.getLogger("driveserver.errors")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
               416: "range_not_satisfiable"}

# Headers of an aiohttp HTTPException that the JSON answer keeps.
_KEPT_HEADERS = ("Content-Range", "Allow")


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else "no such route"
        if exc.status == 413:
            message = "request body too large"
        resp = error_response(exc.status, code, message)
        for name in _KEPT_HEADERS:
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except ConnectionResetError:
        raise
    except BlockNotFound as exc:
        # A block a version records is not in the store: data damage, not an outage.
        log.error("MISSING BLOCK on %s %s: %s", request.method, loggable_path(request.path), exc)
        return error_response(500, "block_missing", "a stored block of this file is missing")
    except StorageError as exc:
        # The block store (S3) unreachable, throttling past all retries or failing: a clear 503
        # the client may retry, not "internal error". Nothing was committed by this request
        # (store I/O never runs inside a write transaction). The detail names the endpoint:
        # it goes to the log only.
        log.warning("block store failed on %s %s: %s", request.method,
                    loggable_path(request.path), exc)
        resp = error_response(503, "storage_error",
                              "the block store is unavailable; try again later")
        resp.headers["Retry-After"] = "5"
        return resp
    except Exception:
        # loggable_path: tokens in /s/ paths must not reach the logs.
        log.exception("unhandled error on %s %s", request.method, loggable_path(request.path))
        return error_response(500, "internal_error", "internal server error")


async def baseline_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer (an ``on_response_prepare`` hook, so errors and streams too): the
    browser must never guess a type (a JSON error or a file's bytes sniffed as HTML would run
    on the app's origin), and no page of this origin may be framed by another site (its own previews may be)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    if request.body_exists and not request.content.at_eof():
        # Answered before the body was read (a 507 on a PUT's Content-Length, a 401, a 413):
        # aiohttp then reads and discards the rest of the body for up to 10 s before closing
        # (so that the client gets this answer rather than a reset), and any request the client
        # sends on the same connection meanwhile is discarded with it. "Connection: close"
        # tells the client not to send one: a WebDAV client's next request after a 507 waited
        # those 10 s. (This hook runs after aiohttp chose the headers: hence both lines.)
        response.force_close()
        response.headers["Connection"] = "close"
