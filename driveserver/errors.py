"""HTTP errors as exceptions, and the one middleware that renders every error as JSON.

Handlers raise :class:`ApiError` subclasses; nothing else builds an error response. Anything
unexpected becomes a 500 with a generic message (details go to the log, never to the client), so
the body shape ``{"error": {"code", "message"}}`` holds for every failure, including aiohttp's own
404/405 and body-size errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("driveserver.errors")


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Gone(ApiError):
    status, code = 410, "gone"


class PayloadTooLarge(ApiError):
    status, code = 413, "too_large"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, retry_after=round(retry_after, 1), **details)
        self.retry_after = retry_after


class InsufficientStorage(ApiError):
    status, code = 507, "over_quota"


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(details)
    headers = {}
    if "retry_after" in details:
        headers["Retry-After"] = str(max(1, int(details["retry_after"] + 0.999)))
    return web.Response(status=status, text=json.dumps({"error": body}),
                        content_type="application/json", headers=headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
               416: "range_not_satisfiable"}


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
        if "Content-Range" in exc.headers:  # a 416 says how long the file is
            resp.headers["Content-Range"] = exc.headers["Content-Range"]
        return resp
    except ConnectionResetError:
        raise
    except Exception:
        from .observability import loggable_path  # tokens in /s/ paths must not reach logs

        log.exception("unhandled error on %s %s", request.method, loggable_path(request.path))
        return error_response(500, "internal_error", "internal server error")
