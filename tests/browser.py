"""Playwright fixtures for the web app's tests: Debian's Chromium, one per test session.

The recipe is ../shared/TESTING.md's: the async API (pytest-playwright's sync fixtures break the
asyncio tests that run after them), ``executable_path`` to the system's Chromium (nothing is
downloaded), and flags that keep it off the network. Every browser test runs on the session's
event loop, where the browser lives, and so does its server (:func:`web_server`): the server
must be served by the loop the test awaits on.

Each test gets a fresh context (its own cookies) whose pages are watched: an uncaught exception
or a console error fails the test. Chromium logs every 4xx answer to a ``fetch`` as a console
error ("Failed to load resource ..."), so a test names the API answers it expects to fail
(:meth:`ConsoleWatch.allow`); signed out, the page's ``GET /api/auth/session`` 401 is expected.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.helpers import PASSWORD, ApiClient, RunningServer, start_server
from tests.needs import need

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Request,
        async_playwright,
    )
except ImportError:  # reported by the browser fixture (a failure under CI), not at collection
    async_playwright = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
TIMEOUT_MS = 10_000
_FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


def chromium_path() -> str | None:
    """``DRIVE_TEST_CHROMIUM`` when set (a path that is not an executable counts as missing),
    else Debian's ``chromium``."""
    override = os.environ.get("DRIVE_TEST_CHROMIUM")
    path = override if override is not None else shutil.which("chromium") or "/usr/bin/chromium"
    return path if path and os.access(path, os.X_OK) else None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    need(async_playwright is not None,
         "the Python package playwright is missing: pip install -e '.[test]'")
    path = chromium_path()
    need(path is not None, "Chromium is missing: apt-get install -y chromium (Debian's; never"
                           " `playwright install`, which downloads a browser)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def web_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server on the session's loop (the browser's), with alice and bob registered."""
    srv = await start_server(tmp_path / "data")
    await srv.register("alice@example.com")
    await srv.register("bob@example.com")
    try:
        yield srv
    finally:
        await srv.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def alice_api(web_server: RunningServer) -> ApiClient:
    """alice over the API with a bearer token: another client than the page."""
    return await web_server.login("alice@example.com", device="alice-laptop")


@functools.cache
def documented_routes() -> list[tuple[str, re.Pattern[str]]]:
    """Every route docs/api.md documents (its ``### `METHOD /path`` headings), as a method and
    a pattern of the path: ``{name}`` is one path segment, ``{path}`` any rest."""
    routes = []
    text = (ROOT / "docs" / "api.md").read_text()
    for method, path in re.findall(r"^#{3,4} `([A-Z]+) (/[^` ?]*)", text, re.M):
        pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: ".+" if m.group(1) == "path" else "[^/]+",
                         re.escape(path))
        routes.append((method, re.compile(pattern + "$")))
    return routes


def is_documented(method: str, path: str) -> bool:
    method = "GET" if method == "HEAD" else method
    return any(m == method and p.match(path) for m, p in documented_routes())


@dataclass
class ConsoleWatch:
    """What went wrong in a context's pages: uncaught exceptions, console errors, and requests
    to the server outside the public API of docs/api.md (the page may use no private route)."""

    allowed: set[tuple[int, str]] = field(default_factory=lambda: {(401, "/api/auth/session")})
    problems: list[str] = field(default_factory=list)
    origin: str = ""  # the server's; requests elsewhere (about:blank, data:) are not checked

    def allow(self, status: int, path: str) -> None:
        """An API answer with ``status`` for ``path`` that the test expects."""
        self.allowed.add((status, path))

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("request", self._request)

    def _request(self, request: Request) -> None:
        url = urllib.parse.urlsplit(request.url)
        if not self.origin or f"{url.scheme}://{url.netloc}" != self.origin:
            return
        # The browser's own favicon probe is no request of the page's.
        if url.path != "/favicon.ico" and not is_documented(request.method, url.path):
            self.problems.append(f"undocumented route: {request.method} {url.path}")

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        failed = _FAILED_LOAD.match(msg.text)
        url = msg.location.get("url", "")
        path = re.sub(r"^https?://[^/]+", "", url).split("?", 1)[0]
        if failed and (int(failed.group(1)), path) in self.allowed:
            return
        self.problems.append(f"console error: {msg.text} ({url})")


@dataclass
class Web:
    """A test's browser context on its server, with the watch over its pages."""

    server: RunningServer
    context: BrowserContext
    watch: ConsoleWatch

    async def page(self) -> Page:
        page = await self.context.new_page()
        self.watch.attach(page)
        page.set_default_timeout(TIMEOUT_MS)
        return page

    async def signed_in(self, email: str = "alice@example.com") -> Page:
        """A page showing the drive, signed in through the API's cookie login (the form
        has its own test): the context's cookie jar holds the session."""
        r = await self.context.request.post(f"{self.server.url}/api/auth/login", data={
            "email": email, "password": PASSWORD, "cookie": True})
        assert r.ok, await r.text()
        page = await self.page()
        await page.goto(self.server.url + "/")
        await page.get_by_role("grid").wait_for()
        await page.get_by_role("status").filter(has_text=re.compile(r"items?$")).wait_for()
        return page


async def new_web(browser: Browser, server: RunningServer, **context: Any) -> Web:
    """A context on ``server``. Service workers are blocked unless ``service_workers="allow"``
    (the offline app's own tests): a page the worker controls sends its requests through it,
    and ``page.route`` does not see those."""
    ctx = await browser.new_context(viewport=context.pop("viewport", DESKTOP),
                                    service_workers=context.pop("service_workers", "block"),
                                    **context)
    ctx.set_default_timeout(TIMEOUT_MS)
    return Web(server, ctx, ConsoleWatch(origin=server.url.rstrip("/")))


@pytest_asyncio.fixture(loop_scope="session")
async def web(browser: Browser, web_server: RunningServer) -> AsyncIterator[Web]:
    """A fresh context per test; closed before its server stops, and then it must have seen
    no page error and no unexpected console error."""
    w = await new_web(browser, web_server)
    try:
        yield w
    finally:
        await w.context.close()
    assert not w.watch.problems, "\n".join(w.watch.problems)


async def screenshot(page: Page, name: str) -> Path:
    """Write ``artifacts/screenshots/<name>.png`` (gitignored) for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    return path
