"""The client's address behind a reverse proxy (nginx in front of several server processes).

Every request through a proxy arrives from the proxy's address, so whatever is kept per client
address (the login and link-unlock back-off, the access log) would treat all users as one: one
guesser would slow everybody's login down. ``server.trusted_proxies`` names the proxies whose
``X-Forwarded-For`` is believed. The header is read from its right end, the hop the nearest
proxy appended: each trusted proxy in turn vouches for the address left of it, and the first
address that is not a trusted proxy is the client. Anything further left was written by the
client itself and is never believed. With no trusted proxies (the default) the header is
ignored altogether, so a client cannot pick its own address by sending one.

Only ``request.remote`` changes. The connection guard (:mod:`.connections`) counts TCP
connections, which come from the proxy: behind one, leave connection limits per client to it
(``limit_conn``) and set ``limits.max_connections_per_client = 0`` (docs/scale-out.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Parsed once from the configuration (build_app).
TRUSTED: web.AppKey[tuple[Network, ...]] = web.AppKey("forwarded.trusted", tuple)
_MAX_HOPS = 20  # a header with more entries than any real chain of proxies: the rest is ignored


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` as networks; ValueError names a bad entry."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {part!r}") from None
    return tuple(out)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: tuple[Network, ...]) -> str | None:
    """The client's address, given the TCP peer and the ``X-Forwarded-For`` header(s)."""
    if peer is None or not trusted or not _trusted(peer, trusted) or not forwarded_for:
        return peer
    client = peer
    hops = [h.strip() for h in forwarded_for.split(",")][-_MAX_HOPS:]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return client  # unreadable: believe no further than the last proxy vouched for
        client = address
        if not _trusted(address, trusted):
            return address
    return client


@web.middleware
async def forwarded_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Outermost: every later middleware and handler sees the client's address as
    ``request.remote``."""
    trusted = request.app[TRUSTED]
    if not trusted:
        return await handler(request)
    header = ",".join(request.headers.getall("X-Forwarded-For", [])) or None
    address = client_address(request.remote, header, trusted)
    if address is None or address == request.remote:
        return await handler(request)
    return await handler(request.clone(remote=address))
