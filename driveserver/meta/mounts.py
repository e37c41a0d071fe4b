"""Where each workspace appears in a user's view of their drive.

A user's own drive is their personal workspace, mounted at ``/``. A shared folder is a workspace
of its own (its contents move into it when it is first shared), hanging from a folder of the
owner's tree: the owner sees it where it is; each person it is shared with sees it at
``/Shared with me/<mount name>`` (the name is chosen once, when shared, and stays put).

Journal entries carry paths relative to their workspace, so one entry serves every viewer:
the viewer's path is the mount's prefix plus the entry's path. All path mapping goes through
this module.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from driveproto.names import SHARED_ROOT, name_key

from ..paths import join_path
from ..permissions import Role
from .db import Row

SHARED_ROOT_KEY = name_key(SHARED_ROOT)


@dataclass(frozen=True)
class Mount:
    """A workspace as one user sees it."""

    workspace_id: str
    root_id: str   # the folder the workspace's tree hangs from
    prefix: str    # the viewer's path of that folder: "" for the personal root
    role: Role
    share_id: str | None = None
    mount_name: str | None = None
    # The workspace's journal position when the share was given: entries up to it are not
    # the viewer's to see (0 for the owner, who sees all of it).
    granted_seq: int = 0


async def _names_up(q: Any, file_id: str, stop_id: str | None = None) -> list[str]:
    """Names from below ``stop_id`` (or the owner's root) down to ``file_id``."""
    rows = await q.fetchall(
        "WITH RECURSIVE up(id, parent_id, name, depth) AS ("
        "  SELECT id, parent_id, name, 0 FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id, f.name, up.depth + 1"
        "  FROM files f JOIN up ON f.id = up.parent_id)"
        " SELECT id, parent_id, name FROM up ORDER BY depth", (file_id,))
    names: list[str] = []
    for r in rows:
        if r["id"] == stop_id or r["parent_id"] is None:
            break
        names.append(r["name"])
    return names[::-1]


async def workspace_path(q: Any, file: Row) -> str:
    """``file``'s path relative to its workspace's root folder (``""`` for the root itself)."""
    root_id = await q.fetchval("SELECT root_id FROM workspaces WHERE id = ?",
                               (file["workspace_id"],))
    names = await _names_up(q, file["id"], root_id)
    return join_path(names) if names else ""


async def owner_path(q: Any, file_id: str) -> str:
    """``file_id``'s full path in its owner's drive (names from the owner's root down)."""
    return join_path(await _names_up(q, file_id))


async def mounts_for(q: Any, user_id: str) -> dict[str, Mount]:
    """Workspace id → mount, for every workspace whose files ``user_id`` can see.

    A shared workspace whose folder sits in its owner's trash is not mounted for anyone.
    """
    out: dict[str, Mount] = {}
    for w in await q.fetchall(
            "SELECT w.id, w.kind, w.root_id, f.trashed_at FROM workspaces w"
            " JOIN files f ON f.id = w.root_id WHERE w.owner_id = ?", (user_id,)):
        if w["kind"] == "personal":
            out[w["id"]] = Mount(w["id"], w["root_id"], "", Role.OWNER)
        elif w["trashed_at"] is None:
            out[w["id"]] = Mount(w["id"], w["root_id"], await owner_path(q, w["root_id"]),
                                 Role.OWNER)
    for s in await q.fetchall(
            "SELECT s.id, s.permission, s.mount_name, s.granted_seq, w.id AS workspace_id,"
            " w.root_id FROM shares s JOIN workspaces w ON w.root_id = s.file_id"
            " JOIN files f ON f.id = w.root_id"
            " WHERE s.grantee_id = ? AND f.trashed_at IS NULL", (user_id,)):
        out[s["workspace_id"]] = Mount(
            s["workspace_id"], s["root_id"], f"/{SHARED_ROOT}/{s['mount_name']}",
            Role(s["permission"]), s["id"], s["mount_name"], int(s["granted_seq"]))
    return out


async def view_path(q: Any, user_id: str, file: Row) -> str:
    """``file``'s path as ``user_id`` sees it (the caller has checked they may see it)."""
    mounts = await mounts_for(q, user_id)
    for m in mounts.values():
        if m.root_id == file["id"]:
            return m.prefix or "/"
    mount = mounts.get(file["workspace_id"])
    if mount is None:  # e.g. an item of the owner's trash seen by its owner
        return await owner_path(q, file["id"])
    rel = await workspace_path(q, file)
    return (mount.prefix + rel) or "/"


def is_shared_root(parts: list[str]) -> bool:
    return bool(parts) and name_key(parts[0]) == SHARED_ROOT_KEY


async def grantee_mount(q: Any, user_id: str, name: str) -> Mount | None:
    key = name_key(unicodedata.normalize("NFC", name))
    for m in (await mounts_for(q, user_id)).values():
        if m.mount_name is not None and name_key(m.mount_name) == key:
            return m
    return None


async def view_base(q: Any, user_id: str, parts: list[str]) -> tuple[Row | None, list[str]]:
    """Split a view path into (the folder to resolve the rest under, the rest).

    ``/Shared with me/<mount>/rest`` resolves under the shared folder; anything else under the
    user's own root. ``(None, [])`` is the virtual ``/Shared with me`` folder itself.

    Routes that write use :func:`permissions.writable_base`, which first refuses the names
    that sharing manages and checks the role as well.
    """
    from ..errors import NotFound  # local: errors must not depend on meta

    if is_shared_root(parts):
        if len(parts) == 1:
            return None, []
        mount = await grantee_mount(q, user_id, parts[1])
        if mount is None:
            raise NotFound("no such folder")
        root = await q.fetchone("SELECT * FROM files WHERE id = ?", (mount.root_id,))
        return root, parts[2:]
    root = await q.fetchone(
        "SELECT f.* FROM users u JOIN workspaces w ON w.id = u.workspace_id"
        " JOIN files f ON f.id = w.root_id WHERE u.id = ?", (user_id,))
    return root, parts
