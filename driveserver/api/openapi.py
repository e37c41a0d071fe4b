"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the whole HTTP API.

The document is ``openapi.json`` beside this module, written by hand from docs/api.md and
shipped as package data (pyproject's ``package-data``), so what a client fetches is exactly the
file that tests/test_openapi.py checks against the router (every route served is described,
every described route is served, with the same methods) and that tests/test_fuzz.py hands to
schemathesis. It is read and checked once, when the app is built, and served from memory: the
route is public (no session) because a description of the API reveals nothing that
docs/api.md does not, and a client generator needs it before it has an account.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aiohttp import web

DOCUMENT_PATH = Path(__file__).resolve().parent / "openapi.json"
ROUTE = "/api/openapi.json"


def load_document(path: Path = DOCUMENT_PATH) -> dict[str, Any]:
    """The parsed document; a file that is not an OpenAPI 3.1 object stops the start-up (a
    broken package must not serve a broken description)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3.1"):
        raise ValueError(f"{path} is not an OpenAPI 3.1 document")
    return doc


def setup_openapi(app: web.Application) -> None:
    """Register ``GET /api/openapi.json`` (and its HEAD), serving the bytes read now."""
    body = json.dumps(load_document(), ensure_ascii=False, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    async def openapi_document(request: web.Request) -> web.Response:
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    app.router.add_get(ROUTE, openapi_document)
