"""Helpers every API handler uses: the authenticated principal and validated JSON input."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from .. import appkeys
from ..errors import ApiError, BadRequest, Unauthorized
from ..httputil import read_body
from ..meta.accounts import Principal
from ..meta.db import Tx
from ..meta.journal import Actor
from ..meta.savepoints import savepoint

T = TypeVar("T")
_MISSING = object()

def principal(request: web.Request) -> Principal:
    p = request.get(appkeys.PRINCIPAL)
    if p is None:
        raise Unauthorized("authentication required")
    return p


def actor(request: web.Request, device_id: str | None = None) -> Actor:
    p = principal(request)
    return Actor(p.user_id, device_id or p.device_id)


def news_to_every_device(request: web.Request) -> Actor:
    """The actor to journal a change under when even the asking device does not hold its
    result yet (a restore: the old content exists only on the server). The feed leaves a
    device's own changes out of its answers, as echoes of what it already has; journalled
    under no device, the change reaches the asking device's folder too."""
    return Actor(principal(request).user_id, None)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/413 that says what is wrong."""
    raw = await read_body(request, request.app[appkeys.CONFIG].max_json_bytes, "JSON body")
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("a JSON object body is required", code="invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # "[[[[..." a hundred thousand deep: a 400, not a 500 + traceback
        raise BadRequest("the JSON body is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    try:  # JSON allows lone UTF-16 surrogates ("\ud800"); nothing downstream can store them
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the JSON body contains an invalid Unicode string",
                         code="invalid_json") from None
    return body


def field(body: dict[str, Any], name: str, kind: type[T], *, default: Any = _MISSING) -> T:
    """``body[name]`` checked to be of ``kind``; a missing required field or wrong type is a 400.

    ``bool`` is not accepted where an ``int`` is expected (JSON ``true`` is not a size).
    """
    if name not in body or body[name] is None:
        if default is _MISSING:
            raise BadRequest(f"field {name!r} is required", code="missing_field", field=name)
        return default
    value = body[name]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise BadRequest(f"field {name!r} must be {_kind_name(kind)}", code="invalid_field",
                         field=name)
    return value


def int_field(body: dict, name: str, *, default: Any = _MISSING, minimum: int = 0) -> Any:
    """``field(body, name, int)`` that is at least ``minimum`` (a 400 otherwise)."""
    value = field(body, name, int, default=default)
    if value is not None and value < minimum:
        raise BadRequest(f"field {name!r} must be at least {minimum}", code="invalid_field",
                         field=name)
    return value


def base_url(request: web.Request) -> str:
    """Where clients reach this server: ``public_url`` if set, else the request's origin."""
    return request.app[appkeys.CONFIG].public_url.rstrip("/") or str(request.url.origin())


BATCH_MAX_FILES = 1000


def batch_items(body: dict[str, Any]) -> list[Any]:
    """The ``files`` list of a batch route's body: 1 to ``BATCH_MAX_FILES`` items."""
    files = field(body, "files", list)
    if not 1 <= len(files) <= BATCH_MAX_FILES:
        raise BadRequest(f"files must hold 1 to {BATCH_MAX_FILES} items", code="invalid_field",
                         field="files")
    return files


async def in_savepoint(tx: Tx, fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one file of a batch; its failure rolls back only its own writes and becomes its
    result, ``{"error": {code, message, status, ...}}``."""
    try:
        async with savepoint(tx, "one_file"):
            return await fn()
    except ApiError as exc:
        return {"error": {"code": exc.code, "message": exc.message, "status": exc.status,
                          **exc.details}}


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", list: "a list",
            dict: "an object"}.get(kind, kind.__name__)


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int, *,
              clamp: bool = True) -> int:
    """An integer query parameter, ``default`` when absent. Out of ``lo``…``hi`` it is clamped
    (listings), or with ``clamp=False`` refused like a non-integer (search)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        if clamp:
            raise BadRequest(f"query parameter {name!r} must be an integer",
                             code="invalid_query", field=name) from None
        value = lo - 1  # refused below, with the range in the message
    if clamp:
        return max(lo, min(hi, value))
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}", code="invalid_query",
                         field=name)
    return value


def encode_page(key: str) -> str:
    """A listing's page cursor: the last name key sent, opaque to clients."""
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_page(token: str) -> str:
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("invalid page cursor", code="invalid_query", field="cursor") from None
