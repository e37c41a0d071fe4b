"""``GET /api/search``: find items by name across the user's drive and what is shared with them.

The index and the rules for what a user's view holds are :mod:`driveserver.meta.search`'s; this
route bounds the input, runs the query on the reading connection (a worker thread: a search of
a large drive never holds the event loop), asks :func:`driveserver.permissions.role_for` about
every row before it is shown, and shapes entries like the listing's with each item's path in
the asker's view.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import BadRequest
from ..meta import search
from ..permissions import role_for
from .common import principal, query_int
from .files_routes import entry_json

log = logging.getLogger("driveserver.search")
routes = web.RouteTableDef()

MAX_QUERY_CHARS = 200
LIMIT_DEFAULT, LIMIT_MAX = 50, 200


def _needle(request: web.Request) -> str:
    raw = unicodedata.normalize("NFC", request.query.get("q", "")).strip()
    if not 1 <= len(raw) <= MAX_QUERY_CHARS:
        raise BadRequest(f"q must be 1 to {MAX_QUERY_CHARS} characters (spaces around it are"
                         " ignored)", code="invalid_query", field="q")
    if any(unicodedata.category(c) == "Cc" for c in raw):
        raise BadRequest("q may not contain control characters (no name holds them)",
                         code="invalid_query", field="q")
    return search.fold(raw)


def _cursor(request: web.Request) -> int:
    """The page to continue from: the opaque ``next_cursor`` of the previous page."""
    raw = request.query.get("cursor")
    if raw is None:
        return search.FIRST
    return query_int(request, "cursor", search.FIRST, 1, search.FIRST, clamp=False)


@routes.get("/api/search")
async def search_by_name(request: web.Request) -> web.Response:
    user_id = principal(request).user_id
    needle = _needle(request)
    limit = query_int(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX, clamp=False)
    before = _cursor(request)
    db = request.app[appkeys.DB]
    async with db.snapshot() as snap:
        view = await search.view_of(snap, user_id)
    rows = await search.matching(db, view, needle, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    paths = await search.view_paths(db, view, [r["id"] for r in rows])
    entries: list[dict[str, Any]] = []
    async with db.snapshot() as snap:
        for row in rows:
            role = await role_for(snap, user_id, row)
            path = paths.get(row["id"])
            if role is None or path is None:  # moved out of reach meanwhile, or a bug: not shown
                log.warning("search: %s matched for %s but is not readable; left out",
                            row["id"], user_id)
                continue
            entry = {**entry_json(row), "path": path, "permission": role.value}
            if row["id"] in view.shared_names:  # shown under the name the user sees it by
                entry["name"] = view.shared_names[row["id"]]
            entries.append(entry)
    body: dict[str, Any] = {"query": request.query["q"], "entries": entries, "has_more": more}
    if more:
        body["next_cursor"] = str(search.seq_of(rows[-1]))
    return web.json_response(body)
