"""The ``/dav/`` middleware: HTTP Basic authentication before anything else runs, and every
error below a WebDAV route rendered as a ``DAV:error`` XML body with the right status (and
``WWW-Authenticate`` on a 401, ``Retry-After`` on a 429, ``Allow`` on a 405).

It sits before the body guard in ``build_app``'s middleware list, so an authenticated PUT
streams its body under the limits of an authenticated request, as an API upload does."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import appkeys
from ..errors import ApiError, TooManyRequests
from ..observability import loggable_path
from .basic_auth import REALM, BasicAuthenticator
from .errors import DavError
from .resources import PREFIX
from .xmlio import error_body

log = logging.getLogger("driveserver.dav")
AUTH: web.AppKey[BasicAuthenticator] = web.AppKey("dav_auth", BasicAuthenticator)


def is_dav(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def render(status: int, message: str, condition: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(condition, message).encode(),
                        content_type="application/xml", charset="utf-8", headers=headers)


@web.middleware
async def dav_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not is_dav(request.path):
        return await handler(request)
    try:
        p = await request.app[AUTH].principal(request)
        request[appkeys.PRINCIPAL] = p
        request[appkeys.USER_ID] = p.user_id
        return await handler(request)
    except ApiError as exc:
        headers: dict[str, str] = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = REALM
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
        if exc.status == 405:
            from .routes import ALLOW  # local: routes imports this package's modules
            headers["Allow"] = ALLOW
        condition = exc.condition if isinstance(exc, DavError) else None
        return render(exc.status, exc.message, condition, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in ("Content-Range", "Allow")}
        return render(exc.status, exc.reason, None, kept)
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, loggable_path(request.path))
        return render(500, "internal server error")
