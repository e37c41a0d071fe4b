"""WebDAV under ``/dav/`` (RFC 4918 classes 1 and 2): XML in and out, mapped onto the same
units of work as the JSON API. :func:`setup` wires it into ``build_app``; docs/webdav.md says
how to connect clients."""

from __future__ import annotations

from aiohttp import web

from .basic_auth import BasicAuthenticator
from .middleware import AUTH, dav_middleware
from .resources import PREFIX
from .routes import dispatch

__all__ = ["dav_middleware", "setup"]


def setup(app: web.Application) -> None:
    """The routes of ``/dav`` and everything below it (every method goes to one dispatcher),
    and the Basic authenticator their middleware uses (:data:`dav_middleware` must be in the
    app's middleware list, before the body guard)."""
    app[AUTH] = BasicAuthenticator()
    app.router.add_route("*", PREFIX, dispatch)
    app.router.add_route("*", PREFIX + "/{tail:.*}", dispatch)
