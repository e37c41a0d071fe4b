"""The file tree: lookups, and the units of work that change it (each one transaction, journalled).

Folders are files with ``is_directory``. A file points at its parent, so moving a folder is one
row update and its children follow. Names are unique per folder by ``name_key`` (case-folded
NFC) among live files, enforced by a partial unique index as well as checked here (the check
gives a clear 409; the index makes a race impossible).

Trash: trashing an item marks it and every live descendant with ``trashed_at`` and
``trash_root_id`` (the item the user trashed); restore clears exactly those rows, so items the
user had trashed one by one before stay in the trash.
"""

from __future__ import annotations

from typing import Any

from ..auth import new_id
from ..errors import BadRequest, Conflict, Forbidden, InsufficientStorage, NotFound
from ..paths import join_path, name_key, validate_name
from ..sync.journal import Actor, Journal
from .db import Row, Tx
from .mounts import owner_path, workspace_path


async def get_file(q: Any, file_id: str) -> Row | None:
    return await q.fetchone("SELECT * FROM files WHERE id = ?", (file_id,))


async def child_workspace(q: Any, parent: Row) -> str:
    """The workspace of a new item in ``parent``: a shared folder's own, else the parent's."""
    row = await q.fetchone("SELECT id FROM workspaces WHERE root_id = ? AND kind = 'shared'",
                           (parent["id"],))
    return str(row["id"]) if row else str(parent["workspace_id"])


async def _check_quota_for_restore(tx: Tx, file: Row) -> None:
    """Trashed files do not count against the quota; bringing them back does."""
    owner = await tx.fetchone(
        "SELECT u.id, u.quota_bytes FROM workspaces w JOIN users u ON u.id = w.owner_id"
        " WHERE w.id = ?", (file["workspace_id"],))
    back = await tx.fetchval(
        "SELECT COALESCE(SUM(size), 0) FROM files WHERE trash_root_id = ? AND is_directory = 0",
        (file["id"],))
    from .accounts import used_bytes  # accounts imports nothing from here; keep it that way
    if await used_bytes(tx, owner["id"]) + int(back) > owner["quota_bytes"]:
        raise InsufficientStorage("restoring this would exceed the owner's quota",
                                  quota=owner["quota_bytes"])


async def _kind(q: Any, workspace_id: str) -> str:
    return str(await q.fetchval("SELECT kind FROM workspaces WHERE id = ?", (workspace_id,)))


async def _owner(q: Any, workspace_id: str) -> str:
    return str(await q.fetchval("SELECT owner_id FROM workspaces WHERE id = ?", (workspace_id,)))


async def _contains_shared_folder(q: Any, file: Row) -> bool:
    row = await q.fetchone(
        "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
        "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)"
        " SELECT 1 FROM workspaces w JOIN down ON w.root_id = down.id WHERE w.kind = 'shared'"
        " LIMIT 1", (file["id"],))
    return row is not None


async def _is_workspace_root(q: Any, file: Row) -> bool:
    """A shared folder's own row stays in its owner's tree when it moves there."""
    return await q.fetchone("SELECT 1 FROM workspaces WHERE root_id = ?", (file["id"],)) \
        is not None


async def live_child(q: Any, parent_id: str, name: str) -> Row | None:
    return await q.fetchone(
        "SELECT * FROM files WHERE parent_id = ? AND name_key = ? AND trashed_at IS NULL",
        (parent_id, name_key(name)))


async def resolve(q: Any, root_id: str, parts: list[str]) -> Row | None:
    """The live file at ``parts`` below ``root_id``, or None."""
    node = await get_file(q, root_id)
    for part in parts:
        if node is None or not node["is_directory"]:
            return None
        node = await live_child(q, node["id"], part)
    return node


async def path_of(q: Any, file_id: str) -> str:
    """The full path in its owner's drive (the one walk up the tree lives in ``mounts``)."""
    return await owner_path(q, file_id)


async def is_ancestor(q: Any, ancestor_id: str, file_id: str) -> bool:
    row = await q.fetchone(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "  SELECT id, parent_id FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id FROM files f JOIN up ON f.id = up.parent_id)"
        " SELECT 1 FROM up WHERE id = ?", (file_id, ancestor_id))
    return row is not None


async def list_children(q: Any, folder_id: str, limit: int, after: str | None) -> list[Row]:
    """Live children ordered by name key, starting after the name key ``after`` (paging)."""
    return await q.fetchall(
        "SELECT * FROM files WHERE parent_id = ? AND trashed_at IS NULL AND name_key > ?"
        " AND (is_directory = 1 OR version > 0)"  # a file whose first upload is pending is hidden
        " ORDER BY name_key LIMIT ?", (folder_id, after or "", limit))


class Tree:
    """Mutations of the tree. Each public method is one transaction and journals what it did."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def _insert(self, tx: Tx, parent: Row, name: str, is_directory: bool) -> Row:
        file_id = new_id("f")
        workspace_id, parent_id = await child_workspace(tx, parent), parent["id"]
        await tx.execute(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, checksum, created_at, modified_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (file_id, workspace_id, parent_id, name, name_key(name), int(is_directory),
             1 if is_directory else 0, 0, None, tx.now, tx.now))
        row = await get_file(tx, file_id)
        assert row is not None
        return row

    async def ensure_folders(self, tx: Tx, root: Row, parts: list[str], actor: Actor
                             ) -> tuple[Row, bool]:
        """Walk ``parts`` below ``root``, creating missing folders; return (last, created_any)."""
        node, created = root, False
        for i, part in enumerate(parts):
            child = await live_child(tx, node["id"], part)
            if child is None:
                child = await self._insert(tx, node, part, True)
                await self.journal.record(tx, child, "create", actor)
                created = True
            elif not child["is_directory"]:
                raise Conflict(f"{join_path(parts[: i + 1])} is a file, not a folder",
                               code="not_a_folder")
            node = child
        return node, created

    async def create_folder(self, tx: Tx, root: Row, parts: list[str], actor: Actor) -> Row:
        """Create the folder at ``parts`` (parents as needed); 409 if the name is taken."""
        if not parts:
            raise Conflict("the root folder already exists", code="exists")
        parent, _ = await self.ensure_folders(tx, root, parts[:-1], actor)
        existing = await live_child(tx, parent["id"], parts[-1])
        if existing is not None:
            raise Conflict(f"{existing['name']!r} already exists in this folder", code="exists",
                           file_id=existing["id"], is_directory=bool(existing["is_directory"]))
        folder = await self._insert(tx, parent, parts[-1], True)
        await self.journal.record(tx, folder, "create", actor)
        return folder

    async def create_file(self, tx: Tx, root: Row, parts: list[str], actor: Actor) -> Row:
        """An empty file entry (version 0) that a first upload completes; parents as needed."""
        if not parts:
            raise BadRequest("the root is a folder", code="invalid_path")
        parent, _ = await self.ensure_folders(tx, root, parts[:-1], actor)
        existing = await live_child(tx, parent["id"], parts[-1])
        if existing is not None:
            raise Conflict(f"{existing['name']!r} already exists in this folder", code="exists",
                           file_id=existing["id"], is_directory=bool(existing["is_directory"]),
                           version=existing["version"])
        return await self._insert(tx, parent, parts[-1], False)

    async def move(self, tx: Tx, file: Row, root: Row, dest_parts: list[str], actor: Actor
                   ) -> Row:
        """Move/rename ``file`` to ``dest_parts`` inside the same workspace."""
        if file["parent_id"] is None:
            raise BadRequest("the root folder cannot be moved", code="invalid_move")
        if file["trashed_at"] is not None:
            raise NotFound("no such file")
        if not dest_parts:
            raise BadRequest("cannot move onto the root folder", code="invalid_move")
        old_path = await workspace_path(tx, file)
        new_name = validate_name(dest_parts[-1])
        # Refuse a folder into itself before creating any parent folder.
        probe = await resolve(tx, root["id"], dest_parts[:-1])
        if file["is_directory"] and probe is not None and await is_ancestor(
                tx, file["id"], probe["id"]):
            raise BadRequest("cannot move a folder into itself", code="invalid_move")
        for i in range(len(dest_parts) - 1):
            node = await resolve(tx, root["id"], dest_parts[: i + 1])
            if node is not None and node["id"] == file["id"]:
                raise BadRequest("cannot move a folder into itself", code="invalid_move")
        parent, _ = await self.ensure_folders(tx, root, dest_parts[:-1], actor)
        clash = await live_child(tx, parent["id"], new_name)
        if clash is not None and clash["id"] != file["id"]:
            raise Conflict(f"{clash['name']!r} already exists in the destination folder",
                           code="exists", file_id=clash["id"])
        if parent["id"] == file["parent_id"] and new_name == file["name"]:
            return file  # nothing to do; no journal entry
        await tx.execute(
            "UPDATE files SET parent_id = ?, name = ?, name_key = ? WHERE id = ?",
            (parent["id"], new_name, name_key(new_name), file["id"]))
        target_ws = await child_workspace(tx, parent)
        if await _kind(tx, target_ws) == "shared" and await _contains_shared_folder(tx, file):
            raise Conflict("a shared folder cannot be moved into another shared folder",
                           code="nested_share")
        if target_ws != file["workspace_id"] and not await _is_workspace_root(tx, file):
            owners = {await _owner(tx, file["workspace_id"]), await _owner(tx, target_ws)}
            if owners != {actor.user_id}:
                raise Forbidden("only the owner can move items into or out of a shared folder",
                                code="forbidden")
            return await self._move_across(tx, file, target_ws, old_path, actor)
        moved = await get_file(tx, file["id"])
        assert moved is not None
        await self.journal.record(tx, moved, "move", actor, old_path=old_path)
        return moved

    async def _move_across(self, tx: Tx, file: Row, target_ws: str, old_path: str,
                           actor: Actor) -> Row:
        """Into or out of a shared folder: the subtree changes workspace. Those who follow the
        old workspace see a delete, those who follow the new one see it appear (parents first),
        as in Dropbox."""
        await self.journal.record(tx, file, "delete", actor, path=old_path)
        rows = await tx.fetchall(
            "WITH RECURSIVE down(id, depth) AS (SELECT ?, 0 UNION ALL"
            "  SELECT f.id, down.depth + 1 FROM files f JOIN down ON f.parent_id = down.id)"
            " SELECT id FROM down ORDER BY depth", (file["id"],))
        ids = [r["id"] for r in rows]
        await tx.execute(
            "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
            "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)"
            " UPDATE files SET workspace_id = ? WHERE id IN (SELECT id FROM down)",
            (file["id"], target_ws))
        for file_id in ids:
            row = await get_file(tx, file_id)
            assert row is not None
            if row["trashed_at"] is None:
                await self.journal.record(tx, row, "create", actor)
        moved = await get_file(tx, file["id"])
        assert moved is not None
        return moved

    async def trash(self, tx: Tx, file: Row, actor: Actor) -> None:
        if file["parent_id"] is None:
            raise BadRequest("the root folder cannot be deleted", code="invalid_delete")
        if file["trashed_at"] is not None:
            raise NotFound("no such file")
        path = await path_of(tx, file["id"])
        await tx.execute(
            "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
            "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id"
            "  WHERE f.trashed_at IS NULL)"
            " UPDATE files SET trashed_at = ?, trash_root_id = ?, trashed_by = ?"
            " WHERE id IN (SELECT id FROM down)",
            (file["id"], tx.now, file["id"], actor.user_id))
        await tx.execute("UPDATE files SET trashed_path = ? WHERE id = ?", (path, file["id"]))
        row = await get_file(tx, file["id"])
        assert row is not None
        await self.journal.record(tx, row, "delete", actor)

    async def restore(self, tx: Tx, file: Row, root: Row, actor: Actor) -> Row:
        """Bring a trashed item back to its old path (parents recreated, name made unique)."""
        if file["trashed_at"] is None or file["trash_root_id"] != file["id"]:
            raise NotFound("no such item in the trash")
        old_parts = [p for p in (file["trashed_path"] or "/").split("/") if p]
        parent = await get_file(tx, file["parent_id"])
        if parent is None or parent["trashed_at"] is not None:
            parent, _ = await self.ensure_folders(tx, root, old_parts[:-1], actor)
        await _check_quota_for_restore(tx, file)
        name = await self._free_name(tx, parent["id"], file["name"])
        await tx.execute("UPDATE files SET parent_id = ?, name = ?, name_key = ? WHERE id = ?",
                         (parent["id"], name, name_key(name), file["id"]))
        await tx.execute(
            "UPDATE files SET trashed_at = NULL, trash_root_id = NULL, trashed_by = NULL,"
            " trashed_path = NULL WHERE trash_root_id = ?", (file["id"],))
        # Journal every restored item, parents first, so a device can recreate the subtree.
        rows = await tx.fetchall(
            "WITH RECURSIVE down(id, depth) AS (SELECT ?, 0 UNION ALL"
            "  SELECT f.id, down.depth + 1 FROM files f JOIN down ON f.parent_id = down.id"
            "  WHERE f.trashed_at IS NULL)"
            " SELECT files.* FROM files JOIN down USING (id) ORDER BY down.depth, files.name_key",
            (file["id"],))
        for row in rows:
            await self.journal.record(tx, row, "restore", actor)
        restored = await get_file(tx, file["id"])
        assert restored is not None
        return restored

    async def _free_name(self, tx: Tx, parent_id: str, name: str) -> str:
        if await live_child(tx, parent_id, name) is None:
            return name
        stem, dot, ext = name.rpartition(".")
        if not stem:
            stem, dot, ext = name, "", ""
        for n in range(1, 10_000):
            suffix = " (restored)" if n == 1 else f" (restored {n})"
            candidate = f"{stem}{suffix}{dot}{ext}"
            if await live_child(tx, parent_id, candidate) is None:
                return validate_name(candidate)
        raise Conflict("no free name to restore into", code="exists")

    async def purge(self, tx: Tx, file: Row) -> list[str]:
        """Delete a trash item and everything below it for good; return the ids removed."""
        if file["trashed_at"] is None or file["trash_root_id"] != file["id"]:
            raise NotFound("no such item in the trash")
        down = ("WITH RECURSIVE down(id) AS (SELECT ? UNION ALL"
                "  SELECT f.id FROM files f JOIN down ON f.parent_id = down.id)")
        ids = [r["id"] for r in await tx.fetchall(f"{down} SELECT id FROM down", (file["id"],))]
        # One statement, so the parent/child foreign keys are checked only once all are gone.
        await tx.execute(f"{down} DELETE FROM files WHERE id IN (SELECT id FROM down)",
                         (file["id"],))
        return ids
