"""Typed keys for what ``build_app`` puts on the application (no module-level singletons)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .auth import LoginThrottle, TokenSigner
    from .blocks.grants import Grants
    from .blocks.keys import KeyRing
    from .blocks.pipeline import BlockPipeline
    from .config import Config
    from .meta.accounts import Principal
    from .meta.db import Database
    from .meta.journal import Journal
    from .meta.tree import Tree
    from .meta.versions import Versions
    from .observability import Metrics
    from .storage.tiered import TieredBlockStore
    from .sync.hub import Hub

CONFIG: web.AppKey[Config] = web.AppKey("config")
DB: web.AppKey[Database] = web.AppKey("db")
SIGNER: web.AppKey[TokenSigner] = web.AppKey("signer")
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("throttle")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring")
STORE: web.AppKey[TieredBlockStore] = web.AppKey("store")  # hot and cold tiers, for GC
HUB: web.AppKey[Hub] = web.AppKey("hub")
TREE: web.AppKey[Tree] = web.AppKey("tree")
VERSIONS: web.AppKey[Versions] = web.AppKey("versions")
GRANTS: web.AppKey[Grants] = web.AppKey("grants")
PIPELINE: web.AppKey[BlockPipeline] = web.AppKey("pipeline")
JOURNAL: web.AppKey[Journal] = web.AppKey("journal")

# Per-request values set by the auth middleware.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
USER_ID: web.RequestKey[str] = web.RequestKey("user_id")
# The request was authenticated by the browser's session cookie (api/browser_session.py).
BY_COOKIE: web.RequestKey[bool] = web.RequestKey("by_cookie")
BYTES_IN: web.RequestKey[int] = web.RequestKey("bytes_in")
# A lower body limit for this request (set by connections.body_guard_middleware for requests no
# session or grant vouches for); httputil.read_body applies it.
BODY_LIMIT: web.RequestKey[int] = web.RequestKey("body_limit")
