"""The error WebDAV handlers raise: an HTTP status, optionally a ``DAV:`` precondition, and a
message; :mod:`driveserver.dav.middleware` renders it (and every API error raised below a
``/dav/`` route) as a ``DAV:error`` XML body."""

from __future__ import annotations

from ..errors import ApiError


class DavError(ApiError):
    """An answer with any status (412, 423, 507, 207-worthy failures...), which the API's
    error classes do not all have; ``condition`` names the precondition element."""

    def __init__(self, status: int, message: str, condition: str | None = None) -> None:
        super().__init__(message, code=f"dav_{status}")
        self.status = status
        self.condition = condition
