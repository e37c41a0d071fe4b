"""A file's version history over the API: list the versions, restore an old one."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import BadRequest, NotFound
from ..meta import versions as versions_meta
from ..meta.db import Tx
from ..meta.journal import Actor
from ..meta.versions import CommitResult, version_blocks, version_row
from ..permissions import Action, authorize
from .common import news_to_every_device, principal

routes = web.RouteTableDef()


async def version_list(q: Any, file_id: str) -> list[dict[str, Any]]:
    """The file's versions as the API shows them (``versions`` here, and a file's metadata)."""
    rows = await versions_meta.history(q, file_id)
    return [{"version": r["version"], "size": r["size"], "checksum": r["checksum"],
             "modified_at": r["created_at"], "modified_by": r["email"],
             "user_id": r["user_id"], "device": r["device_name"], "device_id": r["device_id"],
             "restored_from": r["restored_from"], "executable": bool(r["executable"]),
             "symlink": bool(r["symlink"])}
            for r in rows]


@routes.get("/api/files/{file_id}/versions")
async def versions(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    file = await authorize(db, p.user_id, Action.READ, request.match_info["file_id"])
    return web.json_response({"file_id": file["id"],
                              "versions": await version_list(db, file["id"])})


@routes.post("/api/files/{file_id}/restore/{version}")
async def restore_version(request: web.Request) -> web.Response:
    """A new version with the content of an old one; no block is copied."""
    p = principal(request)
    try:
        number = int(request.match_info["version"])
    except ValueError:
        raise BadRequest("version must be an integer", code="invalid_path") from None
    if not 0 < number < 2**63:
        raise NotFound("no such version")

    async def unit(tx: Tx) -> CommitResult:
        file = await authorize(tx, p.user_id, Action.WRITE, request.match_info["file_id"])
        old = await version_row(tx, file["id"], number)
        if old is None or file["trashed_at"] is not None:
            raise NotFound("no such version")
        blocks = await version_blocks(tx, old["id"])
        keyring = request.app[appkeys.KEYRING]
        return await request.app[appkeys.VERSIONS].commit(
            tx, file["id"], Actor(p.user_id, p.device_id), blocks, file["version"],
            {b.hash: keyring.object_name(b.hash) for b in blocks}, restored_from=number,
            journal_as=news_to_every_device(request), executable=bool(old["executable"]),
            symlink=bool(old["symlink"]), chunking=str(old["chunking"]))

    result = await request.app[appkeys.DB].write(unit)
    return web.json_response({"status": result.status, "file_id": result.file_id,
                              "version": result.version, "restored_from": number})
