"""App passwords over JSON: make one (shown once), list them, revoke one.

The password is what a WebDAV client (Finder, a phone's file manager, rclone) stores with
the account's email for HTTP Basic on ``/dav/``; each is also a device in ``GET /api/devices``
(removing that device revokes it too). See ``meta.app_passwords``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import appkeys
from ..meta import app_passwords
from ..meta.db import Row
from .common import field, principal, read_json

routes = web.RouteTableDef()


def app_password_json(row: Row) -> dict[str, Any]:
    return {"app_password_id": row["id"], "name": row["name"], "device_id": row["device_id"],
            "created_at": row["created_at"], "last_used_at": row["last_used_at"]}


@routes.post("/api/app-passwords")
async def create(request: web.Request) -> web.Response:
    p = principal(request)
    body = await read_json(request)
    name = field(body, "name", str)
    row, password = await app_passwords.issue_app_password(
        request.app[appkeys.DB], p.user_id, name, request.app[appkeys.CONFIG].password_hash_cost)
    return web.json_response({**app_password_json(row), "password": password}, status=201)


@routes.get("/api/app-passwords")
async def list_all(request: web.Request) -> web.Response:
    p = principal(request)
    rows = await app_passwords.live_app_passwords(request.app[appkeys.DB], p.user_id)
    return web.json_response({"app_passwords": [app_password_json(r) for r in rows]})


@routes.delete("/api/app-passwords/{app_password_id}")
async def revoke(request: web.Request) -> web.Response:
    p = principal(request)
    app_id = request.match_info["app_password_id"]
    await request.app[appkeys.DB].write(
        lambda tx: app_passwords.revoke_app_password(tx, p.user_id, app_id))
    return web.Response(status=204)
