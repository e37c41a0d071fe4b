"""The client's address behind a reverse proxy (nginx in front of several server processes).

Every request through a proxy arrives from the proxy's address, so whatever is kept per client
address (the login and link-unlock back-off, the access log) would treat all users as one: one
guesser would slow everybody's login down. ``server.trusted_proxies`` names the proxies whose
``X-Forwarded-For`` is believed. The header is read from its right end, the hop the nearest
proxy appended: each trusted proxy in turn vouches for the address left of it, and the first
address that is not a trusted proxy is the client. Anything further left was written by the
client itself and is never believed. With no trusted proxies (the default) the header is
ignored altogether, so a client cannot pick its own address by sending one.

Handlers ask :func:`client_of`. The connection guard (:mod:`.connections`) counts TCP
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
CLIENT: web.RequestKey[str] = web.RequestKey("forwarded.client", str)
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


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, an IPv4-mapped IPv6 one (``::ffff:1.2.3.4``, what a socket bound to ``::``
    sees) as the IPv4 it is; None if it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: tuple[Network, ...]) -> str | None:
    """The client's address, given the TCP peer and the ``X-Forwarded-For`` header(s)."""
    if peer is None or not trusted or not _trusted(peer, trusted) or not forwarded_for:
        return peer
    client = peer
    hops = [h.strip() for h in forwarded_for.split(",")][-_MAX_HOPS:]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return client  # unreadable: believe no further than the last proxy vouched for
        client = address = str(ip)
        if not _trusted(address, trusted):
            return address
    return client


def client_of(request: web.BaseRequest) -> str | None:
    """The client's address (see the module docstring): what per-client limits and the access
    log use, never ``request.remote`` directly."""
    return request.get(CLIENT) or request.remote


@web.middleware
async def forwarded_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Outermost: records the client's address on the request (:func:`client_of`). Not a
    ``request.clone``: the access log and the request's state belong to the original."""
    trusted = request.app[TRUSTED]
    if trusted:
        header = ",".join(request.headers.getall("X-Forwarded-For", [])) or None
        address = client_address(request.remote, header, trusted)
        if address is not None:
            request[CLIENT] = address
    return await handler(request)
