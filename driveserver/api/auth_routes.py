"""Accounts, sessions and devices: register, login, logout, password change, device registry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from driveproto.names import refused_characters

from .. import appkeys
from ..auth import MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, hash_password
from ..connections import client_key
from ..errors import BadRequest, Forbidden, Unauthorized
from ..forwarded import client_of
from ..meta import accounts, devices
from ..meta.db import Tx
from .browser_session import (
    COOKIE,
    check_csrf,
    clear_session_cookie,
    csrf_token,
    is_https,
    set_session_cookie,
)
from .common import field, principal, read_json

routes = web.RouteTableDef()

SESSION = "session"
# Routes that work without a bearer token. Block and link routes carry their own signed tokens.
PUBLIC_API = {"/api/auth/register", "/api/auth/login", "/api/openapi.json"}


def _email(body: dict) -> str:
    email = field(body, "email", str).strip()
    if not (3 <= len(email) <= 254) or "@" not in email or any(c.isspace() for c in email):
        raise BadRequest("email is not a valid address", code="invalid_field", field="email")
    return email


def _password(body: dict, name: str = "password") -> str:
    password = field(body, name, str)
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadRequest(f"{name} must have at least {MIN_PASSWORD_CHARS} characters",
                         code="weak_password", field=name)
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise BadRequest(f"{name} may be at most {MAX_PASSWORD_BYTES} bytes",
                         code="invalid_field", field=name)
    return password


def _device_fields(body: dict, *, required: bool) -> tuple[str | None, str]:
    name = field(body, "device_name", str, default=None)
    if required and name is None:
        raise BadRequest("field 'device_name' is required", code="missing_field",
                         field="device_name")
    if name is not None and not (1 <= len(name) <= 100):
        raise BadRequest("device_name must have 1 to 100 characters", code="invalid_field",
                         field="device_name")
    refused = refused_characters(name) if name is not None else None
    if refused:  # shown in device lists and notifications: nothing that disguises or breaks
        raise BadRequest(f"device_name may not hold {refused}", code="invalid_field",
                         field="device_name")
    device_type = field(body, "device_type", str, default="desktop")
    if device_type not in devices.DEVICE_TYPES:
        raise BadRequest(f"device_type must be one of {', '.join(devices.DEVICE_TYPES)}",
                         code="invalid_field", field="device_type")
    return name, device_type


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Resolve the session on every /api/ route except the public ones: from
    ``Authorization: Bearer`` (every client), else from the browser's session cookie, which
    also needs the CSRF header on a state-changing request (see :mod:`.browser_session`)."""
    if request.path.startswith("/api/") and request.path not in PUBLIC_API:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        by_cookie = not header and bool(request.cookies.get(COOKIE))
        if by_cookie:
            token = request.cookies[COOKIE]
        elif scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token")
        config = request.app[appkeys.CONFIG]
        signer, max_age = request.app[appkeys.SIGNER], config.session_days * 86400
        payload = signer.load(SESSION, token.strip(), max_age=max_age)
        session_id = payload.get("sid") if isinstance(payload, dict) else None
        p = await accounts.principal_for_session(request.app[appkeys.DB], session_id) \
            if isinstance(session_id, str) else None
        if p is None:
            raise Unauthorized("invalid or expired token")
        if by_cookie:
            check_csrf(request, signer, p.session_id, max_age)
            request[appkeys.BY_COOKIE] = True
        request[appkeys.PRINCIPAL] = p
        request[appkeys.USER_ID] = p.user_id
    return await handler(request)


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    config = request.app[appkeys.CONFIG]
    if not config.registration_open:
        raise Forbidden("registration is closed on this server; ask its owner for an account",
                        code="registration_closed")
    body = await read_json(request)
    email, password = _email(body), _password(body)
    user = await accounts.create_user(request.app[appkeys.DB], email, password,
                                      config.default_quota_bytes, config.password_hash_cost)
    return web.json_response({"user_id": user["id"], "email": user["email"]}, status=201)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    email = field(body, "email", str)
    password = field(body, "password", str)
    device_name, device_type = _device_fields(body, required=False)
    new_device = field(body, "new_device", bool, default=False)
    cookie = field(body, "cookie", bool, default=False)
    if cookie and new_device:
        raise BadRequest("a browser session always gets a device of its own; leave out"
                         " new_device", code="invalid_field", field="new_device")
    if new_device and device_name is None:
        raise BadRequest("new_device needs a device_name", code="missing_field",
                         field="device_name")
    throttle = request.app[appkeys.THROTTLE]
    keys = (f"acct:{accounts.email_key(email)}", f"addr:{client_key(client_of(request))}")
    db = request.app[appkeys.DB]
    user = await accounts.user_by_email(db, email)
    if not await throttle.check(password, user["password_hash"] if user else None, keys,
                                "too many failed logins; try again later"):
        raise Unauthorized("wrong email or password", code="bad_credentials")
    assert user is not None
    config = request.app[appkeys.CONFIG]

    async def unit(tx: Tx) -> tuple[str | None, str]:
        device_id = None
        if cookie:  # one web device per browser sign-in, seen and revocable in the list
            device_id = await devices.new_web_device(tx, user["id"], device_name or "Web browser")
        elif device_name is not None:
            device_id = await devices.register_device(tx, user["id"], device_name, device_type,
                                                      must_be_new=new_device)
        return device_id, await accounts.create_session(tx, user["id"], device_id,
                                                        config.session_days * 86400)

    device_id, session_id = await db.write(unit)
    signer = request.app[appkeys.SIGNER]
    token = signer.sign(SESSION, {"sid": session_id})
    if not cookie:
        return web.json_response({"token": token, "user_id": user["id"], "device_id": device_id})
    # The page never sees the session token: only the cookie carries it.
    resp = web.json_response({"user_id": user["id"], "device_id": device_id,
                              "csrf_token": csrf_token(signer, session_id)})
    set_session_cookie(resp, token, secure=is_https(request, config.public_url),
                       max_age=config.session_days * 86400)
    return resp


@routes.get("/api/auth/session")
async def session_info(request: web.Request) -> web.Response:
    """Who is signed in; for a browser, also the CSRF token its page must send (a page opened
    again after a reload has only the cookie)."""
    p = principal(request)
    user = await accounts.user_by_id(request.app[appkeys.DB], p.user_id)
    assert user is not None
    body = {"user_id": p.user_id, "email": user["email"], "device_id": p.device_id}
    if request.get(appkeys.BY_COOKIE):
        body["csrf_token"] = csrf_token(request.app[appkeys.SIGNER], p.session_id)
    return web.json_response(body)


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    p = principal(request)
    if request.get(appkeys.BY_COOKIE) and p.device_id is not None:
        # A browser's device lives as long as its sign-in: gone with it, not piling up.
        device_id = p.device_id
        await request.app[appkeys.DB].write(
            lambda tx: devices.remove_device(tx, p.user_id, device_id))
    else:
        await request.app[appkeys.DB].write(
            lambda tx: accounts.revoke_sessions(tx, session_id=p.session_id))
    resp = web.Response(status=204)
    if request.get(appkeys.BY_COOKIE):
        clear_session_cookie(resp, secure=is_https(request, request.app[appkeys.CONFIG].public_url))
    return resp


@routes.post("/api/auth/password")
async def change_password(request: web.Request) -> web.Response:
    """Change the password; every session of the user (this one too) stops working."""
    p = principal(request)
    body = await read_json(request)
    old = field(body, "old_password", str)
    new = _password(body, "new_password")
    db = request.app[appkeys.DB]
    user = await accounts.user_by_id(db, p.user_id)
    assert user is not None
    # A stolen session must not become a way to guess the password: throttled as logins are,
    # per session (not per user: a thief's wrong guesses must not lock the owner out of the
    # very change that revokes the thief's session) and per address.
    throttle = request.app[appkeys.THROTTLE]
    keys = (f"pwd:{p.session_id}", f"addr:{client_key(client_of(request))}")
    if not await throttle.check(old, user["password_hash"], keys,
                                "too many wrong passwords; try again later"):
        raise Forbidden("old_password is wrong", code="bad_credentials")
    new_hash = await asyncio.to_thread(hash_password, new,
                                       request.app[appkeys.CONFIG].password_hash_cost)
    await db.write(lambda tx: accounts.change_password(tx, p.user_id, new_hash))
    return web.Response(status=204)


@routes.post("/api/sync/register")
async def register_device(request: web.Request) -> web.Response:
    p = principal(request)
    body = await read_json(request)
    name, device_type = _device_fields(body, required=True)
    device_id = field(body, "device_id", str, default=None)
    assert name is not None
    device_id = await request.app[appkeys.DB].write(
        lambda tx: devices.register_device(tx, p.user_id, name, device_type, device_id))
    return web.json_response({"device_id": device_id})


@routes.get("/api/devices")
async def list_devices(request: web.Request) -> web.Response:
    p = principal(request)
    rows = await devices.live_devices(request.app[appkeys.DB], p.user_id)
    return web.json_response({"devices": [
        {"device_id": r["id"], "name": r["name"], "type": r["type"],
         "created_at": r["created_at"], "last_seen_at": r["last_seen_at"],
         "current": r["id"] == p.device_id} for r in rows]})


@routes.delete("/api/devices/{device_id}")
async def remove_device(request: web.Request) -> web.Response:
    """Forget a device (lost laptop): its sessions stop working at once."""
    p = principal(request)
    device_id = request.match_info["device_id"]
    await request.app[appkeys.DB].write(
        lambda tx: devices.remove_device(tx, p.user_id, device_id))
    return web.Response(status=204)
