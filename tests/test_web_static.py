"""The web app's files as the server sends them (issue 14): the page at ``/``, assets under
``/app/<version>/``, the security headers on both, and nothing else from the disk."""

from __future__ import annotations

import asyncio
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import aiohttp

from driveserver.api.web_routes import CSP, PAGES, WEB_DIR, load_web_app
from tests.helpers import RunningServer

ROOT = Path(__file__).resolve().parents[1]
REQUIRED_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:;"
                " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self';"
                " object-src 'none'")


async def get(server: RunningServer, path: str, **headers: str) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as s, s.get(server.url + path, headers=headers) as r:
        return r.status, r.headers.copy(), await r.read()


async def raw_get(server: RunningServer, target: str) -> tuple[int, bytes]:
    """``GET target`` sent byte for byte: HTTP clients resolve ``..`` before sending, an
    attacker's request need not."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def asset_root(index: bytes) -> str:
    found = re.search(rb'src="(/app/[0-9a-f]+)/js/main\.js"', index)
    assert found, index[:500]
    return found.group(1).decode()


def assert_page_headers(headers: Any) -> None:
    assert headers["Content-Security-Policy"] == REQUIRED_CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_the_page_is_served_at_the_root_with_a_strict_csp_and_no_cache(
        server: RunningServer) -> None:
    status, headers, body = await get(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert_page_headers(headers)
    assert headers["Cache-Control"] == "no-cache"
    assert CSP == REQUIRED_CSP
    # No inline script or style for the CSP to refuse: scripts and styles come by URL only.
    assert not re.search(rb"<script(?![^>]*\bsrc=)", body), "inline <script>"
    assert b"<style" not in body and b" style=" not in body
    assert not re.search(rb"\son[a-z]+=", body), "inline event handler"
    assert b"%APP%" not in body
    # Revalidated by its ETag: a second load of an unchanged page costs a 304.
    again, h304, empty = await get(server, "/", **{"If-None-Match": headers["ETag"]})
    assert again == 304 and empty == b"" and h304["Content-Security-Policy"] == REQUIRED_CSP


async def test_assets_are_cached_for_their_version_only(server: RunningServer) -> None:
    _, _, index = await get(server, "/")
    root = asset_root(index)
    status, headers, body = await get(server, f"{root}/js/main.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert_page_headers(headers)
    assert body == (WEB_DIR / "js" / "main.js").read_bytes()
    status, headers, _ = await get(server, f"{root}/css/app.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    status, headers, _ = await get(server, f"{root}/icons/folder.svg")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    # Under another version (a page from before an upgrade): today's file, never pinned.
    status, headers, body = await get(server, "/app/0123456789abcdef/js/main.js")
    assert status == 200 and headers["Cache-Control"] == "no-cache"


def test_the_version_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text('<script type="module" src="%APP%/js/a.js"></script>')
    (tmp_path / "link.html").write_text("link page")
    (tmp_path / "js" / "a.js").write_text("export const a = 1;")
    first = load_web_app(tmp_path)
    assert first.index.body.decode().startswith(f'<script type="module" src="/app/{first.version}/')
    (tmp_path / "js" / "a.js").write_text("export const a = 2;")
    assert load_web_app(tmp_path).version != first.version


def test_only_regular_files_of_known_types_under_web_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("page")
    (tmp_path / "link.html").write_text("link page")
    (tmp_path / ".secret.js").write_text("hidden")
    (tmp_path / "notes.py").write_text("not an asset type")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.js"
    outside.write_text("outside the folder")
    (tmp_path / "link.js").symlink_to(outside)
    assert load_web_app(tmp_path).assets == {}


async def test_nothing_outside_the_web_folder_is_served(server: RunningServer) -> None:
    _, _, index = await get(server, "/")
    root = asset_root(index)
    attempts = [
        f"{root}/../../api/web_routes.py",
        f"{root}/..%2F..%2Fapi%2Fweb_routes.py",
        f"{root}/%2e%2e/%2e%2e/app.py",
        f"{root}/js/..%2F..%2F..%2Fapp.py",
        f"{root}//etc/passwd",
        f"{root}/%2Fetc%2Fpasswd",
        f"{root}/js/../../../pyproject.toml",
        f"{root}/index.html",  # the page is at / only (its asset URLs filled in)
        f"{root}/js/nothing.js",
        f"{root}/js/",
        "/app/../driveserver/app.py",
        "/index.html",
        "/driveserver/web/js/main.js",
    ]
    for path in attempts:
        status, body = await raw_get(server, path)
        assert status == 404, (path, status, body[:200])
        assert b"import " not in body and b"[project]" not in body and b"root:" not in body


def test_every_file_of_the_app_is_in_the_package_data() -> None:
    """``pip install .`` ships what pyproject's package-data names: every file the app has."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["driveserver"]
    base = ROOT / "driveserver"
    files = [p.relative_to(base).as_posix() for p in WEB_DIR.rglob("*") if p.is_file()]
    assert "web/index.html" in files and len(files) > 10
    unshipped = [f for f in files if not any(fnmatch(f, p) for p in patterns)]
    assert unshipped == []
    served = set(load_web_app().assets) | set(PAGES) | set(load_web_app().root_files)
    assert {f.removeprefix("web/") for f in files} == served


def test_the_pages_requests_are_checked_against_the_documented_routes() -> None:
    """Every browser test fails on a request outside docs/api.md (tests/browser.py); the check
    reads the headings right: documented routes pass, others and wrong methods do not."""
    from tests.browser import is_documented
    for method, path in [("GET", "/api/files"), ("POST", "/api/files/abc/complete"),
                         ("PUT", "/blocks/" + "ab" * 32), ("GET", "/s/tok/zip"),
                         ("GET", "/app/v1/js/main.js"), ("HEAD", "/api/files/x/content")]:
        assert is_documented(method, path), (method, path)
    for method, path in [("GET", "/api/private"), ("DELETE", "/api/quota"),
                         ("GET", "/api/files/a/b/complete"), ("POST", "/api/files")]:
        assert not is_documented(method, path), (method, path)
