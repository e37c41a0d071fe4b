"""Sharing folders with people: the units of work behind the share routes.

Sharing a folder the first time turns it into a workspace of its own: everything below it moves
into the new workspace (one UPDATE), while the folder itself stays in its owner's tree as the
mount point. From then on its changes are journalled in that workspace, which the owner and
every recipient follow (see ``meta.mounts`` and ``sync.feed``). Unsharing keeps the workspace;
it simply stops being visible to that person.

A share ends in one of two ways: its owner revokes it, or its recipient leaves it (nobody
asked them before the folder appeared on their devices, so they must be able to drop it). Both
are the same change for the recipient's devices: the mount is gone, as a ``delete`` of the
mount folder in their feed, and nothing is deleted in the owner's tree.

Each share remembers ``granted_seq``, the position of the folder's journal when it was given.
Everything up to it happened while the recipient had no access, so the feed and notifications
never show it to them, also after a revoke and a re-share: a re-share is a new grant, which
reaches the recipient's devices as a fresh listing (see ``sync.views``).
"""

from __future__ import annotations

from typing import Any

from driveproto.names import name_key

from ..auth import new_id
from ..errors import BadRequest, Conflict, NotFound
from ..permissions import SHARE_ROLES, ShareAction, authorize_end_share, authorize_share
from .accounts import bump_share_epoch, user_by_email
from .db import Row, Tx
from .journal import Journal
from .mounts import owner_path
from .notifications import add_notification

PERMISSIONS = tuple(role.value for role in SHARE_ROLES)


async def shared_workspace_of(q: Any, folder_id: str) -> str | None:
    row = await q.fetchone("SELECT id FROM workspaces WHERE root_id = ? AND kind = 'shared'",
                           (folder_id,))
    return None if row is None else str(row["id"])


async def shares_of_folder(q: Any, folder_id: str) -> list[Row]:
    """The folder's shares, oldest first: ``id``, ``permission``, ``created_at`` and the
    recipient's ``user_id`` and ``email``."""
    return await q.fetchall(
        "SELECT s.id, s.permission, s.created_at, u.id AS user_id, u.email FROM shares s"
        " JOIN users u ON u.id = s.grantee_id WHERE s.file_id = ? ORDER BY s.created_at",
        (folder_id,))


async def sharing_of(q: Any, file_ids: list[str], now: float) -> dict[str, dict[str, int]]:
    """For the items of one listing page: how many people each is shared with and how many
    live links (not revoked, not expired) lead to it; items with neither are left out. Two
    grouped look-ups in the shares' and links' file indexes, whatever the page size."""
    found: dict[str, dict[str, int]] = {}
    for start in range(0, len(file_ids), 500):  # well under SQLite's bound on parameters
        chunk = file_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for row in await q.fetchall(
                f"SELECT file_id, COUNT(*) AS n FROM shares WHERE file_id IN ({marks})"
                " GROUP BY file_id", chunk):
            found.setdefault(row["file_id"], {"people": 0, "links": 0})["people"] = row["n"]
        for row in await q.fetchall(
                f"SELECT file_id, COUNT(*) AS n FROM links WHERE file_id IN ({marks})"
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
                " GROUP BY file_id", (*chunk, now)):
            found.setdefault(row["file_id"], {"people": 0, "links": 0})["links"] = row["n"]
    return found


async def _free_mount_name(tx: Tx, grantee_id: str, name: str) -> str:
    taken = {name_key(r["mount_name"]) for r in await tx.fetchall(
        "SELECT mount_name FROM shares WHERE grantee_id = ?", (grantee_id,))}
    candidate, n = name, 1
    while name_key(candidate) in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate


async def share_folder(tx: Tx, journal: Journal, owner_id: str, folder: Row, email: str,
                       permission: str) -> tuple[str, str]:
    """Share ``folder`` with the user ``email``; return (share id, mount name)."""
    if permission not in PERMISSIONS:
        raise BadRequest("permission must be 'view' or 'edit'", code="invalid_field",
                         field="permission")
    if not folder["is_directory"]:
        raise BadRequest("only folders can be shared with people; share a file with a link",
                         code="not_a_folder")
    if folder["parent_id"] is None:
        raise BadRequest("your whole drive cannot be shared; share a folder in it",
                         code="invalid_share")
    if folder["trashed_at"] is not None:
        raise NotFound("no such file")
    grantee = await user_by_email(tx, email)
    if grantee is None:
        raise NotFound(f"no user with the email {email!r}; they need an account first",
                       code="unknown_user")
    if grantee["id"] == owner_id:
        raise BadRequest("you cannot share a folder with yourself", code="invalid_share")
    owner = await tx.fetchone("SELECT workspace_id FROM users WHERE id = ?", (owner_id,))
    assert owner is not None  # the caller is the signed-in owner
    personal = owner["workspace_id"]
    workspace_id = await shared_workspace_of(tx, folder["id"])
    if folder["workspace_id"] != personal:
        raise Conflict("this folder is inside a shared folder; share that one instead",
                       code="nested_share")
    if workspace_id is None:
        inner = await tx.fetchone(
            "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
            "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)"
            " SELECT w.id FROM workspaces w JOIN down ON w.root_id = down.id"
            " WHERE w.kind = 'shared' AND down.id != ? LIMIT 1", (folder["id"], folder["id"]))
        if inner is not None:
            raise Conflict("this folder contains a shared folder; folders cannot be nested",
                           code="nested_share")
        workspace_id = new_id("w")
        await tx.execute(
            "INSERT INTO workspaces (id, owner_id, kind, root_id, created_at)"
            " VALUES (?,?, 'shared', ?, ?)", (workspace_id, owner_id, folder["id"], tx.now))
        await tx.execute(
            "WITH RECURSIVE down(id) AS (SELECT id FROM files WHERE parent_id = ? UNION ALL"
            "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)"
            " UPDATE files SET workspace_id = ? WHERE id IN (SELECT id FROM down)",
            (folder["id"], workspace_id))
    if await tx.fetchone("SELECT 1 FROM shares WHERE file_id = ? AND grantee_id = ?",
                         (folder["id"], grantee["id"])):
        raise Conflict("this folder is already shared with that person; change the permission"
                       " of the existing share instead", code="exists")
    share_id = new_id("sh")
    mount_name = await _free_mount_name(tx, grantee["id"], folder["name"])
    # Read in this transaction, so no entry can commit between this position and the grant.
    granted_seq = int(await tx.fetchval("SELECT seq FROM workspaces WHERE id = ?",
                                        (workspace_id,)))
    await tx.execute(
        "INSERT INTO shares (id, file_id, grantee_id, permission, created_by, created_at,"
        " mount_name, granted_seq) VALUES (?,?,?,?,?,?,?,?)",
        (share_id, folder["id"], grantee["id"], permission, owner_id, tx.now, mount_name,
         granted_seq))
    await add_notification(tx, user_id=grantee["id"], actor_id=owner_id, action="shared",
                           file_id=folder["id"], workspace_id=workspace_id,
                           path=f"/Shared with me/{mount_name}", is_directory=True)
    journal.touch(tx, grantee["workspace_id"])  # wake the recipient's devices now
    return share_id, mount_name


async def set_permission(tx: Tx, journal: Journal, owner_id: str, share_id: str,
                         permission: str) -> None:
    """The folder's owner changes what ``share_id`` allows (who may: ``permissions``)."""
    if permission not in PERMISSIONS:
        raise BadRequest("permission must be 'view' or 'edit'", code="invalid_field",
                         field="permission")
    share = await authorize_share(tx, owner_id, ShareAction.SET_PERMISSION, share_id)
    await tx.execute("UPDATE shares SET permission = ? WHERE id = ?", (permission, share_id))
    journal.touch(tx, share["grantee_workspace"])


async def revoke(tx: Tx, journal: Journal, share: Row) -> None:
    """The folder's owner takes ``share`` back (a row from ``permissions.authorize_share``)."""
    share_id = share["id"]
    await tx.execute("DELETE FROM shares WHERE id = ?", (share_id,))
    await bump_share_epoch(tx, share["file_id"], share["grantee_id"])  # its block grants die
    journal.touch(tx, share["grantee_workspace"])


async def leave(tx: Tx, journal: Journal, grantee_id: str, share: Row) -> None:
    """The recipient gives up ``share`` (a row from ``permissions.authorize_share``).

    The share row goes, exactly as on a revoke, so the recipient's devices drop the mount the
    same way; the owner's folder and everything in it stay as they are. The owner is told
    ("left"), at the folder's path in their drive.
    """
    await tx.execute("DELETE FROM shares WHERE id = ?", (share["id"],))
    await bump_share_epoch(tx, share["file_id"], grantee_id)  # as on a revoke
    folder = await tx.fetchone("SELECT id, trashed_at FROM files WHERE id = ?",
                               (share["file_id"],))
    if folder is not None and folder["trashed_at"] is None:
        await add_notification(tx, user_id=share["owner_id"], actor_id=grantee_id,
                               action="left", file_id=share["file_id"],
                               workspace_id=share["shared_workspace"],
                               path=await owner_path(tx, share["file_id"]), is_directory=True)
    journal.touch(tx, share["grantee_workspace"])  # their devices drop the mount now


async def end_share(tx: Tx, journal: Journal, user_id: str, share_id: str) -> str:
    """``DELETE /api/shares/{id}``: the recipient leaves, the owner revokes; anyone else gets
    404 (as for a share that does not exist; ``permissions.authorize_end_share`` decides).
    Returns ``"left"`` or ``"revoked"``."""
    action, share = await authorize_end_share(tx, user_id, share_id)
    if action is ShareAction.LEAVE:
        await leave(tx, journal, user_id, share)
        return "left"
    await revoke(tx, journal, share)
    return "revoked"
