"""The operations that change the folder: download, mkdir, delete and move here, and the
conflicted copy (the local item renamed away, the server's brought to its name).

Each writes the state database only after its effect is durable on disk, and checks just
before replacing or removing anything that it is still what the round's scan saw: a file the
user saved meanwhile is never overwritten nor deleted (``FileChanged``: the next round plans
again from what is there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Any

from driveproto.blocks import BLOCK_SIZE, content_checksum

from .context import BATCH_FILES, SyncContext
from .errors import ApiError, AuthError
from .ignore import Ignore
from .links import TARGET_MAX, link_content, resolves_inside, symlink_stays_inside
from .localfs import (
    changed_below,
    read_links_leaving,
    remove_synced_part,
    rename_into,
    still_as_scanned,
    take_mode,
)
from .localtree import Scan, hash_local
from .planner import Node, Op
from .state import SyncedEntry
from .transfer import (
    BATCH_DOWNLOAD_MAX_FILE_BYTES,
    SMALL_FILE_BYTES,
    FileChanged,
    download_small,
    download_to_temp,
    read_local_block,
    temp_path_for,
    verified_small,
    write_from_local,
)

log = logging.getLogger(__name__)


async def is_as_scanned(ctx: SyncContext, path: str, local: Scan) -> bool:
    """Is the local item at ``path`` still what the scan saw (``localfs.still_as_scanned``)?"""
    return await asyncio.to_thread(still_as_scanned, ctx.root, ctx.os_path(path, local),
                                   local.items.get(path), ctx.scan_started_ns)


async def download(ctx: SyncContext, op: Op, local: Scan) -> None:
    node = ctx.state.remote_by_path(op.path)
    assert node is not None and node.file_id
    target = ctx.os_path(op.path, local)
    tmp, info = await fetch(ctx, op.path, node, target)
    try:
        if not await is_as_scanned(ctx, op.path, local):
            raise FileChanged(f"{op.path} changed locally during the download")
        if local.items.get(op.path) is not None and local.items[op.path].is_dir:
            raise IsADirectoryError(op.path)
        if info["symlink"]:
            tmp = await asyncio.to_thread(_as_symlink, ctx.root, tmp, target, op.path)
        else:
            await asyncio.to_thread(take_mode, tmp, target, info["executable"],
                                    ctx.modes.pop(op.path, None))
        await asyncio.to_thread(os.replace, tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    st = await asyncio.to_thread(target.lstat)
    ctx.own.wrote(target, st)
    with ctx.state.transaction():  # one commit, not two: thousands of files arrive at once
        ctx.state.put_remote(op.path, Node(False, info["checksum"], node.file_id,
                                           info["version"], None, info["size"],
                                           info["executable"], info["symlink"]))
        ctx.put_synced(SyncedEntry(op.path, False, node.file_id, info["version"],
                                   info["size"], st.st_mtime_ns, st.st_ino,
                                   info["checksum"], info["hashes"],
                                   executable=info["executable"], symlink=info["symlink"]))


def _as_symlink(root: Path, tmp: Path, target: Path, path: str) -> Path:
    """The downloaded content of a symlink (its target) made a link, under a temp name beside
    ``target``, ready to be renamed into place. A target that is absolute or leads out of the
    folder is not created (it would let whoever can write to a shared folder point this
    computer's programs anywhere): a per-file problem, retried with back-off."""
    with open(tmp, "rb") as f:
        raw = f.read(TARGET_MAX + 1)
    tmp.unlink()
    if len(raw) > TARGET_MAX:
        raise ApiError(422, "unsafe_symlink", f"{path}: a symbolic link's target is at "
                       f"most {TARGET_MAX} bytes: not created here")
    link_target = os.fsdecode(raw)
    if not symlink_stays_inside(path, link_target) or \
            not resolves_inside(root, target, link_target):
        raise ApiError(422, "unsafe_symlink", f"{path} is a symbolic link to "
                       f"{link_target!r}, outside the sync folder: not created here")
    link = temp_path_for(target)
    os.symlink(link_target, link)
    return link


def local_sources(ctx: SyncContext) -> dict[str, tuple[Path, int]]:
    """Block hash -> (file, offset) of the blocks the folder holds, built once a round (not per
    file: the index spans every synced file)."""
    if ctx.sources is None:
        ctx.sources = {h: (ctx.root / p.lstrip("/"), off)
                       for h, (p, off) in ctx.state.block_sources().items()}
        ctx.single = {content_checksum([h]): h for h in ctx.sources}
    return ctx.sources


async def prefetch_small(ctx: SyncContext, ops: list[Op]) -> None:
    """Fetch the content of the group's small files with one request per ``BATCH_FILES``
    (instead of one each); :func:`fetch` takes them from memory. Files the folder already
    holds a block of are left to the local copy."""
    local_sources(ctx)
    ctx.prefetched = {}
    wanted: list[Node] = []
    for op in ops:
        node = ctx.state.remote_by_path(op.path)
        if node is not None and node.file_id and node.checksum and \
                0 < node.size <= BATCH_DOWNLOAD_MAX_FILE_BYTES and \
                node.checksum not in ctx.single:
            wanted.append(node)
    for i in range(0, len(wanted), BATCH_FILES):
        chunk = wanted[i:i + BATCH_FILES]
        try:
            got = await ctx.remote.content_batch([n.file_id for n in chunk if n.file_id])
        except AuthError:
            raise
        except ApiError as exc:
            # An older server without the route, or a failure of the batch as a whole: these
            # files come one by one instead (each reporting its own error, if any).
            log.warning("batch download failed (%s); fetching files one by one", exc)
            continue
        for n in chunk:
            if n.file_id in got:
                ctx.prefetched[n.file_id] = got[n.file_id][1]


async def fetch(ctx: SyncContext, path: str, node: Node, target: Path
                ) -> tuple[Path, dict[str, Any]]:
    """Assemble the remote file in a temp file beside ``target``: from local blocks when
    possible, from a batch fetched beforehand or in one request for a small file, else
    block by block."""
    assert node.file_id is not None
    if node.symlink and node.size > TARGET_MAX:
        raise ApiError(422, "unsafe_symlink", f"{path} is a symbolic link with a target of "
                       f"{node.size} bytes: not created here")
    sources = local_sources(ctx)
    small = {"version": node.version, "checksum": node.checksum, "size": node.size,
             "executable": node.executable, "symlink": node.symlink}
    if node.size == 0 and node.checksum == content_checksum([]):
        return await write_from_local(b"", target), {**small, "hashes": ()}
    if node.checksum and node.size <= SMALL_FILE_BYTES:
        h = ctx.single.get(node.checksum)
        if h is not None:
            src, offset = sources[h]
            data = await asyncio.to_thread(read_local_block, src, offset, node.size, h)
            if data is not None:
                return await write_from_local(data, target), {**small, "hashes": (h,)}
        data = ctx.prefetched.pop(node.file_id, None)
        hashes = verified_small(data, node.checksum) if data is not None else None
        if data is not None and hashes is not None:
            return await write_from_local(data, target), {**small, "hashes": hashes}
        got = await download_small(ctx.remote, node.file_id, node.checksum, target)
        if got is not None:
            return got[0], {**small, "hashes": got[1]}
    synced = ctx.state.synced_entries().get(path)
    tmp, info = await download_to_temp(ctx.remote, node.file_id, target, sources,
                                       ctx.config.parallel_transfers,
                                       on_fetch=ctx.progress("downloading", path, node.size),
                                       base_blocks=synced.blocks if synced else (),
                                       base_version=synced.version if synced else None)
    return tmp, {"version": info["version"], "checksum": info["checksum"],
                 "size": info["size"], "hashes": tuple(b["hash"] for b in info["blocks"]),
                 "executable": bool(info.get("executable", node.executable)),
                 "symlink": bool(info.get("symlink", node.symlink))}


async def mkdir_local(ctx: SyncContext, op: Op, local: Scan) -> None:
    node = ctx.state.remote_by_path(op.path)
    target = ctx.os_path(op.path, local)
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    st = await asyncio.to_thread(target.stat)
    ctx.own.wrote(target, st)
    ctx.put_synced(SyncedEntry(op.path, True, node.file_id if node else None,
                               node.version if node else 0, 0, st.st_mtime_ns,
                               st.st_ino, None, ()))


async def delete_local(ctx: SyncContext, op: Op, local: Scan) -> None:
    target = ctx.os_path(op.path, local)
    if not await is_as_scanned(ctx, op.path, local):
        raise FileChanged(f"{op.path} changed locally; not deleting it")
    item = local.items.get(op.path)
    if item is not None and item.is_dir:
        ignore = await asyncio.to_thread(Ignore, ctx.root)
        changed = await asyncio.to_thread(changed_below, target, op.path, local, ignore,
                                          ctx.scan_started_ns, ctx.config.sync_symlinks)
        if changed is not None:
            raise FileChanged(f"{changed} changed locally; not deleting {op.path}")
        await asyncio.to_thread(remove_synced_part, target, op.path, ignore)
    elif item is not None:
        await asyncio.to_thread(target.unlink, missing_ok=True)
    ctx.own.wrote(target, None)
    ctx.state.drop_synced(op.path)


async def links_leaving(ctx: SyncContext, src: str, dst: str, on_disk_at: str, local: Scan
                        ) -> list[tuple[str, str]]:
    """Synced symlinks at or below ``src`` whose target would lead out of the folder once at or
    below ``dst`` (``localfs.read_links_leaving``). Most moves carry no link: one index query,
    no thread."""
    links = ctx.state.synced_links_below(src)
    if not links:
        return []
    return await asyncio.to_thread(read_links_leaving, ctx.root, links, src, dst, on_disk_at,
                                   local)


async def move_local(ctx: SyncContext, op: Op, local: Scan) -> None:
    assert op.src is not None
    leaving = await links_leaving(ctx, op.src, op.path, op.src, local)
    synced = ctx.state.synced_entries() if leaving else {}
    for p, target in leaving:
        link = ctx.os_path(p, local)
        try:
            here = (await asyncio.to_thread(link_content, link))[0]
        except OSError:
            here = None
        if ctx.state.remote_by_path(p) is None and synced[p].checksum == here:
            # Gone from the server (the device that moved the folder took it out, as
            # up.move_remote does): it goes here too, before the folder moves.
            await asyncio.to_thread(link.unlink)
            ctx.own.wrote(link, None)
            ctx.state.drop_synced(p)
            continue
        raise ApiError(422, "unsafe_symlink", f"moved on the server to {op.path}, where "
                       f"the symbolic link {p} (to {target!r}) would lead out of the "
                       "folder: not moved here")
    src, dst = ctx.os_path(op.src, local), ctx.os_path(op.path, local)
    await asyncio.to_thread(rename_into, src, dst)
    ctx.own.wrote(src, None)
    ctx.own.wrote(dst, await asyncio.to_thread(dst.lstat))
    ctx.state.move_synced(op.src, op.path)


async def same_content_cut_otherwise(ctx: SyncContext, op: Op, local: Scan) -> bool:
    """Is the local file of a planned conflict the server's content after all, cut by another
    chunking scheme (docs/chunking.md: a large file the server holds in fixed blocks and this
    device hashed by content)? Checksums alone cannot tell; hashing it the server's way can.
    If so it is recorded as synced (as ``record`` would) instead of becoming a copy."""
    node = ctx.state.remote_by_path(op.path)
    item = local.items.get(op.path)
    if node is None or item is None or node.is_dir or item.is_dir or node.symlink or \
            item.symlink or node.checksum is None or item.size != node.size or \
            item.size <= BLOCK_SIZE or item.executable != node.executable:
        return False
    checksum, blocks = await asyncio.to_thread(hash_local, ctx.os_path(op.path, local),
                                               node.checksum)
    if checksum != node.checksum or not await is_as_scanned(ctx, op.path, local):
        return False
    ctx.put_synced(SyncedEntry(op.path, False, node.file_id, node.version, item.size,
                               item.mtime_ns, item.inode, checksum, blocks,
                               executable=item.executable))
    log.info("%s: the same content as the server's, cut another way; recorded", op.path)
    return True


async def conflict(ctx: SyncContext, op: Op, local: Scan) -> None:
    assert op.copy is not None
    if await same_content_cut_otherwise(ctx, op, local):
        return
    here = ctx.os_path(op.path, local)
    try:  # the server's version, which takes the name, keeps the mode it had here
        st = await asyncio.to_thread(here.lstat)
        if stat.S_ISREG(st.st_mode):
            ctx.modes[op.path] = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        pass
    await asyncio.to_thread(rename_into, here, ctx.os_path(op.copy, local))
    ctx.state.drop_synced(op.path)
    log.warning("conflict: kept the local version of %s as %s", op.path, op.copy)
    node = ctx.state.remote_by_path(op.path)
    # Nothing is at op.path now; the folders above it are where the scan found them.
    moved = Scan(os_paths={k: v for k, v in local.os_paths.items()
                           if k != op.path and not k.startswith(op.path + "/")}, items={})
    try:
        if node is not None and node.is_dir:
            await mkdir_local(ctx, op, moved)
        elif node is not None:
            await download(ctx, op, moved)
    finally:
        ctx.modes.pop(op.path, None)  # for this download only, never a later file
