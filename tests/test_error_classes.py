"""driveserver/errors.py is a leaf of exception classes; api/middleware.py renders them.

Issue 13, item 5: the error classes used to share a module with the HTTP middleware, which put
aiohttp and the observability module on the import path of everything that raises an error
(meta/, paths) and closed an import cycle through them.
"""

from __future__ import annotations

from typing import Any

from driveserver.errors import Forbidden, NotFound, TooManyRequests
from tests.helpers import ApiClient, RunningServer
from tests.test_driveproto import _fresh_interpreter


def test_errors_is_a_leaf_that_loads_neither_aiohttp_nor_other_server_modules() -> None:
    loaded = _fresh_interpreter(
        "import json, sys\n"
        "import driveserver.errors\n"
        "print(json.dumps(sorted(m for m in sys.modules\n"
        "                        if m.split('.')[0] in ('aiohttp', 'driveserver'))))\n")
    assert loaded == ["driveserver", "driveserver.errors"]


def test_to_json_is_the_body_every_error_answer_has() -> None:
    assert NotFound("no such file").to_json() == {
        "error": {"code": "not_found", "message": "no such file"}}
    assert Forbidden("read-only", code="read_only", path="/a").to_json() == {
        "error": {"code": "read_only", "message": "read-only", "path": "/a"}}
    assert TooManyRequests("slow down", retry_after=2.345).to_json() == {
        "error": {"code": "too_many_requests", "message": "slow down", "retry_after": 2.3}}


async def test_the_middleware_keeps_an_http_exception_s_allow_header(
        server: RunningServer, alice: ApiClient) -> None:
    """A 405 from aiohttp's router says which methods the route has (RFC 9110 15.5.6) and keeps
    the JSON shape."""
    async with alice.session.request("PATCH", f"{server.url}/healthz") as r:
        body: Any = await r.json()
        assert r.status == 405
        assert body["error"]["code"] == "method_not_allowed"
        assert "GET" in r.headers["Allow"]


async def test_every_answer_says_nosniff_and_no_framing_by_other_sites(server: RunningServer,
                                                          alice: ApiClient) -> None:
    """JSON, errors and file bytes alike: nothing the server sends may be sniffed as a page."""
    async with alice.session.get(f"{server.url}/healthz") as ok, \
            alice.session.get(f"{server.url}/api/files", headers=alice.headers) as listing, \
            alice.session.get(f"{server.url}/no/such/route") as missing:
        for r in (ok, listing, missing):
            assert r.headers["X-Content-Type-Options"] == "nosniff", r.url
            assert r.headers["X-Frame-Options"] == "SAMEORIGIN", r.url
