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

from driveproto.names import name_key

from ..auth import new_id
from ..errors import BadRequest, Conflict, InsufficientStorage, NotFound
from ..paths import join_path, validate_name
from ..permissions import authorize_workspace_change
from .accounts import used_bytes, workspace_owner
from .db import Row, Tx
from .depth import check_depth, check_subtree_depth
from .journal import Actor, Journal
from .mounts import owner_path, workspace_path
from .workspaces import contains_shared_folder, is_workspace_root, kind_of, set_workspace


async def get_file(q: Any, file_id: str) -> Row | None:
    return await q.fetchone("SELECT * FROM files WHERE id = ?", (file_id,))


async def child_workspace(q: Any, parent: Row) -> str:
    """The workspace of a new item in ``parent``: a shared folder's own, else the parent's."""
    row = await q.fetchone("SELECT id FROM workspaces WHERE root_id = ? AND kind = 'shared'",
                           (parent["id"],))
    return str(row["id"]) if row else str(parent["workspace_id"])


async def _check_quota_for_restore(tx: Tx, file: Row) -> None:
    """Trashed files do not count against the quota; bringing them back does."""
    owner = await workspace_owner(tx, file["workspace_id"])
    assert owner is not None  # every workspace has an owner (foreign key)
    back = await tx.fetchval(
        "SELECT COALESCE(SUM(size), 0) FROM files WHERE trash_root_id = ? AND is_directory = 0",
        (file["id"],), offload=True)
    if await used_bytes(tx, owner["id"]) + int(back) > owner["quota_bytes"]:
        raise InsufficientStorage("restoring this would exceed the owner's quota",
                                  quota=owner["quota_bytes"])


async def live_child(q: Any, parent_id: str, name: str) -> Row | None:
    return await q.fetchone(
        "SELECT * FROM files WHERE parent_id = ? AND name_key = ? AND trashed_at IS NULL",
        (parent_id, name_key(name)))


def _walk_sql(count: int) -> str:
    # The names come as a VALUES list (portable, unlike SQLite's json_each); each step is one
    # lookup in the (parent_id, name_key) index of live names.
    names = ", ".join(["(CAST(? AS INTEGER), ?)"] * count)
    return (
        f"WITH RECURSIVE part(i, key) AS (VALUES {names}),"
        " walk(id, i, is_directory) AS ("
        "  SELECT id, 0, is_directory FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, walk.i + 1, f.is_directory"
        "  FROM walk JOIN part ON part.i = walk.i"
        "  JOIN files f ON f.parent_id = walk.id AND f.name_key = part.key"
        "  AND f.trashed_at IS NULL WHERE walk.is_directory = 1)"
        " SELECT files.* FROM walk JOIN files ON files.id = walk.id ORDER BY walk.i")


async def walk(q: Any, root_id: str, parts: list[str]) -> list[Row]:
    """The live items along ``parts`` below ``root_id``, the root first, for as far as they
    exist: ``walk(...)[i]`` is the item at ``parts[:i]``. The walk goes on only through
    folders, so a file can only be last.

    One query for the whole path (issue 12, finding 4): a walk of a statement per level, made
    again for every prefix, was O(depth²) statements on the event loop's thread, and a 4 KB
    request 2,000 levels deep held the whole server for 20 s.
    """
    if not parts:
        root = await get_file(q, root_id)
        return [] if root is None else [root]
    params: list[Any] = []
    for i, part in enumerate(parts):
        params += [i, name_key(part)]
    return list(await q.fetchall(_walk_sql(len(parts)), (*params, root_id)))


async def resolve(q: Any, root_id: str, parts: list[str]) -> Row | None:
    """The live file at ``parts`` below ``root_id``, or None."""
    chain = await walk(q, root_id, parts)
    return chain[-1] if len(chain) == len(parts) + 1 else None


async def path_of(q: Any, file_id: str) -> str:
    """The full path in its owner's drive (the one walk up the tree lives in ``mounts``)."""
    return await owner_path(q, file_id)


async def is_ancestor(q: Any, ancestor_id: str, file_id: str) -> bool:
    row = await q.fetchone(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "  SELECT id, parent_id FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.parent_id FROM files f JOIN up ON f.id = up.parent_id"
        "  WHERE up.id != ?)"  # no need to climb past it
        " SELECT 1 FROM up WHERE id = ?", (file_id, ancestor_id, ancestor_id))
    return row is not None


def _child_path(parent: Row, parent_path: str, child: Row) -> str:
    """``child``'s path in its workspace, from its parent's path in the parent's: a shared
    folder's children start its own workspace's paths afresh."""
    prefix = parent_path if child["workspace_id"] == parent["workspace_id"] else ""
    return f"{prefix}/{child['name']}"


async def live_subtree_with_paths(q: Any, file: Row) -> list[Row]:
    """``file`` and every live item below it, parents first, each with ``wpath``: its path in
    its own workspace. One walk down, however deep, instead of one walk up per item (which
    made journalling a deep subtree O(depth²))."""
    return list(await q.fetchall(
        "WITH RECURSIVE down(id, ws, path, depth) AS ("
        "  SELECT id, workspace_id, ?, 0 FROM files WHERE id = ?"
        "  UNION ALL SELECT f.id, f.workspace_id,"
        "  CASE WHEN f.workspace_id = down.ws THEN down.path ELSE '' END || '/' || f.name,"
        "  down.depth + 1 FROM files f JOIN down ON f.parent_id = down.id"
        "  WHERE f.trashed_at IS NULL)"
        " SELECT files.*, down.path AS wpath FROM files JOIN down ON files.id = down.id"
        " ORDER BY down.depth, files.name_key", (await workspace_path(q, file), file["id"]),
        offload=True))


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

    async def ensure_folders(self, tx: Tx, root: Row, parts: list[str], actor: Actor,
                             below: int = 0) -> tuple[Row, bool]:
        """Walk ``parts`` below ``root``, creating missing folders; return (last, created_any).

        ``below``: how many levels the caller puts under the last folder, counted (with the
        folders created) against ``MAX_DEPTH``. The walk is one query and each new folder's
        path is its parent's plus its name, so the cost is linear in the depth.
        """
        chain = await walk(tx, root["id"], parts)
        for i, row in enumerate(chain[1:]):
            if not row["is_directory"]:
                raise Conflict(f"{join_path(parts[: i + 1])} is a file, not a folder",
                               code="not_a_folder")
        node, missing = chain[-1], parts[len(chain) - 1:]
        if missing or below:
            await check_depth(tx, root, len(parts) + below)
        if not missing:
            return node, False
        path = await workspace_path(tx, node)
        for part in missing:
            child = await self._insert(tx, node, part, True)
            path = _child_path(node, path, child)
            await self.journal.record(tx, child, "create", actor, path=path)
            node = child
        return node, True

    async def create_folder(self, tx: Tx, root: Row, parts: list[str], actor: Actor) -> Row:
        """Create the folder at ``parts`` (parents as needed); 409 if the name is taken."""
        if not parts:
            raise Conflict("the root folder already exists", code="exists")
        parent, _ = await self.ensure_folders(tx, root, parts[:-1], actor, below=1)
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
        parent, _ = await self.ensure_folders(tx, root, parts[:-1], actor, below=1)
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
        # Refuse a folder into itself before creating any parent folder: it is on the walk to
        # the destination, or (the destination's folder existing) above where the walk began.
        chain = await walk(tx, root["id"], dest_parts[:-1])
        found = len(chain) == len(dest_parts)
        if any(node["id"] == file["id"] for node in chain) or (
                file["is_directory"] and found and await is_ancestor(
                    tx, file["id"], chain[-1]["id"])):
            raise BadRequest("cannot move a folder into itself", code="invalid_move")
        # A rename in place changes no depth; elsewhere the item and what is below it must fit.
        in_place = found and chain[-1]["id"] == file["parent_id"]
        parent, _ = await self.ensure_folders(tx, root, dest_parts[:-1], actor,
                                              below=0 if in_place else 1)
        if not in_place:
            await check_subtree_depth(tx, file, parent)
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
        if await kind_of(tx, target_ws) == "shared" and await contains_shared_folder(tx, file):
            raise Conflict("a shared folder cannot be moved into another shared folder",
                           code="nested_share")
        if target_ws != file["workspace_id"] and not await is_workspace_root(tx, file):
            await authorize_workspace_change(tx, actor.user_id, file["workspace_id"], target_ws)
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
        await set_workspace(tx, file, target_ws)
        moved = await get_file(tx, file["id"])
        assert moved is not None
        await self.journal.record_subtree(tx, await live_subtree_with_paths(tx, moved),
                                          "create", actor)
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
            (file["id"], tx.now, file["id"], actor.user_id), offload=True)
        await tx.execute("UPDATE files SET trashed_path = ? WHERE id = ?", (path, file["id"]))
        row = await get_file(tx, file["id"])
        assert row is not None
        await self.journal.record(tx, row, "delete", actor)

    async def restore(self, tx: Tx, file: Row, root: Row, actor: Actor) -> Row:
        """Bring a trashed item back to its old path (parents recreated, name made unique).

        It takes the workspace of the folder it lands in, with everything below it: its old
        folder may be gone, or no longer in the shared folder it was in, and an item kept in a
        shared workspace under a private folder would send its owner's later edits to everyone
        the workspace is shared with, while missing from the owner's own snapshot (issue 12,
        finding 6). Those who follow the old workspace saw it deleted when it was trashed;
        those who follow the new one see it restored, parents first.
        """
        if file["trashed_at"] is None or file["trash_root_id"] != file["id"]:
            raise NotFound("no such item in the trash")
        old_parts = [p for p in (file["trashed_path"] or "/").split("/") if p]
        parent = await get_file(tx, file["parent_id"])
        if parent is None or parent["trashed_at"] is not None:
            parent, _ = await self.ensure_folders(tx, root, old_parts[:-1], actor, below=1)
        else:  # its folder may have moved deeper since
            await check_depth(tx, parent, 1)
        await check_subtree_depth(tx, file, parent, restoring=True)
        await _check_quota_for_restore(tx, file)
        target_ws = await child_workspace(tx, parent)
        if target_ws != file["workspace_id"]:
            if await kind_of(tx, target_ws) == "shared" and await contains_shared_folder(
                    tx, file):
                raise Conflict("this would put a shared folder inside another shared folder;"
                               " move or unshare the folder it would land in, then restore",
                               code="nested_share")
            await set_workspace(tx, file, target_ws)
        name = await self._free_name(tx, parent["id"], file["name"])
        await tx.execute("UPDATE files SET parent_id = ?, name = ?, name_key = ? WHERE id = ?",
                         (parent["id"], name, name_key(name), file["id"]))
        await tx.execute(
            "UPDATE files SET trashed_at = NULL, trash_root_id = NULL, trashed_by = NULL,"
            " trashed_path = NULL WHERE trash_root_id = ?", (file["id"],), offload=True)
        restored = await get_file(tx, file["id"])
        assert restored is not None
        # Journal every restored item, parents first, so a device can recreate the subtree.
        await self.journal.record_subtree(tx, await live_subtree_with_paths(tx, restored),
                                          "restore", actor)
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
        ids = [r["id"] for r in await tx.fetchall(f"{down} SELECT id FROM down", (file["id"],),
                                                  offload=True)]
        # One statement, so the parent/child foreign keys are checked only once all are gone.
        await tx.execute(f"{down} DELETE FROM files WHERE id IN (SELECT id FROM down)",
                         (file["id"],), offload=True)
        return ids
