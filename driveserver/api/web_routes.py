"""The web app's files: ``/`` is the page, ``/app/{version}/...`` its modules, styles and icons.

The app is plain ES modules and CSS under ``driveserver/web/`` (no build step), and it talks to
the server only through the public JSON API, as any other client would. Three decisions here:

* **Only what is in the package is served.** The files are read once, when the app is built,
  into a table keyed by their path below ``web/`` (regular files with a known type, no dot
  files, nothing reached through a link). A request names a key of that table or gets a 404:
  no request path is ever joined onto a directory, so no ``..`` or encoded slash reaches the
  disk.
* **Caching without stale pages.** ``version`` is a hash of every file, so an asset URL names
  exactly one content and is cached for a year (``immutable``); the page, which names the
  version, is ``no-cache`` (revalidated by its ETag). An asset asked for under another version
  (a page loaded before an upgrade) is the current file, never cached.
* **The installable app** (a PWA): ``/manifest.webmanifest`` and the service worker at
  ``/sw.js`` are served at the root, not under ``/app/<version>/``, because a worker's scope is
  its own folder and the app is all of ``/``; both are ``no-cache`` and get the version (and the
  worker the list of assets to keep) written in, so a release is a new worker.
* **A strict Content-Security-Policy** on every response here: scripts, styles and connections
  from this origin only, no inline script or style, no framing, no plugins, no ``<base>``. A
  script smuggled into the page (in a file name, say) cannot run, and the page cannot be
  framed for clickjacking.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..errors import NotFound

routes = web.RouteTableDef()

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSET_PREFIX = "/app"
# Where index.html names its assets; replaced by ``/app/<version>`` when it is loaded.
PLACEHOLDER = b"%APP%"
# The pages (each names its assets through the placeholder): the app, and a public link's page.
PAGES = ("index.html", "link.html")
# Served at /<name> (see the module's docstring); the worker's asset list replaces ASSETS_SLOT.
ROOT_FILES = ("sw.js", "manifest.webmanifest")
ASSETS_SLOT = b"%ASSETS%"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}
# Bounds on what start-up reads: the app is a few dozen small files.
MAX_ASSETS = 500
MAX_ASSET_BYTES = 2 * 1024 * 1024

CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'",
    "img-src 'self' blob: data:", "connect-src 'self'", "frame-ancestors 'none'",
    "base-uri 'none'", "form-action 'self'", "object-src 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class WebApp:
    version: str
    index: Asset
    link_page: Asset  # /s/{token} opened by a browser (link.html)
    assets: dict[str, Asset]  # path below web/, with "/" separators -> file
    root_files: dict[str, Asset]  # ROOT_FILES, served at /<name>


WEB_APP: web.AppKey[WebApp] = web.AppKey("web_app")


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def load_web_app(root: Path = WEB_DIR) -> WebApp:
    """Read the app's files into memory (a few hundred KiB), refusing anything unexpected."""
    base = root.resolve()
    files: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        if path.suffix not in CONTENT_TYPES or not path.resolve().is_relative_to(base):
            continue
        if len(files) >= MAX_ASSETS or path.stat().st_size > MAX_ASSET_BYTES:
            raise RuntimeError(f"the web app under {base} holds an unexpected file: {rel}")
        files[rel.as_posix()] = path.read_bytes()
    for page in PAGES:
        if page not in files:
            raise RuntimeError(f"no {page} under {base}: the package is incomplete")
    digest = hashlib.sha256()
    for name, body in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    version = digest.hexdigest()[:16]
    prefix = f"{ASSET_PREFIX}/{version}".encode()
    index, link_page = (_asset(files.pop(page).replace(PLACEHOLDER, prefix),
                               CONTENT_TYPES[".html"]) for page in PAGES)
    # Without them (a test's minimal app) the app still works, only not offline.
    roots = {name: files.pop(name).replace(PLACEHOLDER, prefix)
             for name in ROOT_FILES if name in files}
    # The worker keeps every asset (a few hundred KiB); our own file names need no escaping.
    names = json.dumps(sorted(files)).encode()
    if b"'" in names or b"\\" in names:
        raise RuntimeError(f"a web app file name under {base} needs quoting")
    if "sw.js" in roots:
        roots["sw.js"] = roots["sw.js"].replace(ASSETS_SLOT, names)
    return WebApp(version, index, link_page,
                  {name: _asset(body, CONTENT_TYPES[Path(name).suffix])
                   for name, body in files.items()},
                  {name: _asset(body, CONTENT_TYPES[Path(name).suffix])
                   for name, body in roots.items()})


def setup_web(app: web.Application) -> None:
    app[WEB_APP] = load_web_app()
    app.add_routes(routes)


def _serve(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _serve(request, request.app[WEB_APP].index, "no-cache")


def _root_file(request: web.Request, name: str) -> web.Response:
    found = request.app[WEB_APP].root_files.get(name)
    if found is None:
        raise NotFound("no such file in the web app")
    return _serve(request, found, "no-cache")


@routes.get("/sw.js")
async def service_worker(request: web.Request) -> web.Response:
    resp = _root_file(request, "sw.js")
    resp.headers["Service-Worker-Allowed"] = "/"  # its scope is the whole app
    return resp


@routes.get("/manifest.webmanifest")
async def manifest(request: web.Request) -> web.Response:
    return _root_file(request, "manifest.webmanifest")


def wants_page(request: web.Request) -> bool:
    """A browser navigating (``Accept: text/html,...``), not a client asking for JSON."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


def link_page(request: web.Request, headers: dict[str, str]) -> web.Response:
    """The public link page: the same for every token, valid or not (its script asks the JSON
    route, so the page itself tells nobody whether a link exists)."""
    resp = _serve(request, request.app[WEB_APP].link_page, "no-cache")
    resp.headers.update(headers)
    return resp


@routes.get(ASSET_PREFIX + "/{version}/{path:.+}")
async def asset(request: web.Request) -> web.Response:
    webapp = request.app[WEB_APP]
    found = webapp.assets.get(request.match_info["path"])
    if found is None:
        raise NotFound("no such file in the web app")
    current = request.match_info["version"] == webapp.version
    return _serve(request, found, IMMUTABLE if current else "no-cache")
