"""The operations that change the server: upload (one file, or a batch of small ones), mkdir,
delete and move there, and what a refusal turns into.

A 409 ``version_conflict`` means the server moved on during the upload: the bytes stay in the
folder and the next round's plan decides (the same content is recorded, another becomes a
conflicted copy). A 403 means a folder shared with us for viewing only: the edit is kept as a
conflicted copy in our own space and the owner's version comes back. The synced record is
written only once the server committed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import posixpath
import stat

from driveproto.codes import GRANT_REVOKED
from driveproto.names import name_key
from driveproto.replies import ListedEntry, PathEntry

from . import down
from .batch_upload import BatchItem, upload_batch
from .context import RoundResult, SyncContext
from .errors import ApiError
from .localtree import Scan
from .planner import Node, Op, conflict_name, same
from .pull import pull
from .state import SyncedEntry
from .transfer import Uploaded, upload_file

log = logging.getLogger(__name__)


def remember(ctx: SyncContext, path: str, up: Uploaded) -> None:
    """Record a committed upload in both trees."""
    node = Node(False, up.checksum, up.file_id, up.version, None, up.size, up.executable,
                up.symlink)
    ctx.state.put_remote(path, node)
    ctx.put_synced(SyncedEntry(path, False, up.file_id, up.version, up.size, up.mtime_ns,
                               up.inode, up.checksum, up.blocks, executable=up.executable,
                               symlink=up.symlink))


def upload_target(ctx: SyncContext, op: Op) -> tuple[str | None, int | None]:
    """The file id and base version an upload of ``op`` goes on top of."""
    base = op.base
    current = ctx.state.remote_by_path(op.path)
    if base is not None and base.file_id and current is not None and \
            current.file_id == base.file_id:
        # The server may be at a later version with the very content we synced (a restore
        # of it, a chmod undone): the edit goes on top of that one, which loses nothing
        # (both stay in the history). Any other newer version is a real race: the stale
        # base gets a 409 and the plan is made again.
        if same(current, base):
            return current.file_id, current.version
        return base.file_id, base.version
    if current is not None and not current.is_dir:
        return current.file_id, current.version
    # A new file: base version 0 means "only if nobody created it meanwhile", so a race
    # with another device becomes a 409 and then a conflicted copy, never an overwrite.
    return None, 0


async def upload(ctx: SyncContext, op: Op, local: Scan) -> None:
    file_id, base_version = upload_target(ctx, op)
    synced = ctx.state.synced_entries().get(op.path) if op.base is not None else None
    base_blocks = synced.blocks if synced is not None and synced.file_id == file_id else ()
    for attempt in range(2):
        try:
            up = await upload_file(ctx.remote, ctx.os_path(op.path, local), op.path, file_id,
                                   base_version, ctx.config.parallel_transfers,
                                   on_bytes=ctx.progress("uploading", op.path,
                                                         local.items[op.path].size),
                                   receipts=ctx.state, base_blocks=base_blocks)
            break
        except ApiError as exc:
            if exc.status == 409 and exc.code == "version_conflict":
                await lost_race(ctx, op.path)
                return
            if exc.code == GRANT_REVOKED and attempt == 0:
                # The grant, not the permission, ended (a share re-made, a server upgrade):
                # a new upload-init decides, once more, right away.
                log.info("%s: upload grant ended (%s); asking for a new one", op.path, exc)
                continue
            if view_only_refusal(exc):
                await view_only(ctx, op.path, local)
                return
            raise
    remember(ctx, op.path, up)


def view_only_refusal(exc: ApiError) -> bool:
    """A 403 that means "you may not write here" (a folder shared to view only), as opposed to
    an upload grant that ended (``grant_revoked``: ask again, nothing is wrong with the file)."""
    return exc.status == 403 and exc.code != GRANT_REVOKED


async def view_only(ctx: SyncContext, path: str, local: Scan) -> None:
    """The server refused an upload: the file is in a folder shared with us for viewing.
    The edit is kept as a conflicted copy in our own space (the root of the folder, which
    the next round uploads as our own file) and the owner's version comes back under the
    original name."""
    day = datetime.date.today().isoformat()
    copy = conflict_name("/" + posixpath.basename(path), ctx.config.device_name, day,
                         taken=[*local.items, *ctx.state.remote_tree()])
    await down.conflict(ctx, Op("conflict", path, "view-only shared file", copy=copy), local)
    ctx.notice(copy, f"your edit of {path} (shared with you to view only) was kept here")


async def upload_many(ctx: SyncContext, ops: list[Op], local: Scan, out: RoundResult) -> None:
    """Upload a batch of small files in one grant, each result into ``out`` as it is known:
    done (or deferred to the next round: changed meanwhile) or failed."""
    items = []
    for op in ops:
        file_id, base_version = upload_target(ctx, op)
        items.append(BatchItem(op.path, ctx.os_path(op.path, local), file_id, base_version))
    results = await upload_batch(ctx.remote, items)
    with ctx.state.transaction():  # the batch's records in one commit, not one per file
        for op, res in zip(ops, results, strict=True):
            if isinstance(res, Uploaded):
                remember(ctx, op.path, res)
    for op, res in zip(ops, results, strict=True):
        if isinstance(res, Uploaded):
            out.ops.append(op)
        elif isinstance(res, ApiError) and res.status == 409 and \
                res.code == "version_conflict":
            await lost_race(ctx, op.path)
            out.ops.append(op)
        elif isinstance(res, ApiError) and view_only_refusal(res):
            await view_only(ctx, op.path, local)
            out.ops.append(op)
        elif isinstance(res, ApiError):
            out.errors[op.path] = str(res)
            ctx.state.set_error(op.path, str(res))
        else:
            out.ops.append(op)  # changed meanwhile: next round


async def lost_race(ctx: SyncContext, path: str) -> None:
    """The server moved on while we uploaded (409 ``version_conflict``). Our bytes stay in
    the folder; learn the server's state and let the next round's plan decide: the same
    content is just recorded, different content becomes a conflicted copy."""
    log.info("%s changed on the server during the upload; replanning", path)
    before = ctx.state.remote_by_path(path)
    await pull(ctx.state, ctx.remote)
    if ctx.state.remote_by_path(path) == before:
        await learn_own_version(ctx, path, before)


async def learn_own_version(ctx: SyncContext, path: str, known: Node | None) -> None:
    """The server is ahead of us and the feed said nothing: the newer version is this
    device's own (the feed leaves those out), committed by an upload whose answer never
    came back (a dropped connection, a kill). Ask the server for it. If this device
    uploaded it, its content came from this folder, so it becomes the synced record too
    (the next round sends whatever changed since on top of it, no conflicted copy of
    ourselves); anything else (a restore run from this device) is left to the plan."""
    if known is not None and known.file_id:
        file_id: str | None = known.file_id
    else:
        entry = await find_remote(ctx, path)
        if entry is None:
            await beside_server_twin(ctx, path)
            return
        file_id = entry["file_id"] if not entry["is_directory"] else None
    if file_id is None:
        return
    try:
        meta = await ctx.remote.metadata(file_id)
    except ApiError as exc:
        if exc.status in (403, 404):
            return
        raise
    if meta.get("path") != path or meta.get("trashed") or meta["is_directory"] or \
            meta["version"] <= (known.version if known is not None else 0):
        return
    node = Node(False, meta["checksum"], file_id, meta["version"], None, meta["size"],
                bool(meta.get("executable")), bool(meta.get("symlink")))
    newest = meta["versions"][0] if meta.get("versions") else None
    with ctx.state.transaction():
        ctx.state.put_remote(path, node)
        mine = ctx.config.device_id is not None and newest is not None and \
            newest["device_id"] == ctx.config.device_id and \
            newest["version"] == meta["version"] and newest["restored_from"] is None
        if mine:
            old = ctx.state.synced_entries().get(path)
            # No stat: the file is hashed again next round, and its content decides.
            ctx.state.put_synced(SyncedEntry(path, False, file_id, meta["version"],
                                             meta["size"], 0, old.inode if old else None,
                                             meta["checksum"], (), executable=node.executable,
                                             symlink=node.symlink))
    log.info("%s: learned version %d from the server%s", path, meta["version"],
             " (made by this device)" if mine else "")


async def mkdir_remote(ctx: SyncContext, op: Op, local: Scan) -> None:
    entry: PathEntry | ListedEntry
    try:
        entry = await ctx.remote.mkdir(op.path)
    except ApiError as exc:
        if exc.status != 409:
            raise
        found = await find_remote(ctx, op.path)
        if found is None or not found["is_directory"]:
            raise
        entry = found
    ctx.state.put_remote(op.path, Node(True, None, entry["file_id"], entry["version"], None, 0))
    item = local.items.get(op.path)
    ctx.put_synced(SyncedEntry(op.path, True, entry["file_id"], entry["version"], 0,
                               item.mtime_ns if item else 0, item.inode if item else None,
                               None, ()))


async def beside_server_twin(ctx: SyncContext, path: str) -> None:
    """A new file the server refuses because it has an item whose name it takes for this
    one's (``F2.TXT`` here, ``f2.txt`` there) that this computer leaves alone (a link
    leading out of the folder, say), so the scan never saw the pair: keep both, as for
    twins in one folder, by renaming this one."""
    from .localtree import CASE_CONFLICT, NameTwin, rename_twins

    parent, _, name = path.rpartition("/")
    twins = [e for e in await ctx.remote.list_folder(parent or "/")
             if name_key(e["name"]) == name_key(name) and e["name"] != name]
    target = ctx.os_path(path)
    try:
        st = await asyncio.to_thread(target.lstat)
    except FileNotFoundError:
        return
    if not twins:
        return
    root = str(ctx.root)
    kept = str(target.parent / twins[0]["name"])[len(root):]
    twin = NameTwin(path, str(target)[len(root):], kept, st.st_ino,
                    stat.S_ISDIR(st.st_mode), CASE_CONFLICT)
    for renamed in await asyncio.to_thread(rename_twins, ctx.root, [twin]):
        ctx.notice(renamed.path, renamed.notice)


async def find_remote(ctx: SyncContext, path: str) -> ListedEntry | None:
    """The server's listing entry at ``path``, if any."""
    parent, _, name = path.rpartition("/")
    for e in await ctx.remote.list_folder(parent or "/"):
        if e["name"] == name:
            return e
    return None


async def _delete_id(ctx: SyncContext, file_id: str) -> None:
    try:
        await ctx.remote.delete(file_id)
    except ApiError as exc:
        if exc.status != 404:  # gone already: what we wanted
            raise


async def delete_remote(ctx: SyncContext, op: Op, local: Scan) -> None:
    del local
    node = ctx.state.remote_by_path(op.path)
    if node is not None and node.file_id:
        await _delete_id(ctx, node.file_id)
    ctx.state.drop_remote(op.path)
    ctx.state.drop_synced(op.path)


async def move_remote(ctx: SyncContext, op: Op, local: Scan) -> None:
    assert op.src is not None
    node = ctx.state.remote_by_path(op.src)
    assert node is not None and node.file_id
    # A link that the move would make lead out of the folder stays here only (as the scan
    # already treats it): it leaves the server first, to the trash, so that no other
    # computer gets a link to outside its folder.
    for p, target in await down.links_leaving(ctx, op.src, op.path, op.path, local):
        gone = ctx.state.remote_by_path(p)
        if gone is not None and gone.file_id:
            await _delete_id(ctx, gone.file_id)
        ctx.state.drop_remote(p)
        ctx.state.drop_synced(p)
        ctx.notice(op.path + p[len(op.src):], f"a symbolic link to {target!r}, which "
                   "leads out of the folder from here: kept on this computer only")
    entry = await ctx.remote.move(node.file_id, op.path)
    ctx.state.move_remote(op.src, op.path)
    ctx.state.move_synced(op.src, op.path)
    synced = ctx.state.synced_entries().get(op.path)
    item = local.items.get(op.path)
    if synced is not None and item is not None:
        ctx.put_synced(SyncedEntry(op.path, synced.is_dir, synced.file_id,
                                   entry.get("version", synced.version), synced.size,
                                   item.mtime_ns, item.inode, synced.checksum, synced.blocks,
                                   executable=synced.executable, symlink=synced.symlink))
