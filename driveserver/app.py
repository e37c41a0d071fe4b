"""``build_app(config)``: the one place that wires routes, services and their lifecycles.

Nothing here is global: tests build as many apps as they like, each on its own data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import appkeys
from .api import (
    app_password_routes,
    auth_routes,
    batch_download_routes,
    complete_routes,
    download_routes,
    files_routes,
    links_routes,
    search_routes,
    share_routes,
    upload_routes,
    versions_routes,
    zip_routes,
)
from .api.middleware import baseline_headers, error_middleware
from .api.openapi import setup_openapi
from .api.preview_routes import setup_previews
from .api.web_routes import setup_web
from .auth import LoginThrottle, TokenSigner
from .blocks import patch_routes
from .blocks import routes as block_routes
from .blocks.grants import Grants
from .blocks.keys import KeyRing
from .blocks.pipeline import BlockPipeline
from .config import Config
from .connections import (
    MAX_HEADER_LINE,
    MAX_REQUEST_LINE,
    ConnectionGuard,
    ConnectionLimits,
    body_guard_middleware,
    guarded_site,
    raise_open_file_limit,
)
from .dav import dav_middleware
from .dav import setup as setup_dav
from .errors import Unauthorized
from .forwarded import TRUSTED, forwarded_middleware, parse_networks
from .fsutil import ensure_private_dir, load_or_create_secret
from .gc import collect_garbage, finish_interrupted, move_cold_blocks
from .meta import stats
from .meta.backend import open_database
from .meta.journal import Journal, prune_journal
from .meta.notifications import prune_notifications
from .meta.tree import Tree
from .meta.versions import Versions
from .observability import AccessLogger, Metrics, quiet_parser_errors
from .storage import BlockStore, LocalBlockStore, S3BlockStore, TieredBlockStore
from .sync.routes import setup_sync

log = logging.getLogger("driveserver")


async def healthz(request: web.Request) -> web.Response:
    await stats.ping(request.app[appkeys.DB])
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics, for the holder of ``metrics.token`` only (the route exists only when
    one is set): they tell an outsider how busy the server is, who is online (long polls) and
    how much is stored."""
    expected = request.app[appkeys.CONFIG].metrics_token.encode()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("GET /metrics needs Authorization: Bearer <metrics.token>")
    m = request.app[appkeys.METRICS]
    m.journal_entries.set(await stats.journal_entries(request.app[appkeys.DB]))
    return web.Response(body=generate_latest(m.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def prepare_data_dir(config: Config) -> None:
    """Create the data directory and the secrets folder (0700) on first start."""
    ensure_private_dir(config.data_dir)  # it holds password hashes and keys: owner only
    ensure_private_dir(config.secrets_dir)


def make_store(config: Config) -> TieredBlockStore:
    """The configured block store: a hot tier and a cold tier behind one interface."""
    hot: BlockStore
    cold: BlockStore
    if config.backend == "s3":
        def s3(bucket: str, prefix: str, storage_class: str | None = None) -> S3BlockStore:
            """One tier on the configured endpoint with the configured credentials."""
            return S3BlockStore(endpoint_url=config.s3_endpoint_url, bucket=bucket,
                                region=config.s3_region,
                                access_key_id=config.s3_access_key_id,
                                secret_access_key=config.s3_secret_access_key,
                                prefix=prefix, storage_class=storage_class,
                                max_attempts=config.s3_max_attempts,
                                read_timeout=config.s3_read_timeout_seconds)

        hot = s3(config.s3_bucket, config.s3_prefix)
        cold = s3(config.s3_cold_bucket or config.s3_bucket, config.s3_cold_prefix,
                  config.s3_cold_storage_class or None)
    else:
        hot = LocalBlockStore(config.blocks_dir)
        cold = LocalBlockStore(config.blocks_dir.with_name(config.blocks_dir.name + "-cold"))
    return TieredBlockStore(hot, cold)


async def open_storage(config: Config) -> tuple[TieredBlockStore, KeyRing]:
    """Load (or create) the master key and start the block store."""
    prepare_data_dir(config)
    keyring = await asyncio.to_thread(KeyRing.load_or_create, config.master_key_file)
    store = make_store(config)
    await store.start()
    return store, keyring


def build_app(config: Config) -> web.Application:
    prepare_data_dir(config)
    app = web.Application(middlewares=[forwarded_middleware, error_middleware,
                                       auth_routes.auth_middleware, dav_middleware,
                                       body_guard_middleware],
                          client_max_size=config.max_json_bytes)
    app[appkeys.CONFIG] = config
    if config.password_hash_cost < 14:
        log.warning("accounts.password_hash_cost = %d: new passwords are hashed with scrypt"
                    " N = 2**%d, cheaper to guess from a stolen database than the default 2**14"
                    " (meant for tests)", config.password_hash_cost, config.password_hash_cost)
    app[TRUSTED] = parse_networks(config.trusted_proxies)
    app[appkeys.DB] = db = open_database(config.database_url, config.database_path)
    app[appkeys.SIGNER] = signer = TokenSigner(
        load_or_create_secret(config.secrets_dir / "session.key"))
    app[appkeys.GRANTS] = Grants(signer, config.upload_token_seconds,
                                 config.download_token_seconds)
    app[appkeys.THROTTLE] = LoginThrottle(db, cost=config.password_hash_cost)  # in the database: shared by every process
    app[appkeys.METRICS] = Metrics()
    app[appkeys.JOURNAL] = journal = Journal()
    app[appkeys.TREE] = Tree(journal)
    app[appkeys.VERSIONS] = Versions(journal, config.keep_versions, config.keep_days)

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        await db.open()
        yield
        await db.close()

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        store, keyring = await open_storage(config)
        app[appkeys.STORE], app[appkeys.KEYRING] = store, keyring
        app[appkeys.PIPELINE] = pipeline = BlockPipeline(keyring, store)
        yield
        await pipeline.aclose()
        await store.close()

    async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
        task = None
        if config.gc_interval_seconds > 0:
            task = asyncio.create_task(_maintenance_loop(app))
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.extend([database_ctx, storage_ctx, maintenance_ctx])
    app.on_response_prepare.append(baseline_headers)
    app.router.add_get("/healthz", healthz)
    if config.metrics_token:
        app.router.add_get("/metrics", metrics)
    app.add_routes(auth_routes.routes)
    app.add_routes(app_password_routes.routes)
    app.add_routes(upload_routes.routes)
    app.add_routes(complete_routes.routes)
    app.add_routes(download_routes.routes)
    app.add_routes(versions_routes.routes)
    app.add_routes(batch_download_routes.routes)
    app.add_routes(files_routes.routes)
    setup_previews(app)
    app.add_routes(links_routes.routes)
    app.add_routes(share_routes.routes)
    app.add_routes(search_routes.routes)
    zip_routes.setup(app)
    setup_sync(app)
    setup_dav(app)  # WebDAV at /dav/ (driveserver/dav/)
    patch_routes.setup(app)
    app.add_routes(block_routes.routes)
    setup_web(app)  # the browser app at / (driveserver/web/)
    setup_openapi(app)  # GET /api/openapi.json (driveserver/api/openapi.json)
    return app


async def _maintenance_loop(app: web.Application) -> None:
    """Garbage collection and cold tiering, every ``gc_interval_seconds``."""
    config = app[appkeys.CONFIG]
    try:  # a GC killed between its two transactions left blocks complete refuses: finish it
        await finish_interrupted(app[appkeys.DB], app[appkeys.STORE])
    except Exception:
        log.exception("finishing an interrupted GC failed; the next run retries")
    while True:
        await asyncio.sleep(config.gc_interval_seconds)
        try:
            await collect_garbage(app[appkeys.DB], app[appkeys.STORE],
                                  config.gc_grace_days * 86400)
            await move_cold_blocks(app[appkeys.DB], app[appkeys.STORE],
                                   config.cold_after_days * 86400)
            await prune_journal(app[appkeys.DB], config.journal_retention_days)
            await prune_notifications(app[appkeys.DB], config.journal_retention_days)
        except Exception:
            log.exception("maintenance run failed; will retry next interval")


async def run_gc_once(config: Config) -> str:
    """``drive-server gc``: one collection and tiering run on the configured storage."""
    db = open_database(config.database_url, config.database_path)
    await db.open()
    store, _ = await open_storage(config)
    try:
        report = await collect_garbage(db, store, config.gc_grace_days * 86400)
        moved = await move_cold_blocks(db, store, config.cold_after_days * 86400)
        return f"{report}; {moved} block(s) moved to the cold tier"
    finally:
        await store.close()
        await db.close()


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner and the bound port (useful with port 0).

    Every connection is guarded (``connections``): head and body deadlines, connection caps,
    JSON answers to what the HTTP parser refuses."""
    quiet_parser_errors()
    config = app[appkeys.CONFIG]
    handler_args = dict(access_log_class=AccessLogger,
                        access_log=logging.getLogger("driveserver.access"),
                        max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_LINE)
    runner = web.AppRunner(app, handler_cancellation=True, **handler_args)  # type: ignore[arg-type]
    await runner.setup()
    guard = ConnectionGuard(ConnectionLimits.from_config(config), app[appkeys.METRICS])
    site = guarded_site(runner, host, port, guard, **handler_args)
    await site.start()
    return runner, site.bound_port


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM."""
    app = build_app(config)
    files = raise_open_file_limit()  # before start_site: the connection cap follows from it
    runner, port = await start_site(app, config.host, config.port)
    # Everything allocated at start-up lives as long as the process: keep the cyclic GC from
    # rescanning it, and let it run less often, so waking thousands of long polls at once is not
    # stalled by collections (measured: 5,000 polls answered ~30% sooner).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    log.info("drive-server listening on http://%s:%d (data in %s; open-file limit %s)",
             config.host, port, config.data_dir, files or "none")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("drive-server shutting down")
        await runner.cleanup()
