"""A block store in a local directory (the default backend).

Layout::

    root/
      .tmp/              writes in progress (same file system, so they can be linked)
      ab/cd/abcd1234...  one file per object, fanned out by the first four hex digits

Two levels of 256 directories keep each directory small up to hundreds of
millions of objects, and the names are uniformly distributed digests.

A write goes to a fresh file in ``.tmp``, is fsynced, then hard-linked under
its final name and the directory fsynced. ``link`` refuses to replace an
existing name, which gives put-if-absent for free, and a crash at any point
leaves either no object or a complete one, never a partial file under a real
name. Leftovers in ``.tmp`` are not objects; :meth:`LocalBlockStore.start`
removes old ones.

The file system calls block, so each runs in a worker thread
(``asyncio.to_thread``) to keep the event loop serving other requests.

**Batches** (:meth:`LocalBlockStore.put_many_if_absent`, what a batch of small
files stores) keep every guarantee above for each object, with less work per
object: one thread hand-off for the whole batch, the temp files written and
fsynced a few at a time in parallel (the file system commits concurrent fsyncs
together, as ext4's journal does), then all linked, then each folder that
gained an entry fsynced once, in parallel too. Nothing is visible under its
name before its bytes are durable, and nothing is reported stored before its
folder entry is. One by one, a new block in a fresh store cost three fsyncs
in a row (file, leaf folder, the folder a new leaf was made in) and three
thread hand-offs; this was most of the server's time in a 10,000-file sync.

A batch of many blocks on Linux goes further: its temp files are written
without an fsync each, then one ``syncfs`` flushes the file system (every
byte of them, with the disk's cache), then they are linked, then a second
``syncfs`` makes the names durable before the batch is reported stored: two
waits for the disk instead of about three hundred for a hundred small files.
The order of the guarantees is unchanged. ``syncfs`` reports write-back
errors only since Linux 5.8, so older kernels keep the fsyncs; so do file
systems other than ext4, XFS and Btrfs (on a FUSE mount syncfs returns
without flushing anything), other systems, and small batches. The cost of a flush grows with what *other*
programs left unwritten on the same file system, which is why it is used
only where it replaces many fsyncs.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from driveserver.storage.base import (
    AsyncContextStore,
    BlockNotFound,
    StorageError,
    StorageUnavailable,
    is_valid_name,
    validate_name,
)

__all__ = ["LocalBlockStore"]

_T = TypeVar("_T")

_TMP_DIR = ".tmp"
_FSYNC_THREADS = 8  # a batch's fsyncs in flight at once (they wait on the disk, not the CPU)
_HEX2 = frozenset(f"{i:02x}" for i in range(256))
# Errors that mean "this directory is not usable by us", as opposed to a failed operation.
# (ENOENT here means the store's directory itself is gone: a missing object is
# BlockNotFound, handled where it can happen.)
_UNAVAILABLE_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}
)
# link(2) is not supported by every file system (some FUSE, SMB and FAT mounts).
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


class LocalBlockStore(AsyncContextStore):
    """Objects as files under ``root``; see the module docstring for the layout and guarantees.

    :param root: directory of the store, created (mode 0700) by :meth:`start` if missing.
    :param stale_temp_age: seconds after which a leftover temp file is deemed
        abandoned and removed at start. Not zero, so that a second process
        sharing the directory does not lose a write in progress.
    """

    def __init__(self, root: str | os.PathLike[str], *, stale_temp_age: float = 3600.0) -> None:
        self.root = Path(root)
        self._tmp = self.root / _TMP_DIR
        self._stale_temp_age = stale_temp_age
        self._leaves: set[Path] = set()  # fan-out folders known to exist (and durable)
        self._fsyncs: ThreadPoolExecutor | None = None  # made by the first batch
        self._fsyncs_lock = threading.Lock()
        self._syncfs_ok: bool | None = None  # syncfs usable here (asked by the first big batch)

    def __repr__(self) -> str:
        return f"LocalBlockStore({str(self.root)!r})"


    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Create the directory if needed and remove abandoned temp files."""
        await self._run(self._start_sync, "start")

    async def close(self) -> None:
        """Stop the batches' fsync threads; every operation opens and closes its own files."""
        with self._fsyncs_lock:
            pool, self._fsyncs = self._fsyncs, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _start_sync(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _fsync_dir(self.root.parent)
        self._tmp.mkdir(mode=0o700, exist_ok=True)
        cutoff = time.time() - self._stale_temp_age
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass  # its writer finished or another process cleaned it

    # -- operations ---------------------------------------------------------

    async def put_if_absent(self, name: str, data: bytes) -> bool:
        validate_name(name)
        return await self._run(lambda: self._put_sync(name, data), f"write block {name}")

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Many objects at once (see the module docstring); for each, what ``put_if_absent``
        returns. The names must be distinct."""
        for name, _ in items:
            validate_name(name)
        if len({name for name, _ in items}) != len(items):
            raise ValueError("put_many_if_absent: the names must be distinct")
        if not items:
            return []
        batch = list(items)
        return await self._run(lambda: self._put_many_sync(batch), f"write {len(batch)} blocks")

    async def exists_many(self, names: Sequence[str]) -> list[bool]:
        for name in names:
            validate_name(name)
        paths = [self._path(n) for n in names]
        return await self._run(lambda: [p.is_file() for p in paths], "look up blocks")

    async def get(self, name: str) -> bytes:
        validate_name(name)
        return await self._run(lambda: self._get_sync(name), f"read block {name}")

    async def exists(self, name: str) -> bool:
        validate_name(name)
        return await self._run(self._path(name).is_file, f"look up block {name}")

    async def delete(self, name: str) -> None:
        validate_name(name)
        await self._run(lambda: self._delete_sync(name), f"delete block {name}")

    async def stat_mtime(self, name: str) -> float | None:
        validate_name(name)
        return await self._run(lambda: self._mtime_sync(name), f"stat block {name}")

    async def iterate(self) -> AsyncIterator[str]:
        """Yield every object name, one fan-out directory (1/256 of the store) at a time."""
        tops = await self._run(lambda: self._list_dirs(self.root), "list store")
        for top in tops:
            names = await self._run(functools.partial(self._names_under, top), "list store")
            for name in names:
                yield name

    async def check(self) -> None:
        """Write, fsync and remove a probe file, so a read-only or full disk shows up now."""
        await self._run(self._check_sync, "check store")

    # -- synchronous parts, run in a worker thread --------------------------

    def _path(self, name: str) -> Path:
        return self.root / name[0:2] / name[2:4] / name

    def _put_sync(self, name: str, data: bytes) -> bool:
        final = self._path(name)
        if final.exists():
            return False
        self._make_parents(final.parent)
        try:
            fd, tmp_name = tempfile.mkstemp(prefix="put-", dir=self._tmp)
        except FileNotFoundError:  # .tmp removed under us (or start() never ran)
            self._tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix="put-", dir=self._tmp)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if not self._link(tmp_name, final):
                return False
            _fsync_dir(final.parent)
            return True
        finally:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass

    def _fsync_pool(self) -> ThreadPoolExecutor:
        with self._fsyncs_lock:
            if self._fsyncs is None:
                self._fsyncs = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="fsync")
            return self._fsyncs

    def _put_many_sync(self, items: list[tuple[str, bytes]]) -> list[bool]:
        """Write, fsync, link, fsync folders: each step for the whole batch before the next."""
        results = [False] * len(items)
        todo: list[tuple[int, Path, str, bytes]] = []  # index, final path, temp path, data
        folders: set[Path] = set()  # to fsync once linked: leaves, and parents of new folders
        new_leaves: set[Path] = set()
        prefix = f"put-{secrets.token_hex(6)}-"
        try:
            self._tmp.mkdir(mode=0o700, parents=True, exist_ok=True)  # removed under us?
            for i, (name, data) in enumerate(items):
                final = self._path(name)
                if final.exists():
                    continue
                if final.parent not in self._leaves:
                    new_leaves.add(final.parent)
                    for directory in (final.parent.parent, final.parent):
                        try:
                            directory.mkdir()
                        except FileExistsError:
                            pass
                        # Made now, or by a writer whose fsync may not have happened yet: the
                        # entry is made durable here either way (once per leaf and process).
                        folders.add(directory.parent)
                todo.append((i, final, str(self._tmp / f"{prefix}{i}"), data))
            if self._syncfs_ok is None and len(todo) >= _SYNCFS_FROM:
                self._syncfs_ok = _syncfs_works(self.root)
            whole = len(todo) >= _SYNCFS_FROM and bool(self._syncfs_ok)
            if whole:
                # Two flushes of the file system instead of a file's and a folder's fsync per
                # block (see the module docstring): the bytes before any name, the names before
                # the answer. The order of the guarantees is that of the loop below.
                for _, _, tmp, data in todo:
                    _write_new(tmp, data)
                _syncfs(self.root)
            else:
                pool = self._fsync_pool()
                list(pool.map(_write_durably, ((tmp, data) for _, _, tmp, data in todo)))
            for i, final, tmp, _ in todo:
                if self._link(tmp, final):
                    results[i] = True
                    folders.add(final.parent)
            if whole:
                _syncfs(self.root)
            else:
                list(pool.map(_fsync_dir, folders))
            self._leaves.update(new_leaves)
            return results
        finally:
            for _, _, tmp, _ in todo:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass

    def _link(self, tmp_name: str, final: Path, retry: bool = True) -> bool:
        """Give the written temp file its final name; False if a copy is already there."""
        try:
            os.link(tmp_name, final)
        except FileExistsError:
            return False
        except FileNotFoundError:
            if not retry:
                raise
            # A fan-out folder was removed by hand since we remembered it: make it again.
            self._leaves.discard(final.parent)
            self._make_parents(final.parent)
            return self._link(tmp_name, final, retry=False)
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            # No hard links here: rename may replace a copy that appeared
            # meanwhile, which is harmless because equal names mean equal blocks.
            if final.exists():
                return False
            os.rename(tmp_name, final)
        return True

    def _get_sync(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise BlockNotFound(name, repr(self)) from None

    def _make_parents(self, leaf: Path) -> None:
        """Create the two fan-out levels, fsyncing each parent whose entries changed. Folders
        known to exist are remembered (at most 65,536), which spares two failing mkdirs a
        block; fan-out folders are never removed while the store runs."""
        if leaf in self._leaves:
            return
        for directory in (leaf.parent, leaf):
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(directory.parent)
        self._leaves.add(leaf)

    def _delete_sync(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def _mtime_sync(self, name: str) -> float | None:
        try:
            return self._path(name).stat().st_mtime
        except FileNotFoundError:
            return None

    @staticmethod
    def _list_dirs(directory: Path) -> list[Path]:
        try:
            with os.scandir(directory) as entries:
                return [
                    Path(e.path)
                    for e in entries
                    if e.name in _HEX2 and e.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []

    def _names_under(self, top: Path) -> list[str]:
        names: list[str] = []
        for sub in self._list_dirs(top):
            prefix = top.name + sub.name
            try:
                with os.scandir(sub) as entries:
                    names.extend(
                        e.name
                        for e in entries
                        if is_valid_name(e.name)
                        and e.name.startswith(prefix)
                        and e.is_file(follow_symlinks=False)
                    )
            except FileNotFoundError:
                continue
        return names

    def _check_sync(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"block directory {self.root} does not exist")
        try:
            with tempfile.NamedTemporaryFile(prefix="check-", dir=self._tmp) as probe:
                probe.write(b"probe")
                probe.flush()
                os.fsync(probe.fileno())
        except FileNotFoundError:
            raise StorageUnavailable(
                f"block directory {self.root} is not initialised (missing {_TMP_DIR}/); "
                "start() the store first"
            ) from None

    # -- error translation --------------------------------------------------

    async def _run(self, fn: Callable[[], _T], action: str) -> _T:
        """Run ``fn`` in a thread, translating OSError into the storage errors."""
        try:
            return await asyncio.to_thread(fn)
        except StorageError:
            raise
        except OSError as exc:
            detail = f"cannot {action} in {self.root}: {exc.strerror or exc}"
            if exc.errno in _UNAVAILABLE_ERRNOS:
                raise StorageUnavailable(detail) from exc
            raise StorageError(detail) from exc


def _write_new(path: str, data: bytes, fsync: bool = False) -> None:
    """A new file with these bytes (it must not exist yet), fsynced if asked."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(item: tuple[str, bytes]) -> None:
    """A new file with these bytes, fsynced (it must not exist yet)."""
    _write_new(*item, fsync=True)


# syncfs(2): Linux's flush of one whole file system (data and metadata of every file on it),
# waited for. ctypes, since the os module has only sync(2), which flushes every file system.
_SYNCFS_FROM = 16  # blocks in a batch from which two syncfs beat a pool of fsyncs
_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    _libc_syncfs = _libc.syncfs if _libc is not None else None
except (OSError, AttributeError):
    _libc_syncfs = None


def _syncfs(directory: Path) -> None:
    """Flush the file system ``directory`` is on; OSError if the kernel says it failed (a full
    disk, an I/O error): then nothing this batch wrote may be reported stored."""
    assert _libc_syncfs is not None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    finally:
        os.close(fd)


def _kernel() -> tuple[int, int]:
    """The running Linux kernel's (major, minor), (0, 0) if unreadable."""
    parts = os.uname().release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


# File systems whose syncfs waits for every byte and name, the disk's cache included (their
# sync_fs commits the journal or transaction with a flush), by statfs magic. Not FUSE (sshfs,
# rclone or s3fs mounts), where syncfs returns at once without asking the daemon to flush
# anything, while an fsync is passed on to it; not NFS or SMB either: they keep their fsyncs.
_SYNCFS_FILE_SYSTEMS = frozenset({
    0xEF53,  # ext4 (and ext2/ext3 mounted by the ext4 driver; without a journal it flushes too)
    0x58465342,  # XFS
    0x9123683E,  # Btrfs
})


def _fs_magic(directory: Path) -> int | None:
    """statfs(2)'s f_type of ``directory`` (the first field of struct statfs, a C long)."""
    if _libc is None:
        return None
    buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.statfs(os.fsencode(directory), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _syncfs_works(directory: Path) -> bool:
    """Whether syncfs can stand in for fsyncs in ``directory``: Linux 5.8 or later (earlier
    kernels do not report write-back errors through syncfs), a file system known to flush
    everything on it (:data:`_SYNCFS_FILE_SYSTEMS`), and no seccomp filter refusing it."""
    if _libc_syncfs is None or _kernel() < (5, 8) or \
            _fs_magic(directory) not in _SYNCFS_FILE_SYSTEMS:
        return False
    try:
        _syncfs(directory)
    except OSError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
