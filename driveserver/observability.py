"""Access log, Prometheus metrics, and the filters that keep logs free of secrets and floods.

The access log is one JSON object per request. It logs the path without its query string,
because block URLs carry signed tokens in the query, with a public link's token (the secret
in ``/s/{token}/...``) replaced by ``<redacted>``: tokens must never reach a log; and with the
block hash of ``/blocks/{hash}`` replaced too: a content hash in a log confirms that somebody
holds that exact file. Metrics are counted in the same place, after the response is complete,
so streamed bodies are counted by what was really sent; their labels are route templates
(``/blocks/{hash}``), never the values in a URL.

A client can make the server log as fast as it can send (a malformed request is one WARNING;
past the open-file limit asyncio logs an ERROR with a traceback for every accept it retries,
about 1,900 lines a second): :class:`RateLimitFilter` lets one record of a kind through per
interval and says how many it held back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import appkeys
from .forwarded import client_of


class Metrics:
    """One registry per app, so several apps in one test process never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("drive_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("drive_http_request_seconds", "HTTP request duration",
                                 ["route"], registry=self.registry)
        self.bytes = Counter("drive_http_bytes", "HTTP body bytes by direction and route",
                             ["direction", "route"], registry=self.registry)
        self.block_bytes = Counter("drive_block_bytes", "Block payload bytes moved by block routes",
                                   ["direction"], registry=self.registry)
        self.blocks = Counter("drive_blocks", "Blocks moved by block routes",
                              ["direction"], registry=self.registry)
        self.open_longpolls = Gauge("drive_longpoll_open", "Long polls waiting now",
                                    registry=self.registry)
        self.wake_latency = Histogram(
            "drive_longpoll_wake_seconds", "Commit to long-poll answer latency",
            buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5), registry=self.registry)
        self.journal_entries = Gauge("drive_journal_entries", "Entries in the change journal",
                                     registry=self.registry)
        self.connections_open = Gauge("drive_connections_open", "Client connections open now",
                                      registry=self.registry)
        self.connections_refused = Counter(
            "drive_connections_refused", "Connections refused at accept, by cap reached",
            ["reason"], registry=self.registry)
        self.connections_dropped = Counter(
            "drive_connections_dropped", "Connections dropped by the server, by reason",
            ["reason"], registry=self.registry)


_LINK_TOKEN = re.compile(r"^/+s/+[^/]*", re.IGNORECASE)
# Anything after /blocks/ but the two fixed routes: a hash, or something meant as one.
_BLOCK_HASH = re.compile(r"^/+blocks/+(?!(?:batch|upload)/*$)[^/]+", re.IGNORECASE)


def loggable_path(path: str) -> str:
    """``path`` with its secrets replaced: ``/s/{token}/content`` → ``/s/<redacted>/content``,
    ``/blocks/{hash}`` → ``/blocks/<hash>``.

    Lenient on purpose (extra slashes, any case): a mistyped link URL still carries a working
    token, and a malformed hash may still be most of a real one; neither may reach the log.
    """
    return _BLOCK_HASH.sub("/blocks/<hash>", _LINK_TOKEN.sub("/s/<redacted>", path))


# Methods get their own label value; anything else is "other", so a client inventing methods
# cannot grow the metrics without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
                      "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT"})


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


class ParserErrorFilter(logging.Filter):
    """aiohttp logs a request its HTTP parser rejects (an 8 KB URL, a bad header) at ERROR, with
    a traceback whose message quotes the request line: a link URL's token went into the log.
    Such a record becomes one WARNING line naming only the kind of error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "rejected a malformed request: %s", (type(exc).__name__,)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RateLimitFilter(logging.Filter):
    """At most one record of a kind per ``interval`` seconds; the next one let through says how
    many were held back. A kind is the logger, the level, the first line of the message template
    (asyncio puts the socket and descriptor in later lines) and the exception's type."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_kinds: int = 1000) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[str, int, str, str], list[float]] = {}  # kind -> [last, held]

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        first_line = str(record.msg).split("\n", 1)[0][:200]
        kind = (record.name, record.levelno, first_line, type(exc).__name__)
        now = self._clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        if seen is None and len(self._kinds) >= self._max_kinds:  # forget the quiet kinds
            self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.interval}
        held = int(seen[1]) if seen is not None else 0
        self._kinds[kind] = [now, 0]
        if held:
            try:
                text = record.getMessage()
            except (TypeError, ValueError):
                text = str(record.msg)
            record.msg = f"{text} [{held} more like this in the last {self.interval:g} s not logged]"
            record.args = None
        return True


#: The loggers a client can make write lines: aiohttp's server (malformed requests), asyncio
#: (accept failures past the open-file limit), our connection guard (refusals and drops).
FLOODABLE_LOGGERS = ("aiohttp.server", "asyncio", "driveserver.connections")


def quiet_parser_errors() -> None:
    """Install :class:`ParserErrorFilter` on aiohttp's server logger and a
    :class:`RateLimitFilter` on each of :data:`FLOODABLE_LOGGERS` (once per process; the
    parser filter first, so that it is the rewritten record that is rate-limited)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserErrorFilter) for f in server_log.filters):
        server_log.addFilter(ParserErrorFilter())
    for name in FLOODABLE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter())


def route_label(request: web.BaseRequest) -> str:
    try:  # a request the HTTP parser rejected (e.g. an 8 KB URL) was never routed
        match = getattr(request, "match_info", None)
    except AssertionError:
        return "unmatched"
    route = getattr(match, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


class AccessLogger(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:  # metrics need every request even when INFO logging is off
        return True

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = route_label(request)
        try:  # a request the HTTP parser rejected never reached an application
            app = getattr(request, "app", None)
        except AssertionError:
            app = None
        metrics = app.get(appkeys.METRICS) if app is not None else None
        bytes_in = request.get(appkeys.BYTES_IN, request.content_length or 0)
        bytes_out = response.body_length
        if metrics is not None:
            metrics.requests.labels(method_label(request.method), route,
                                    str(response.status)).inc()
            metrics.latency.labels(route).observe(time)
            metrics.bytes.labels("in", route).inc(bytes_in)
            metrics.bytes.labels("out", route).inc(bytes_out)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(json.dumps({
                "remote": client_of(request), "method": request.method,
                "path": loggable_path(request.path),
                "route": route, "status": response.status, "in": bytes_in, "out": bytes_out,
                "ms": round(time * 1000, 2), "user": request.get(appkeys.USER_ID),
            }))
