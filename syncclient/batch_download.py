"""Many small downloaded files put into the folder together: the mirror of ``batch_upload.py``.

``down.prefetch_small`` fetches the content of a round's small files a hundred per request;
this module writes those already in memory. One by one (``down.download``) each file cost six
worker-thread hand-offs, an fsync in a row with every other file's and a state commit; here a
batch is one worker-thread job and one state transaction, in the same order of effects:

1. each file's bytes (verified against the checksum the feed announced) into a fresh temp file
   beside its target, all of them, then all fsynced, a few at a time in parallel (the file
   system commits concurrent fsyncs together);
2. each target checked, just before it is replaced, to be still what the round's scan saw
   (``localfs.still_as_scanned``: a file saved meanwhile is never overwritten), given its mode
   (``localfs.take_mode``: never wider than it was), recorded as our own write (so the watcher
   does not wake a round for it), then renamed into place;
3. every folder that gained an entry (and those a new folder was made in) fsynced once;

   a batch of many files on Linux (ext4, XFS, Btrfs: ``driveproto.durable``) replaces the
   fsyncs of steps 1 and 3 by one ``syncfs`` of the folder's file system each, when every temp
   file is on that file system (not on a disk mounted inside the folder): the same order of
   effects with two waits for the disk instead of two per file;
4. then, and only then, one state transaction records them all: a crash at any point leaves
   each file either as it was or complete under its name, and never a record of a file that
   is not durably there (which the next round would take for a deletion).

Symlinks, folders in the way, content that fails its checksum and files not prefetched are
left to ``down.download``, one by one.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from driveproto.durable import SYNCFS_FROM, open_directory, syncfs, syncfs_works

from .context import RoundResult, SyncContext
from .localfs import still_as_scanned, take_mode
from .localtree import LocalFile, Scan
from .planner import Node, Op
from .state import SyncedEntry
from .transfer import FileChanged, temp_path_for, verified_small

FSYNC_THREADS = 8  # fsyncs in flight at once: they wait on the disk, not on the CPU


@dataclass
class _Item:
    op: Op
    node: Node
    target: Path
    data: bytes
    hashes: tuple[str, ...]
    seen: LocalFile | None
    was_mode: int | None
    tmp: Path | None = None
    st: os.stat_result | None = None
    failed: BaseException | None = None


async def write_prefetched(ctx: SyncContext, ops: list[Op], local: Scan,
                           out: RoundResult) -> list[Op]:
    """Put the files of ``ops`` whose content was prefetched into the folder, as a batch (see
    the module docstring); each done or deferred one goes into ``out``. Returns the operations
    left for ``down.download``."""
    items: list[_Item] = []
    rest: list[Op] = []
    for op in ops:
        node = ctx.state.remote_by_path(op.path)
        seen = local.items.get(op.path)
        data = ctx.prefetched.get(node.file_id) if node is not None and node.file_id else None
        hashes = verified_small(data, node.checksum) \
            if data is not None and node is not None and node.checksum else None
        if node is None or data is None or hashes is None or node.symlink or \
                (seen is not None and seen.is_dir):
            rest.append(op)
            continue
        assert node.file_id is not None
        del ctx.prefetched[node.file_id]
        items.append(_Item(op, node, ctx.os_path(op.path, local), data, hashes, seen,
                           ctx.modes.pop(op.path, None)))
    if not items:
        return rest
    await asyncio.to_thread(_put_all, ctx, items)
    written = [it for it in items if it.failed is None and it.st is not None]
    with ctx.state.transaction():  # after every file and folder entry is durable
        for it in written:
            assert it.st is not None and it.node.file_id is not None
            n = it.node
            ctx.state.put_remote(it.op.path, Node(False, n.checksum, n.file_id, n.version, None,
                                                  n.size, n.executable, False))
            ctx.put_synced(SyncedEntry(it.op.path, False, n.file_id, n.version, n.size,
                                       it.st.st_mtime_ns, it.st.st_ino, n.checksum, it.hashes,
                                       executable=n.executable))
            ctx.state.clear_error(it.op.path)
    for it in items:
        if it.failed is not None and not isinstance(it.failed, (FileChanged, OSError)):
            raise it.failed
        out.ops.append(it.op)  # done, or deferred: the next round sees what is there
    return rest


def _put_all(ctx: SyncContext, items: list[_Item]) -> None:
    """Steps 1–3 of the module docstring, in a worker thread. A failure of one file (the folder
    changed under it, a permission) is kept in its ``failed``; the others go on."""
    folders: set[Path] = set()
    fds: list[tuple[_Item, int]] = []
    # For a syncfs, opened before the writes so that it reports their errors (durable.py).
    root_fd = open_directory(ctx.root) if len(items) >= SYNCFS_FROM else None
    try:
        for it in items:
            try:
                _make_parents(it.target.parent, folders)
                it.tmp = temp_path_for(it.target)
                # 0o666 less the umask, as any new file; take_mode gives a replaced file its mode.
                fd = os.open(it.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                fds.append((it, fd))
                view = memoryview(it.data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                it.failed = exc
        if root_fd is not None and _one_flush(ctx, fds):
            while fds:
                os.close(fds.pop()[1])
            _flush_or_fail(ctx.root, root_fd, items)  # every byte before any name
            for it in items:
                if it.failed is None:
                    _rename_into_place(ctx, it, folders)
            _flush_or_fail(ctx.root, root_fd, items)  # every name before the record
            return
        with ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync") as pool:
            for (it, _), done in zip(fds, pool.map(_fsync, (fd for it, fd in fds)), strict=True):
                if done is not None and it.failed is None:
                    it.failed = done
            fds.clear()  # closed by _fsync
            for it in items:
                if it.failed is None:
                    _rename_into_place(ctx, it, folders)
            for folder, done in zip(folders, pool.map(_fsync_dir, folders), strict=True):
                if done is not None:  # the entries in it are not known durable: not recorded
                    for it in items:
                        if it.failed is None and it.target.parent == folder:
                            it.failed = done
    finally:
        for _, fd in fds:
            os.close(fd)
        if root_fd is not None:
            os.close(root_fd)
        for it in items:
            if it.tmp is not None and (it.failed is not None or it.st is None):
                try:
                    os.unlink(it.tmp)
                except FileNotFoundError:
                    pass


def _one_flush(ctx: SyncContext, fds: list[tuple[_Item, int]]) -> bool:
    """Whether one syncfs of ``root``'s file system can stand in for these files' fsyncs: many
    of them, all on that file system, and one syncfs can flush (step 3 of the docstring)."""
    if len(fds) < SYNCFS_FROM:
        return False
    root = ctx.root
    try:
        device = os.stat(root).st_dev
        if any(os.fstat(fd).st_dev != device for _, fd in fds):
            return False
    except OSError:
        return False
    known = ctx.syncfs_ok.get(device)
    if known is None:
        known = ctx.syncfs_ok[device] = syncfs_works(root)
    return known


def _flush_or_fail(root: Path, fd: int, items: list[_Item]) -> None:
    """syncfs; if it fails (a full disk, an I/O error), no file still going is known durable:
    each fails with that error, and is neither recorded nor left as a temp file."""
    try:
        syncfs(root, fd=fd)
    except OSError as exc:
        for it in items:
            if it.failed is None:
                it.failed = exc


def _rename_into_place(ctx: SyncContext, it: _Item, folders: set[Path]) -> None:
    assert it.tmp is not None
    try:
        if not still_as_scanned(ctx.root, it.target, it.seen, ctx.scan_started_ns):
            raise FileChanged(f"{it.op.path} changed locally during the download")
        take_mode(it.tmp, it.target, it.node.executable, it.was_mode)
        st = os.lstat(it.tmp)  # the same inode, size and mtime once renamed
        ctx.own.wrote(it.target, st)  # before the rename: the watcher may report it at once
        os.replace(it.tmp, it.target)
        it.st = st
        folders.add(it.target.parent)
    except (FileChanged, OSError) as exc:
        it.failed = exc


def _make_parents(folder: Path, folders: set[Path]) -> None:
    """Make ``folder`` and what is missing above it; each new folder's parent is to be fsynced."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            made.mkdir()
        except FileExistsError:
            if not made.is_dir():
                raise
        folders.add(made.parent)


def _fsync(fd: int) -> OSError | None:
    try:
        os.fsync(fd)
        return None
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> OSError | None:
    """fsync a folder (its new entries durable); an error of the fsync itself is returned. A
    system that cannot open a folder at all (Windows) offers no such call: nothing to do."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        os.fsync(fd)
        return None
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


__all__ = ["write_prefetched"]
