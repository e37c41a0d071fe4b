"""The browser's session: an HttpOnly cookie instead of a bearer token, and CSRF protection.

A page's script never holds the session token (``HttpOnly``), so a script injected into the
page cannot carry it off. A cookie, unlike a bearer header, is also sent by the browser on
requests that another site makes it send; ``SameSite=Lax`` stops most of those, and every
state-changing request authenticated by the cookie must also carry ``X-CSRF-Token``, a value
signed for this session that only a page of this origin can read (``GET /api/auth/session``,
same-origin: no CORS headers are ever sent). A request with a bearer token needs none of this:
no browser attaches one by itself.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ..auth import TokenSigner
from ..errors import Forbidden

COOKIE = "drive_session"
CSRF_HEADER = "X-CSRF-Token"
_CSRF = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(signer: TokenSigner, session_id: str) -> str:
    """A token bound to ``session_id``: worthless for any other session or purpose."""
    return signer.sign(_CSRF, {"sid": session_id})


def check_csrf(request: web.Request, signer: TokenSigner, session_id: str,
               max_age: float) -> None:
    """Refuse (403 ``csrf_failed``) a state-changing, cookie-authenticated request whose
    ``X-CSRF-Token`` header is missing or was not issued for this session."""
    if request.method in SAFE_METHODS:
        return
    payload = signer.load(_CSRF, request.headers.get(CSRF_HEADER, ""), max_age=max_age)
    sid = payload.get("sid") if isinstance(payload, dict) else None
    if not isinstance(sid, str) or not hmac.compare_digest(sid, session_id):
        raise Forbidden(f"this request needs the {CSRF_HEADER} header the page was given",
                        code="csrf_failed")


def is_https(request: web.Request, public_url: str) -> bool:
    return request.secure or public_url.startswith("https://")


def set_session_cookie(response: web.StreamResponse, token: str, *, secure: bool,
                       max_age: float) -> None:
    response.set_cookie(COOKIE, token, max_age=int(max_age), path="/", httponly=True,
                        samesite="Lax", secure=secure)


def clear_session_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=secure)
