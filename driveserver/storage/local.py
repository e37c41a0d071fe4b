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
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
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
        self._leaves: set[Path] = set()  # fan-out folders known to exist

    def __repr__(self) -> str:
        return f"LocalBlockStore({str(self.root)!r})"


    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Create the directory if needed and remove abandoned temp files."""
        await self._run(self._start_sync, "start")

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
