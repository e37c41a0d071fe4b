"""Recursive inotify watches on a folder, read on the event loop straight from the kernel (Linux).

Why not watchdog here: it turns every kernel event into an event object, runs it through a
delayed queue (to pair moves), an emitter thread, an observer thread and a dispatcher, about
100 µs of Python per event. A download of 10,000 small files is some 55,000 events (create,
modify, close, rename of each temp file), which cost a receiving daemon 5.8 CPU seconds, more
than writing the files. The watcher needs much less: which paths changed, whether each is a
folder, and that the kernel dropped events. Here a read of the inotify descriptor hands over
everything that has queued up (tens of KB when the loop was busy), parsed with one struct call
per event, so a burst costs about a microsecond per event and one wake-up of the loop.

Folders are watched as they appear (a folder created inside a watched one is watched, and what
was made in it before the watch exists is found by the rescan its own event wakes); a folder
moved inside the tree keeps its watches under its new path; one moved out of the tree loses
them. Other systems use watchdog (``syncclient.watcher``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["InotifyTree", "available"]

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_EXCL_UNLINK = 0x4000000
IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000

# What changes content or names; not opens, reads or closes without a write.
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
              | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
_READ_SIZE = 256 * 1024
_READS_PER_WAKE = 16  # then let the loop run other work; the rest is read on the next wake-up

Change = tuple[str, bool]  # (path relative to the root with a leading "/", is a folder)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


_LIBC = _libc()


def available() -> bool:
    """Is inotify usable from here (Linux, with a C library that has it)?"""
    return _LIBC is not None


class InotifyTree:
    """Watches every folder below ``root``; ``deliver(changes)`` is called on the loop with the
    changes of each read, ``overflow()`` when the kernel dropped events (watches are then
    renewed over the whole tree, since folders made meanwhile went unseen).

    :meth:`start` raises ``OSError`` when the root itself cannot be watched (``ENOSPC``: the
    watch limit). A subfolder that cannot be watched is skipped and counted in
    :attr:`unwatched`; the watcher's check of ``/proc/self/fdinfo`` finds it too.
    """

    def __init__(self, root: Path, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[Change]], None], overflow: Callable[[], None]) -> None:
        assert _LIBC is not None, "inotify is not available here"
        self._libc = _LIBC
        self.root = os.fsencode(root)
        self.loop = loop
        self.deliver, self.overflow = deliver, overflow
        self._fd = -1
        self._dirs: dict[int, bytes] = {}  # watch descriptor → folder relative to root ("" or b"/a/b")
        self._moved_out: dict[int, bytes] = {}  # cookie → folder moved away, until its arrival
        self._renewed: set[int] = set()  # descriptors given a path during the current read
        self.unwatched = 0

    def start(self) -> None:
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        try:
            self._watch_tree(b"", root=True)
        except OSError:
            self.stop()
            raise
        self._renewed.clear()
        self.loop.add_reader(fd, self._readable)

    def stop(self) -> None:
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._dirs.clear()
        self._moved_out.clear()
        self._renewed.clear()

    # -- watches --------------------------------------------------------------

    def _add(self, rel: bytes) -> bool:
        wd = self._libc.inotify_add_watch(self._fd, self.root + rel, WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                raise OSError(err, "inotify watch limit reached")
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP):
                return False  # gone or replaced since listed, or not ours to read
            raise OSError(err, f"inotify_add_watch {os.fsdecode(self.root + rel)}: "
                               f"{os.strerror(err)}")
        self._dirs[wd] = rel  # the same folder again (moved, renewed) keeps its descriptor
        self._renewed.add(wd)
        return True

    def _watch_tree(self, top: bytes, *, root: bool = False) -> None:
        """Watch ``top`` and every folder below it (not following symlinks)."""
        stack = [top]
        while stack:
            rel = stack.pop()
            try:
                if not self._add(rel):
                    if root and rel == top:
                        raise FileNotFoundError(errno.ENOENT, "cannot watch a missing folder",
                                                os.fsdecode(self.root))
                    continue
            except OSError as exc:
                if root and rel == top:
                    raise
                # The watch limit, or a folder this process cannot watch (a path past
                # PATH_MAX, say): skip it, not its siblings; the watch check finds it.
                self.unwatched += 1
                if exc.errno != errno.ENOSPC:
                    log.warning("cannot watch %s: %s", os.fsdecode(self.root + rel)[-200:],
                                exc.strerror)
                continue
            try:
                with os.scandir(self.root + rel) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(rel + b"/" + entry.name)
            except OSError:
                continue  # gone meanwhile: its own event says so

    def _unwatch_moved_out(self, tops: set[bytes]) -> None:
        """Forget the watches of folders moved out of the tree and of everything below them,
        in one pass over the watches however many left. A descriptor given a path during this
        read stays: another folder may have taken the same path meanwhile (or the same folder
        came back), and its watches are the new ones."""
        for wd, rel in list(self._dirs.items()):
            if wd in self._renewed:
                continue
            path = rel
            while path:
                if path in tops:
                    self._libc.inotify_rm_watch(self._fd, wd)
                    del self._dirs[wd]
                    break
                path = path[:path.rfind(b"/")]

    # -- events ---------------------------------------------------------------

    def _readable(self) -> None:
        changes: list[Change] = []
        for _ in range(_READS_PER_WAKE):
            try:
                buf = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                log.error("reading inotify events failed (%s): rescanning", exc)
                self.overflow()
                break
            if not self._parse(buf, changes):
                break
        if self._moved_out:  # no arrival in the same read: they left the tree
            self._unwatch_moved_out(set(self._moved_out.values()))
            self._moved_out.clear()
        self._renewed.clear()
        if changes:
            self.deliver(changes)

    def _parse(self, buf: bytes, changes: list[Change]) -> bool:
        """Add the changes in ``buf``; False after an overflow (the caller stops reading: a
        full rescan follows anyway)."""
        unpack, size, dirs = _EVENT.unpack_from, _EVENT.size, self._dirs
        pos, end = 0, len(buf)
        while pos < end:
            wd, mask, cookie, length = unpack(buf, pos)
            pos += size
            name = buf[pos:pos + length].rstrip(b"\0")
            pos += length
            if mask & IN_Q_OVERFLOW:
                self.overflow()
                try:
                    self._watch_tree(b"")
                except OSError as exc:  # the root itself: the engine's folder check says so
                    log.error("cannot renew the watches of %s: %s", os.fsdecode(self.root), exc)
                return False
            if mask & IN_IGNORED:
                dirs.pop(wd, None)
                continue
            folder = dirs.get(wd)
            if folder is None:
                continue  # a watch just removed
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                continue  # the folder's parent reports it under its name (the root: the engine)
            is_dir = bool(mask & IN_ISDIR)
            rel = folder + b"/" + name
            if is_dir:
                if mask & IN_ATTRIB:
                    continue  # a folder's own attributes: its entries have their own events
                if mask & IN_MOVED_FROM:
                    self._moved_out[cookie] = rel
                elif mask & (IN_CREATE | IN_MOVED_TO):
                    if mask & IN_MOVED_TO:
                        self._moved_out.pop(cookie, None)  # moved inside the tree
                    try:
                        self._watch_tree(rel)
                    except OSError as exc:
                        log.error("cannot watch %s: %s", os.fsdecode(self.root + rel), exc)
            changes.append((os.fsdecode(rel), is_dir))
        return True
