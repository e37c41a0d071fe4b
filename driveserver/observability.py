"""Access log and Prometheus metrics.

The access log is one JSON object per request. It logs the path without its query string,
because block URLs carry signed tokens in the query, and with a public link's token (the secret
in ``/s/{token}/...``) replaced by ``<redacted>``: tokens must never reach a log. Metrics
are counted in the same place, after the response is complete, so streamed bodies are counted
by what was really sent.
"""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import appkeys

access_log = logging.getLogger("driveserver.access")


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


_LINK_TOKEN = re.compile(r"^/+s/+[^/]*", re.IGNORECASE)


def loggable_path(path: str) -> str:
    """``path`` with a link token replaced: ``/s/{token}/content`` → ``/s/<redacted>/content``.

    Lenient on purpose (extra slashes, any case): a mistyped link URL still carries a working
    token, and it must not reach the log either.
    """
    return _LINK_TOKEN.sub("/s/<redacted>", path)


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


def quiet_parser_errors() -> None:
    """Install :class:`ParserErrorFilter` on aiohttp's server logger (once per process)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserErrorFilter) for f in server_log.filters):
        server_log.addFilter(ParserErrorFilter())


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
            metrics.requests.labels(request.method, route, str(response.status)).inc()
            metrics.latency.labels(route).observe(time)
            metrics.bytes.labels("in", route).inc(bytes_in)
            metrics.bytes.labels("out", route).inc(bytes_out)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(json.dumps({
                "remote": request.remote, "method": request.method,
                "path": loggable_path(request.path),
                "route": route, "status": response.status, "in": bytes_in, "out": bytes_out,
                "ms": round(time * 1000, 2), "user": request.get(appkeys.USER_ID),
            }))
