"""Connection limits that aiohttp's server does not have (issue 12, findings 3 and 15).

aiohttp reads request heads and bodies without any deadline of its own, so a client that opens
connections and then trickles header lines (slowloris), or sends half a body and stops, held a
descriptor and the buffered bytes forever. This module puts a guard on every connection:

- **Request heads.** A complete head (request line and headers) must arrive within
  ``limits.header_timeout_seconds`` of the connection opening or of its previous response. This
  is aiohttp's keep-alive timer, which only ever closes a connection while it waits for a head;
  we give it our deadline instead of its default of an hour.
- **Request bodies.** While a handler waits for a body, each window of
  ``limits.body_timeout_seconds`` must bring ``body_min_bytes_per_second`` times as many bytes,
  or the connection is dropped (and the handler cancelled, which frees what it buffered). A
  window in which the *server* held reading (its buffer full while a slow store catches up) does
  not count against the client: only slow sending is punished. A request without a body (a long
  poll) is never watched, however long its handler waits.
- **Connections per client and in all.** ``limits.max_connections_per_client`` per address (an
  IPv6 /64, since one subscriber holds a whole /64) and ``limits.max_connections`` in all, which
  by default leaves a reserve of descriptors for the database, block files and S3. A connection
  past a cap gets a 503 JSON error and is closed at once, before anything of it is read.
- **Small bodies for strangers.** A request that no session or block grant vouches for (login,
  registration, link unlock) may carry at most ``limits.unauthenticated_body_bytes``.
- **Parser errors as JSON.** An over-long URL or a malformed head is answered with the JSON error
  shape, never with aiohttp's plain-text 400 that quoted the start of the request line (and so a
  link's token) back; the log gets one WARNING naming the kind of error.

The request line may be :data:`MAX_REQUEST_LINE` bytes: enough for the longest path the server
accepts (4096 bytes, percent-encoded three characters per byte) inside a link or API URL, with
room for the token and the query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from . import appkeys
from .errors import PayloadTooLarge
from .httputil import error_response
from .paths import MAX_PATH_BYTES

if TYPE_CHECKING:
    from .config import Config
    from .observability import Metrics

log = logging.getLogger("driveserver.connections")

#: Longest request line: a 4096-byte path percent-encoded (3 characters a byte) plus 4 KiB for
#: the method, the rest of the URL (``/s/<token>/content``, ``access=`` ...) and the version.
MAX_REQUEST_LINE = 3 * MAX_PATH_BYTES + 4096
#: Longest header line (aiohttp's default). Kept different from MAX_REQUEST_LINE: the parser
#: names only the limit it hit, and that is how we tell a long URL (414) from a long header (431).
MAX_HEADER_LINE = 8190
#: Descriptors kept for everything but client connections when the total cap is automatic.
FD_RESERVE = 128
#: Routes that check their own credential (a signed grant) before they read a byte of the body.
SELF_AUTHENTICATED_PREFIXES = ("/blocks/",)

_REASONS = {
    "client_full": "too many connections from your address; close some and retry",
    "server_full": "the server has too many connections; retry shortly",
    "body_stalled": "the request body arrived too slowly",
}


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of :mod:`connections`, in seconds and bytes; 0 caps mean no cap."""

    header_timeout: float = 60.0
    body_timeout: float = 60.0
    body_min_rate: int = 1024
    per_client: int = 256
    total: int = 0

    @classmethod
    def from_config(cls, config: Config) -> ConnectionLimits:
        return cls(header_timeout=config.header_timeout_seconds,
                   body_timeout=config.body_timeout_seconds,
                   body_min_rate=config.body_min_bytes_per_second,
                   per_client=config.max_connections_per_client,
                   total=config.max_connections or automatic_connection_cap())

    @property
    def body_window_bytes(self) -> int:
        """Bytes each body window must bring (at least one, so a stalled body always fails)."""
        return max(1, int(self.body_min_rate * self.body_timeout))


def automatic_connection_cap() -> int:
    """Connections the open-file limit allows after :data:`FD_RESERVE` for everything else (0
    when there is no limit to respect). Past the limit asyncio can accept nothing at all, not
    even a health check, and block reads fail: refusing a few connections is much better."""
    try:
        import resource
    except ImportError:  # not a Unix: no limit we can read
        return 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(soft // 2, soft - FD_RESERVE)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (``serve`` does it once at start); returns
    the limit in force. Many distributions start services with a soft limit of 1024, which a
    few hundred clients with a few connections each would exhaust."""
    try:
        import resource
    except ImportError:
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. macOS refuses more than OPEN_MAX: keep what we have
        return soft
    return target


def client_key(peername: Any) -> str:
    """Whom a connection counts against: its address; for IPv6 its /64, which one subscriber
    usually holds whole (an IPv4 address mapped into IPv6 counts as that IPv4 address)."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername)
    try:
        addr = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class ConnectionGuard:
    """What every connection of one listening server shares: the limits and the counts."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.open = 0
        self._by_client: dict[str, int] = {}
        self._metrics = metrics

    def open_from(self, key: str) -> int:
        return self._by_client.get(key, 0)

    def admit(self, key: str) -> str | None:
        """Count a new connection in, or say why not (a key of ``_REASONS``)."""
        limits = self.limits
        reason = None
        if limits.total and self.open >= limits.total:
            reason = "server_full"
        elif limits.per_client and self._by_client.get(key, 0) >= limits.per_client:
            reason = "client_full"
        if reason is not None:
            if self._metrics is not None:
                self._metrics.connections_refused.labels(reason).inc()
            return reason
        self.open += 1
        self._by_client[key] = self._by_client.get(key, 0) + 1
        self._set_gauge()
        return None

    def release(self, key: str) -> None:
        self.open -= 1
        left = self._by_client[key] - 1
        if left:
            self._by_client[key] = left
        else:
            del self._by_client[key]  # the map holds only clients with open connections
        self._set_gauge()

    def dropped(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.connections_dropped.labels(reason).inc()

    def _set_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.connections_open.set(self.open)


def _refusal(reason: str) -> bytes:
    body = json.dumps({"error": {"code": "too_many_connections",
                                 "message": _REASONS[reason]}}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def parser_error(exc: HttpProcessingError, max_line: int) -> tuple[int, str, str]:
    """Status, code and message for a request the HTTP parser refused. The message names the
    limit or the kind of error and nothing of the request: aiohttp's own message quotes the
    first 100 bytes of the offending line, which for a link URL is its token."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_line:
            return 414, "uri_too_long", f"the request line may be at most {max_line} bytes"
        return 431, "header_too_large", f"a request header may be at most {limit} bytes"
    return 400, "bad_request", f"malformed HTTP request ({type(exc).__name__})"


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with the guard of this module on it (see the module text).

    It is aiohttp's own ``RequestHandler`` (the same parser, keep-alive and shutdown), built
    by :func:`guarded_site` in place of the one ``web.Server`` would build."""

    __slots__ = ("_guard", "_client", "_refused", "_body", "_body_timer", "_window_mark",
                 "_held", "_held_in_window")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.limits.header_timeout, **kwargs)
        self._guard = guard
        self._client = ""
        self._refused = False
        self._body: StreamReader | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._window_mark = 0
        self._held = False  # the server holds reading now (its body buffer is full)
        self._held_in_window = False  # ... or did at some point of this window

    # -- admission ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client = client_key(transport.get_extra_info("peername"))
        reason = self._guard.admit(self._client)
        if reason is not None:
            # Refused before aiohttp sees it: no parser, no task, one write and the descriptor
            # is closed. (A client that has sent its request may see a reset instead.)
            self._refused = True
            log.warning("refused a connection from %s: %s", self._client, reason)
            transport.write(_refusal(reason))  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self.unwatch_body()
        self._guard.release(self._client)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    # -- the body-rate watch -----------------------------------------------------------------

    def watch_body(self, body: StreamReader) -> None:
        """Watch the body of the request now handled (from :func:`body_guard_middleware`)."""
        if body.is_eof() or self.transport is None:
            return  # no body, or all of it is here already
        self.unwatch_body()
        self._body = body
        self._window_mark = body.total_bytes
        self._held_in_window = self._held
        self._body_timer = self._loop.call_later(self._guard.limits.body_timeout, self._check_body)

    def unwatch_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None

    def _check_body(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self.transport is None:
            self._body = None
            return
        arrived = body.total_bytes - self._window_mark
        if arrived < self._guard.limits.body_window_bytes and not self._held_in_window:
            self._drop("body_stalled")
            return
        self._window_mark = body.total_bytes
        self._held_in_window = self._held
        self._body_timer = self._loop.call_later(self._guard.limits.body_timeout, self._check_body)

    def pause_reading(self) -> None:
        # Called by the body's StreamReader when its buffer is full: from now on the client
        # cannot send, through no fault of its own.
        self._held = self._held_in_window = True
        super().pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._held = False
        super().resume_reading(resume_parser)

    def _drop(self, reason: str) -> None:
        """Close now, discarding what is unsent; aiohttp then cancels the handler (the runner
        runs with handler cancellation), which frees whatever it had buffered."""
        self._guard.dropped(reason)
        log.warning("dropped a connection from %s: %s", self._client, _REASONS[reason])
        transport = self.transport
        self.unwatch_body()
        self.force_close()
        if transport is not None:
            transport.abort()

    # -- errors the HTTP parser found --------------------------------------------------------

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The JSON error shape for what never reached the app (a head the parser refused, or
        an error outside every middleware); never the request's own text back."""
        if isinstance(exc, HttpProcessingError):
            if not (self._request_count == 1 and isinstance(exc, BadHttpMethod)):
                self.logger.warning("rejected a malformed request from %s: %s",
                                    request.remote, type(exc).__name__)
            # else: not HTTP at all (TLS to a plain port, a scanner): as aiohttp does, silence
            status, code, text = parser_error(exc, self.max_line_size)
        else:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            code = "internal_error" if status == 500 else "http_error"
            text = "internal server error" if status == 500 else f"HTTP {status}"
        if request.writer.output_size > 0:  # a response is under way: nothing more to say
            raise ConnectionError("response already started; cannot send an error")
        resp = error_response(status, code, text)
        resp.force_close()
        return resp


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedHandler` instances."""

    __slots__ = ("_host", "_port", "_factory")

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 factory: Callable[[], asyncio.Protocol], *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._factory = host, port, factory

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self._host, self._port,
                                                backlog=self._backlog)

    @property
    def bound_port(self) -> int:
        server = self._server  # typed by aiohttp as AbstractServer; create_server made a Server
        if not isinstance(server, asyncio.Server) or not server.sockets:
            return self._port
        return int(server.sockets[0].getsockname()[1])


def guarded_site(runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard,
                 **handler_args: Any) -> GuardedSite:
    """A site for ``runner`` (set up already) whose connections the ``guard`` watches;
    ``handler_args`` are the protocol's options, the same ones given to the runner."""
    server = runner.server
    assert server is not None, "call runner.setup() first"
    loop = asyncio.get_running_loop()

    def factory() -> GuardedHandler:
        return GuardedHandler(server, guard=guard, loop=loop, **handler_args)

    # A listen backlog past aiohttp's 128: a burst of connects (every device reconnecting its
    # long poll after a restart) overflowing it has its SYNs dropped and retried a second later.
    return GuardedSite(runner, host, port, factory, backlog=1024)


@web.middleware
async def body_guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The small body limit for requests nobody vouches for, and the body-rate watch.

    It runs after the auth middleware: a request with a session has ``PRINCIPAL`` set, block
    routes check their grant before they read; everything else (login, registration, link
    unlock, any unknown route) is a stranger's."""
    if request.get(appkeys.PRINCIPAL) is None \
            and not request.path.startswith(SELF_AUTHENTICATED_PREFIXES):
        limit = request.app[appkeys.CONFIG].unauthenticated_body_bytes
        request[appkeys.BODY_LIMIT] = limit
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"a request without a session may carry at most {limit} bytes")
    protocol = request.protocol
    if not isinstance(protocol, GuardedHandler):  # an app served some other way (a test client)
        return await handler(request)
    protocol.watch_body(request.content)
    try:
        return await handler(request)
    finally:
        protocol.unwatch_body()
