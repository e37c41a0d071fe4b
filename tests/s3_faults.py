"""A fault-injecting HTTP proxy between the server's S3 client and a real S3 server (SeaweedFS).

Toxiproxy-style, but ours and in-process: :class:`S3FaultProxy` listens on 127.0.0.1, forwards
every request byte for byte to the upstream S3 endpoint (the ``Host`` header included, so the
client's SigV4 signature still checks out there) and, on a chosen share of calls, does one of:

* ``error500``   answer ``500 InternalError`` with the S3 XML error body, without forwarding;
* ``slowdown``   answer ``503 SlowDown`` (S3's throttling answer), without forwarding;
* ``latency``    wait a while (``latency`` seconds, drawn from the range), then forward;
* ``reset``      drop the connection before forwarding (the request never reaches S3);
* ``lost_reply`` forward, let S3 act on it, then drop the connection instead of answering
  (the write happened but the client cannot know: its retry must cope);
* ``truncate``   on a GET with a body: send the headers (with the full Content-Length) and only
  part of the body, then drop the connection;
* ``bitflip``    on a GET with a body: flip one byte of the body (off by default: S3 and TLS
  make this rare, but our own verification must catch it).

Decisions come from one ``random.Random(seed)`` drawn in the order calls arrive, so one seed
gives one sequence of decisions; what each decision lands on depends on the arrival order of
concurrent calls. ``counts`` says what the proxy did while enabled (``forwarded`` for calls
passed on untouched, one key per fault kind), ``log`` lists every faulted call, and calls made
while it is disabled (set-up, verification) draw nothing and count only in ``calls_off``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["ALL_KINDS", "DEFAULT_KINDS", "FaultPlan", "S3FaultProxy"]

DEFAULT_KINDS = ("error500", "slowdown", "latency", "reset", "lost_reply", "truncate")
ALL_KINDS = (*DEFAULT_KINDS, "bitflip")
_BODY_KINDS = frozenset({"truncate", "bitflip"})  # need a GET answer with a body
# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones each side recomputes.
_REQUEST_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                           "upgrade", "proxy-connection", "expect", "content-length"})
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                            "upgrade", "content-length", "date", "server"})


@dataclass(frozen=True)
class FaultPlan:
    """What to inject: ``share`` of all calls get a fault, the kind drawn from ``kinds``
    (each kind once first, then uniformly; a call other than a GET draws among the kinds that
    need no body; a GET whose answer has no body to hurt is reset instead of truncated or
    flipped)."""

    share: float = 0.1
    kinds: tuple[str, ...] = DEFAULT_KINDS
    latency: tuple[float, float] = (0.05, 0.4)
    # Drop the x-amz-checksum-* headers of answers, as a store without checksums would send
    # them: the S3 client then cannot see damage in a body, and only our own verification can.
    strip_checksums: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(ALL_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError("share must be within [0, 1]")


def _xml_error(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


@dataclass
class S3FaultProxy:
    """The proxy: ``await start()``, point the S3 client at :attr:`url`, ``await close()``.

    ``enabled = False`` passes everything through (e.g. to verify the bucket afterwards
    through the same client)."""

    upstream: str
    seed: int
    plan: FaultPlan = field(default_factory=FaultPlan)
    enabled: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    log: list[tuple[int, str, str, str]] = field(default_factory=list)
    calls: int = 0  # calls while enabled (the ones that drew a decision)
    calls_off: int = 0  # calls passed through while disabled
    port: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> int:
        """How many calls got a fault."""
        return sum(n for kind, n in self.counts.items() if kind != "forwarded")

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120),
            connector=aiohttp.TCPConnector(limit=64))
        self._runner = web.ServerRunner(web.Server(self._handle), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> S3FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one call ------------------------------------------------------------------------------

    def _decide(self, method: str) -> tuple[int, str | None, float]:
        """This call's index, fault kind (None: pass through) and latency. Every call draws the
        same number of values, so the sequence depends on the seed and the call count alone."""
        if not self.enabled:
            self.calls_off += 1
            return -1, None, 0.0
        index = self.calls
        self.calls += 1
        roll, pick, delay = self._rng.random(), self._rng.random(), self._rng.random()
        if roll >= self.plan.share:
            return index, None, 0.0
        kinds = self.plan.kinds if method == "GET" else \
            tuple(k for k in self.plan.kinds if k not in _BODY_KINDS)
        if not kinds:  # only body faults planned, and this call has no body to hurt
            return index, None, 0.0
        # Each kind first as soon as a call it can hurt comes (a kind is drawn among those not
        # injected yet), then uniformly: which calls are GETs depends on timing, and a short
        # campaign drawing uniformly from the start could miss a kind altogether.
        unseen = tuple(k for k in kinds if not self.counts[k])
        pool = unseen or kinds
        kind = pool[int(pick * len(pool)) % len(pool)]
        low, high = self.plan.latency
        return index, kind, low + delay * (high - low)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        index, kind, delay = self._decide(request.method)
        if request.headers.get("Expect", "").lower() == "100-continue":
            # A low-level aiohttp server does not answer this itself (an Application does), and
            # the S3 client waits for it before it sends a PUT's body.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await request.content.read()  # (read() stops at client_max_size, 1 MiB)
        if kind is not None:
            self.log.append((index, request.method, request.path, kind))
        if kind in ("error500", "slowdown"):
            self.counts[kind] += 1
            code, status, message = (("InternalError", 500, "We encountered an internal error.")
                                     if kind == "error500" else
                                     ("SlowDown", 503, "Please reduce your request rate."))
            return web.Response(
                status=status, content_type="application/xml",
                body=b"" if request.method == "HEAD" else
                _xml_error(code, message, request.path, f"fault-{self.seed}-{index}"))
        if kind == "reset":
            self.counts[kind] += 1
            return self._drop(request)
        if kind == "latency":
            self.counts[kind] += 1
            await asyncio.sleep(delay)
        status, headers, payload = await self._forward(request, body)
        if kind == "lost_reply":
            self.counts[kind] += 1
            return self._drop(request)
        if kind in _BODY_KINDS:
            if request.method != "GET" or status != 200 or len(payload) < 2:
                self.counts[kind + "_as_reset"] += 1
                return self._drop(request)
            self.counts[kind] += 1
            if kind == "bitflip":
                at = int(delay * (len(payload) - 1))
                payload = payload[:at] + bytes([payload[at] ^ 0x40]) + payload[at + 1:]
            else:
                return await self._truncated(request, status, headers, payload,
                                             max(1, int(delay * len(payload))))
        if kind is None and index >= 0:
            self.counts["forwarded"] += 1
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(payload) if request.method != "HEAD" else \
            int(headers.get("Content-Length-Upstream", 0))
        resp.headers.pop("Content-Length-Upstream", None)
        await resp.prepare(request)
        if request.method != "HEAD":
            await resp.write(payload)
        await resp.write_eof()
        return resp

    async def _forward(self, request: web.BaseRequest, body: bytes
                       ) -> tuple[int, dict[str, str], bytes]:
        """Pass the call on unchanged; the upstream's status, headers and whole body."""
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP}
        async with self._session.request(
                request.method, self.upstream + request.raw_path, headers=headers,
                data=body if body or request.method in ("PUT", "POST") else None,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                allow_redirects=False) as up:
            payload = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in _RESPONSE_DROP
                   and not (self.plan.strip_checksums and
                            k.lower().startswith("x-amz-checksum-"))}
            if request.method == "HEAD" and "Content-Length" in up.headers:
                out["Content-Length-Upstream"] = up.headers["Content-Length"]
            return up.status, out, payload

    @staticmethod
    def _drop(request: web.BaseRequest) -> web.StreamResponse:
        """Cut the connection without an answer (what a reset or a crashed peer looks like)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the wire: the transport is gone

    @staticmethod
    async def _truncated(request: web.BaseRequest, status: int, headers: dict[str, str],
                         payload: bytes, keep: int) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(payload)
        await resp.prepare(request)
        await resp.write(payload[:keep])
        if request.transport is not None:
            request.transport.abort()
        return resp

    def summary(self) -> dict[str, Any]:
        """What the proxy did, for a test's failure message or a script's report."""
        return {"seed": self.seed, "calls": self.calls, "calls_off": self.calls_off,
                "faults": self.faults,
                "share": round(self.faults / self.calls, 3) if self.calls else 0.0,
                "counts": dict(self.counts)}
