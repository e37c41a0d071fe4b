"""Sharing folders with people: share, list, change permission, revoke, shared-with-me."""

from __future__ import annotations

from aiohttp import web

from .. import appkeys
from ..meta import accounts, shares
from ..meta.db import Tx
from ..meta.mounts import mounts_for
from ..permissions import Action, authorize
from .common import field, principal, read_json

routes = web.RouteTableDef()


@routes.post("/api/files/{file_id}/share")
async def share(request: web.Request) -> web.Response:
    p = principal(request)
    body = await read_json(request)
    email = field(body, "user_email", str)
    permission = field(body, "permission", str)

    async def unit(tx: Tx) -> tuple[str, str]:
        folder = await authorize(tx, p.user_id, Action.SHARE, request.match_info["file_id"])
        return await shares.share_folder(tx, request.app[appkeys.JOURNAL], p.user_id, folder,
                                         email, permission)

    # Offloaded: the first share of a folder moves everything below it into the new workspace
    # in one statement, which for a big folder would hold the event loop (and every other
    # request).
    share_id, mount_name = await request.app[appkeys.DB].write(unit, offload=True)
    return web.json_response({"share_id": share_id, "mount_name": mount_name}, status=201)


@routes.get("/api/files/{file_id}/shares")
async def list_shares(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    folder = await authorize(db, p.user_id, Action.SHARE, request.match_info["file_id"])
    rows = await shares.shares_of_folder(db, folder["id"])
    return web.json_response({"shares": [
        {"share_id": r["id"], "user_id": r["user_id"], "email": r["email"],
         "permission": r["permission"], "created_at": r["created_at"]} for r in rows]})


@routes.patch("/api/shares/{share_id}")
async def change_permission(request: web.Request) -> web.Response:
    p = principal(request)
    permission = field(await read_json(request), "permission", str)
    await request.app[appkeys.DB].write(lambda tx: shares.set_permission(
        tx, request.app[appkeys.JOURNAL], p.user_id, request.match_info["share_id"], permission))
    return web.json_response({"share_id": request.match_info["share_id"],
                              "permission": permission})


@routes.delete("/api/shares/{share_id}")
async def revoke_or_leave(request: web.Request) -> web.Response:
    """The owner revokes the share; its recipient leaves it (the ``share_id`` that
    ``/api/shared-with-me`` lists). Either way the folder leaves the recipient's view only."""
    p = principal(request)
    await request.app[appkeys.DB].write(lambda tx: shares.end_share(
        tx, request.app[appkeys.JOURNAL], p.user_id, request.match_info["share_id"]))
    return web.Response(status=204)


@routes.get("/api/shared-with-me")
async def shared_with_me(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    out = []
    for m in (await mounts_for(db, p.user_id)).values():
        if m.share_id is None:
            continue
        owner = await accounts.workspace_owner(db, m.workspace_id)
        assert owner is not None  # every workspace has an owner (foreign key)
        out.append({"share_id": m.share_id, "file_id": m.root_id, "name": m.mount_name,
                    "path": m.prefix, "permission": m.role,
                    "owner": {"user_id": owner["id"], "email": owner["email"]}})
    return web.json_response({"shares": sorted(out, key=lambda s: s["path"])})
