"""The file tree over JSON: list, metadata, folders, move/rename, trash, restore, purge, quota."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from driveproto.names import name_key

from .. import appkeys
from ..errors import BadRequest, NotFound
from ..meta import accounts, mounts, shares, trash, tree
from ..meta.db import Row, Tx
from ..paths import split_path
from ..permissions import (
    Action,
    authorize,
    authorize_move,
    authorize_purge,
    authorize_trash,
    may,
    writable_base,
)
from .common import (
    actor,
    decode_page,
    encode_page,
    field,
    news_to_every_device,
    principal,
    query_int,
    read_json,
)
from .versions_routes import version_list

routes = web.RouteTableDef()

PAGE_DEFAULT, PAGE_MAX = 1000, 5000


def entry_json(row: Row) -> dict[str, Any]:
    return {"name": row["name"], "file_id": row["id"], "is_directory": bool(row["is_directory"]),
            "size": row["size"], "version": row["version"], "checksum": row["checksum"],
            "executable": bool(row["executable"]), "symlink": bool(row["symlink"]),
            "modified_at": row["modified_at"]}


@routes.get("/api/files")
async def list_folder(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    parts = split_path(request.query.get("path", "/"))
    base, rest = await mounts.view_base(db, p.user_id, parts)
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    after = decode_page(request.query["cursor"]) if "cursor" in request.query else None
    if base is None:
        return web.json_response(await _shared_root_listing(db, p.user_id))
    folder = await tree.resolve(db, base["id"], rest)
    if folder is None:
        raise NotFound("no such folder")
    if not folder["is_directory"]:
        raise BadRequest("path is a file, not a folder", code="not_a_folder")
    await authorize(db, p.user_id, Action.READ, folder["id"])
    rows = await tree.list_children(db, folder["id"], limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [entry_json(r) for r in rows]
    if rows and await may(db, p.user_id, Action.SHARE, folder):
        # Who else sees each item, for those who decide it (the owner).
        sharing = await shares.sharing_of(db, [r["id"] for r in rows], time.time())
        for entry in entries:
            if entry["file_id"] in sharing:
                entry["shared"] = sharing[entry["file_id"]]
    if not parts and await _has_mounts(db, p.user_id):
        entries.append(_shared_root_entry())
        entries.sort(key=lambda e: name_key(e["name"]))
    body: dict[str, Any] = {"path": tree.join_path(parts), "file_id": folder["id"],
                            "entries": entries, "has_more": more}
    if more:
        body["next_cursor"] = encode_page(rows[-1]["name_key"])
    return web.json_response(body)


async def _has_mounts(db: Any, user_id: str) -> bool:
    return any(m.share_id for m in (await mounts.mounts_for(db, user_id)).values())


def _shared_root_entry() -> dict[str, Any]:
    return {"name": mounts.SHARED_ROOT, "file_id": None, "is_directory": True, "size": 0,
            "version": 0, "checksum": None, "modified_at": None, "virtual": True}


async def _shared_root_listing(db: Any, user_id: str) -> dict[str, Any]:
    """The virtual ``/Shared with me``: one folder per share, under its mount name."""
    entries = []
    for m in (await mounts.mounts_for(db, user_id)).values():
        if m.share_id is None:
            continue
        root = await tree.get_file(db, m.root_id)
        assert root is not None
        entries.append({**entry_json(root), "name": m.mount_name, "permission": m.role})
    entries.sort(key=lambda e: name_key(e["name"]))
    return {"path": f"/{mounts.SHARED_ROOT}", "file_id": None, "entries": entries,
            "has_more": False}


@routes.get("/api/files/{file_id}")
async def get_metadata(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    file = await authorize(db, p.user_id, Action.READ, request.match_info["file_id"])
    body = entry_json(file)
    body.update(path=await mounts.view_path(db, p.user_id, file),
                trashed=file["trashed_at"] is not None,
                versions=[] if file["is_directory"] else await version_list(db, file["id"]))
    return web.json_response(body)


@routes.post("/api/folders")
async def create_folder(request: web.Request) -> web.Response:
    p = principal(request)
    body = await read_json(request)
    parts = split_path(field(body, "path", str))

    async def unit(tx: Tx) -> tuple[Row, str]:
        base, rest = await writable_base(tx, p.user_id, parts)
        folder = await request.app[appkeys.TREE].create_folder(tx, base, rest, actor(request))
        return folder, await mounts.view_path(tx, p.user_id, folder)

    folder, path = await request.app[appkeys.DB].write(unit)
    return web.json_response({**entry_json(folder), "path": path}, status=201)


@routes.patch("/api/files/{file_id}")
async def move(request: web.Request) -> web.Response:
    p = principal(request)
    body = await read_json(request)
    dest = split_path(field(body, "path", str))

    async def unit(tx: Tx) -> tuple[Row, str]:
        file = await authorize_move(tx, p.user_id, request.match_info["file_id"])
        base, rest = await writable_base(tx, p.user_id, dest)
        moved = await request.app[appkeys.TREE].move(tx, file, base, rest, actor(request))
        return moved, await mounts.view_path(tx, p.user_id, moved)

    moved, path = await request.app[appkeys.DB].write(unit)
    return web.json_response({**entry_json(moved), "path": path})


@routes.delete("/api/files/{file_id}")
async def delete(request: web.Request) -> web.Response:
    p = principal(request)

    async def unit(tx: Tx) -> None:
        file = await authorize_trash(tx, p.user_id, request.match_info["file_id"])
        await request.app[appkeys.TREE].trash(tx, file, actor(request))

    await request.app[appkeys.DB].write(unit)
    return web.Response(status=204)


@routes.get("/api/trash")
async def list_trash(request: web.Request) -> web.Response:
    p = principal(request)
    rows = await trash.trash_items(request.app[appkeys.DB], p.user_id)
    return web.json_response({"entries": [
        {**entry_json(r), "path": r["trashed_path"], "trashed_at": r["trashed_at"]}
        for r in rows]})


@routes.post("/api/trash/{file_id}/restore")
async def restore_from_trash(request: web.Request) -> web.Response:
    p = principal(request)

    async def unit(tx: Tx) -> tuple[Row, str]:
        file = await authorize_purge(tx, p.user_id, request.match_info["file_id"])
        root = await accounts.root_of(tx, p.user_id)
        restored = await request.app[appkeys.TREE].restore(tx, file, root,
                                                           news_to_every_device(request))
        return restored, await mounts.view_path(tx, p.user_id, restored)

    restored, path = await request.app[appkeys.DB].write(unit)
    return web.json_response({**entry_json(restored), "path": path})


@routes.delete("/api/trash/{file_id}")
async def purge(request: web.Request) -> web.Response:
    p = principal(request)

    async def unit(tx: Tx) -> None:
        file = await authorize_purge(tx, p.user_id, request.match_info["file_id"])
        await request.app[appkeys.TREE].purge(tx, file)

    await request.app[appkeys.DB].write(unit)
    return web.Response(status=204)


@routes.get("/api/quota")
async def quota(request: web.Request) -> web.Response:
    p = principal(request)
    db = request.app[appkeys.DB]
    user = await accounts.user_by_id(db, p.user_id)
    assert user is not None
    return web.json_response({"used": await accounts.used_bytes(db, p.user_id),
                              "total": user["quota_bytes"]})

