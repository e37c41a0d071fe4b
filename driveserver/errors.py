"""The API's errors as exception classes, and nothing else: a leaf every layer may import.

Units of work, permission checks and routes raise :class:`ApiError` subclasses; nothing builds an
error response by hand. :mod:`driveserver.api.middleware` turns them (and aiohttp's own HTTP
errors, and anything unexpected) into the one body shape ``{"error": {"code", "message", ...}}``.
This module imports nothing from the server, so that ``meta/`` and ``paths`` can raise these
without pulling in aiohttp's request handling.
"""

from __future__ import annotations

from typing import Any


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The JSON body of every error answer: ``{"error": {"code", "message", **details}}``."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(details)
    return {"error": body}


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The body the client gets for this error (see :func:`error_body`)."""
        return error_body(self.code, self.message, **self.details)


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


class UnsupportedMediaType(ApiError):
    status, code = 415, "not_previewable"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, retry_after=round(retry_after, 1), **details)
        self.retry_after = retry_after


class Busy(ApiError):
    """The metadata database could not fit this write in beside others (PostgreSQL's
    serialization failures past every retry): nothing was committed; try again shortly."""

    status, code = 503, "busy"


class InsufficientStorage(ApiError):
    status, code = 507, "over_quota"
