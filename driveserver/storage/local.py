"""A block store in a local directory (the default backend).

Layout::

    root/
      .tmp/              writes in progress (same file system, so they can be linked)
      ab/cd/abcd1234...  one file per object, fanned out by the first four hex digits
      small.sqlite3      objects up to 64 KiB, packed (driveserver.storage.packed)

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

**Small objects** (up to :data:`~driveserver.storage.packed.PACK_MAX`) are not files: they go
into one SQLite file in the store (:mod:`driveserver.storage.packed` says why and with which
guarantees). A store made by earlier code keeps its small files, which are read, found,
listed and deleted as before; only new small objects are packed. The file is created only on
a local file system (ext4, XFS, Btrfs, tmpfs), where SQLite's locking holds; elsewhere every
object stays a file.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from driveproto.durable import (
    SYNCFS_FILE_SYSTEMS,
    SYNCFS_FROM,
    fs_magic,
    open_directory,
    syncfs,
    syncfs_works,
)
from driveserver.storage.base import (
    AsyncContextStore,
    BlockNotFound,
    StorageError,
    StorageUnavailable,
    is_valid_name,
    validate_name,
)
from driveserver.storage.packed import PACK_MAX, PackedObjects

__all__ = ["LocalBlockStore"]

_T = TypeVar("_T")

_TMP_DIR = ".tmp"
_PACK_FILE = "small.sqlite3"
_PAGE = 1000  # names per page when listing the pack
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
    :param pack_small: whether to create ``small.sqlite3`` for new small objects; None (the
        default) creates it on a local file system. A store that has the file uses it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        stale_temp_age: float = 3600.0,
        pack_small: bool | None = None,
    ) -> None:
        self.root = Path(root)
        # None: pack small objects where the file system is local (or the pack exists already).
        self._pack_small = pack_small
        self._packed: PackedObjects | None = None
        self._reads: _PackReads | None = None  # reads of the pack, coalesced (made on first use)
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
        if self._packed is not None:
            # Kept, closed: a call after this is refused, not answered from block files alone.
            await asyncio.to_thread(self._packed.close)

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
        pack = self.root / _PACK_FILE
        use = self._pack_small
        if use is None:
            use = fs_magic(self.root) in _PACK_FILE_SYSTEMS
        if (self._packed is None or self._packed.closed) and (use or pack.exists()):
            packed = PackedObjects(pack)
            try:
                packed.open()
            except BaseException:
                packed.close()
                raise
            self._packed = packed

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
        wanted = list(names)
        return await self._run(lambda: self._exists_many_sync(wanted), "look up blocks")

    async def get(self, name: str) -> bytes:
        validate_name(name)
        if self._packed is not None:
            data = await self._pack_reads().read(name)
            if data is not None:
                return data
        return await self._run(lambda: self._file_sync(name), f"read block {name}")

    def _pack_reads(self) -> _PackReads:
        if self._reads is None:
            self._reads = _PackReads(
                lambda names: self._run(lambda: self._read_pack(names), "read blocks")
            )
        return self._reads

    def _read_pack(self, names: list[str]) -> dict[str, bytes]:
        """The pack's objects among ``names``; the pack of now (a restart opens a new one)."""
        assert self._packed is not None
        return self._packed.get_many(names)

    async def exists(self, name: str) -> bool:
        validate_name(name)
        return (await self._run(lambda: self._exists_many_sync([name]), f"look up block {name}"))[0]

    async def delete(self, name: str) -> None:
        validate_name(name)
        await self._run(lambda: self._delete_sync(name), f"delete block {name}")

    async def stat_mtime(self, name: str) -> float | None:
        validate_name(name)
        return await self._run(lambda: self._mtime_sync(name), f"stat block {name}")

    async def iterate(self) -> AsyncIterator[str]:
        """Yield every object name, one fan-out directory (1/256 of the store) at a time."""
        packed = self._packed
        if packed is not None:
            after = ""
            while True:
                page = await self._run(
                    functools.partial(packed.names_after, after, _PAGE), "list store"
                )
                for name in page:
                    if is_valid_name(name):
                        yield name
                if len(page) < _PAGE:
                    break
                after = page[-1]
        tops = await self._run(lambda: self._list_dirs(self.root), "list store")
        for top in tops:
            names = await self._run(functools.partial(self._names_under, top), "list store")
            if packed is not None and names:
                # A small file from before the pack, stored again since into the pack: once.
                again = await self._run(functools.partial(packed.present, names), "list store")
                names = [n for n in names if n not in again]
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
        if self._packed is not None and len(data) <= PACK_MAX:
            return self._packed.put_many([(name, data)])[0]
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
        """Small objects into the pack, one transaction; the others as files: write, fsync,
        link, fsync folders, each step for the whole batch before the next."""
        results = [False] * len(items)
        packed = self._packed
        small = [] if packed is None else [
            i for i, (_, data) in enumerate(items) if len(data) <= PACK_MAX
        ]
        if packed is not None and small:
            # A small file stored by earlier code counts as there (no second copy).
            fresh = [i for i in small if not self._path(items[i][0]).exists()]
            for i, stored in zip(fresh, packed.put_many([items[i] for i in fresh]), strict=True):
                results[i] = stored
        if len(small) == len(items):
            return results
        in_pack = set(small)
        large = [i for i in range(len(items)) if i not in in_pack]
        for i, stored in zip(large, self._put_files_sync([items[i] for i in large]), strict=True):
            results[i] = stored
        return results

    def _put_files_sync(self, items: list[tuple[str, bytes]]) -> list[bool]:
        results = [False] * len(items)
        todo: list[tuple[int, Path, str, bytes]] = []  # index, final path, temp path, data
        folders: set[Path] = set()  # to fsync once linked: leaves, and parents of new folders
        new_leaves: set[Path] = set()
        prefix = f"put-{secrets.token_hex(6)}-"
        root_fd: int | None = None
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
            if self._syncfs_ok is None and len(todo) >= SYNCFS_FROM:
                self._syncfs_ok = syncfs_works(self.root)
            whole = len(todo) >= SYNCFS_FROM and bool(self._syncfs_ok)
            if whole:
                # Two flushes of the file system instead of a file's and a folder's fsync per
                # block (see the module docstring): the bytes before any name, the names before
                # the answer. The order of the guarantees is that of the loop below. The
                # descriptor is opened before the writes, so it reports their errors.
                root_fd = open_directory(self.root)
                for _, _, tmp, data in todo:
                    _write_new(tmp, data)
                syncfs(self.root, fd=root_fd)
            else:
                pool = self._fsync_pool()
                list(pool.map(_write_durably, ((tmp, data) for _, _, tmp, data in todo)))
            for i, final, tmp, _ in todo:
                if self._link(tmp, final):
                    results[i] = True
                    folders.add(final.parent)
            if whole:
                syncfs(self.root, fd=root_fd)
            else:
                list(pool.map(_fsync_dir, folders))
            self._leaves.update(new_leaves)
            return results
        finally:
            if root_fd is not None:
                os.close(root_fd)
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

    def _file_sync(self, name: str) -> bytes:
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

    def _exists_many_sync(self, names: list[str]) -> list[bool]:
        packed = self._packed.present(names) if self._packed is not None else set()
        return [name in packed or self._path(name).is_file() for name in names]

    def _delete_sync(self, name: str) -> None:
        if self._packed is not None:
            self._packed.delete(name)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def _mtime_sync(self, name: str) -> float | None:
        if self._packed is not None:
            stored = self._packed.stored_at(name)
            if stored is not None:
                return stored
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
            if self._packed is not None:
                self._packed.check()
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
        except sqlite3.Error as exc:
            detail = f"cannot {action} in {self.root / _PACK_FILE}: {exc}"
            if isinstance(exc, sqlite3.OperationalError) and any(
                words in str(exc) for words in ("readonly", "unable to open", "disk is full")
            ):
                raise StorageUnavailable(detail) from exc
            raise StorageError(detail) from exc
        except OSError as exc:
            detail = f"cannot {action} in {self.root}: {exc.strerror or exc}"
            if exc.errno in _UNAVAILABLE_ERRNOS:
                raise StorageUnavailable(detail) from exc
            raise StorageError(detail) from exc


class _PackReads:
    """Reads of the pack, coalesced: at most one thread job at a time, and every read asked
    for while one runs is served by the next, with one query. A batch download reads its
    small blocks a few at a time and each read alone cost a thread hand-off (10,000 of them,
    most of the server's thread time for a 10,000-file download); under load the reads now
    queue up and share them. A name not in the pack reads as None (then the caller looks for
    a file)."""

    def __init__(self, read_many: Callable[[list[str]], Awaitable[dict[str, bytes]]]) -> None:
        self._read_many = read_many
        self._waiting: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._job: asyncio.Task[None] | None = None

    async def read(self, name: str) -> bytes | None:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(future)
        if self._job is None:
            self._job = asyncio.ensure_future(self._serve())
        return await future

    async def _serve(self) -> None:
        batch: dict[str, list[asyncio.Future[bytes | None]]] = {}
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    found = await self._read_many(list(batch))
                except Exception as exc:  # each waiting read fails with the store's error
                    _settle(batch, exc)
                    continue
                for name, futures in batch.items():
                    for future in futures:
                        if not future.done():  # a reader cancelled meanwhile is skipped
                            future.set_result(found.get(name))
        finally:
            self._job = None
            _settle(batch, None)  # cancelled (the loop closing) with reads in flight or queued
            _settle(self._waiting, None)
            self._waiting = {}


def _settle(waiting: dict[str, list[asyncio.Future[bytes | None]]],
            exc: Exception | None) -> None:
    """Fail every read still open in ``waiting`` with ``exc``, or cancel it."""
    for futures in waiting.values():
        for future in futures:
            if not future.done():
                if exc is None:
                    future.cancel()
                else:
                    future.set_exception(exc)


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


# Local file systems, where SQLite's locks and shared memory hold for every process on the
# machine: those syncfs can stand in for fsyncs on, and tmpfs (not NFS, SMB or FUSE mounts).
_PACK_FILE_SYSTEMS = SYNCFS_FILE_SYSTEMS | {0x01021994}  # tmpfs


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
