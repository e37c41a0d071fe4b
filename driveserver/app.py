"""``build_app(config)``: the one place that wires routes, services and their lifecycles.

Nothing here is global: tests build as many apps as they like, each on its own data directory.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import appkeys
from .api import auth_routes, files_routes
from .auth import LoginThrottle, TokenSigner
from .config import Config
from .errors import error_middleware
from .fsutil import ensure_private_dir, load_or_create_secret
from .meta.db import Database
from .meta.tree import Tree
from .observability import AccessLogger, Metrics
from .sync.journal import Journal

log = logging.getLogger("driveserver")


async def healthz(request: web.Request) -> web.Response:
    await request.app[appkeys.DB].fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[appkeys.METRICS]
    m.journal_entries.set(await request.app[appkeys.DB].fetchval("SELECT COUNT(*) FROM journal"))
    return web.Response(body=generate_latest(m.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def prepare_data_dir(config: Config) -> None:
    """Create the data directory and the secrets folder (0700) on first start."""
    ensure_private_dir(config.data_dir)  # it holds password hashes and keys: owner only
    ensure_private_dir(config.secrets_dir)


def build_app(config: Config) -> web.Application:
    prepare_data_dir(config)
    app = web.Application(middlewares=[error_middleware, auth_routes.auth_middleware],
                          client_max_size=config.max_json_bytes)
    app[appkeys.CONFIG] = config
    app[appkeys.DB] = db = Database(config.database_path)
    app[appkeys.SIGNER] = TokenSigner(load_or_create_secret(config.secrets_dir / "session.key"))
    app[appkeys.THROTTLE] = LoginThrottle()
    app[appkeys.METRICS] = Metrics()
    app[appkeys.JOURNAL] = journal = Journal()
    app[appkeys.TREE] = Tree(journal)

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        await db.open()
        yield
        await db.close()

    app.cleanup_ctx.append(database_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(auth_routes.routes)
    app.add_routes(files_routes.routes)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner and the bound port (useful with port 0)."""
    runner = web.AppRunner(app, access_log_class=AccessLogger,
                           access_log=logging.getLogger("driveserver.access"),
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # the only way aiohttp exposes the bound socket for port 0
    bound = server.sockets[0].getsockname()[1] if server is not None else port  # type: ignore[union-attr]
    return runner, bound


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM."""
    app = build_app(config)
    runner, port = await start_site(app, config.host, config.port)
    log.info("drive-server listening on http://%s:%d (data in %s)", config.host, port,
             config.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("drive-server shutting down")
        await runner.cleanup()
