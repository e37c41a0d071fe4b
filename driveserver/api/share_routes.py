"""Sharing folders with people: share, list, change permission, revoke, shared-with-me."""

from __future__ import annotations

from aiohttp import web

from .. import appkeys
from ..meta import shares
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
    # Offloaded: the first share of a folder moves everything below it into the new workspace
    # in one UPDATE, which for a big folder would hold the event loop (and every other request).
    async with request.app[appkeys.DB].transaction(offload=True) as tx:
        folder = await authorize(tx, p.user_id, Action.SHARE, request.match_info["file_id"])
        share_id, mount_name = await shares.share_folder(
            tx, request.app[appkeys.JOURNAL], p.user_id, folder, email, permission)
    return web.json_response({"share_id": share_id, "mount_name": mount_name}, status=201)


@routes.get("/api/files/{file_id}/shares")
async def list_shares(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    folder = await authorize(db, p.user_id, Action.SHARE, request.match_info["file_id"])
    rows = await db.fetchall(
        "SELECT s.id, s.permission, s.created_at, u.id AS user_id, u.email FROM shares s"
        " JOIN users u ON u.id = s.grantee_id WHERE s.file_id = ? ORDER BY s.created_at",
        (folder["id"],))
    return web.json_response({"shares": [
        {"share_id": r["id"], "user_id": r["user_id"], "email": r["email"],
         "permission": r["permission"], "created_at": r["created_at"]} for r in rows]})


@routes.patch("/api/shares/{share_id}")
async def change_permission(request: web.Request) -> web.Response:
    p = principal(request)
    permission = field(await read_json(request), "permission", str)
    async with request.app[appkeys.DB].transaction() as tx:
        await shares.set_permission(tx, request.app[appkeys.JOURNAL], p.user_id,
                                    request.match_info["share_id"], permission)
    return web.json_response({"share_id": request.match_info["share_id"],
                              "permission": permission})


@routes.delete("/api/shares/{share_id}")
async def revoke_or_leave(request: web.Request) -> web.Response:
    """The owner revokes the share; its recipient leaves it (the ``share_id`` that
    ``/api/shared-with-me`` lists). Either way the folder leaves the recipient's view only."""
    p = principal(request)
    async with request.app[appkeys.DB].transaction() as tx:
        await shares.end_share(tx, request.app[appkeys.JOURNAL], p.user_id,
                               request.match_info["share_id"])
    return web.Response(status=204)


@routes.get("/api/shared-with-me")
async def shared_with_me(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    out = []
    for m in (await mounts_for(db, p.user_id)).values():
        if m.share_id is None:
            continue
        owner = await db.fetchone(
            "SELECT u.id, u.email FROM workspaces w JOIN users u ON u.id = w.owner_id"
            " WHERE w.id = ?", (m.workspace_id,))
        assert owner is not None  # every workspace has an owner (foreign key)
        out.append({"share_id": m.share_id, "file_id": m.root_id, "name": m.mount_name,
                    "path": m.prefix, "permission": m.role,
                    "owner": {"user_id": owner["id"], "email": owner["email"]}})
    return web.json_response({"shares": sorted(out, key=lambda s: s["path"])})
