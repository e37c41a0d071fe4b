"""Making many new files durable at once: syncfs(2) where it can stand in for an fsync each.

Both ends write many small files in a batch: the server its blocks (when they are not packed),
the sync client the files it downloads. One by one, each costs an fsync of the file and of its
folder, and a batch of a hundred waits for the disk a few hundred times. On Linux one
``syncfs`` of the file system flushes every byte and name on it, the disk's cache included,
and is waited for: written, ``syncfs``, renamed or linked, ``syncfs`` again keeps the order of
the guarantees (the bytes durable before any name, the names before the answer) with two waits.

It is not always usable. ``syncfs`` reports write-back errors only since Linux 5.8, so older
kernels keep the fsyncs; so do file systems other than ext4, XFS and Btrfs (on a FUSE mount
syncfs returns without flushing anything), and other systems. Its cost grows with what *other*
programs left unwritten on the same file system, which is why callers use it only where it
replaces many fsyncs (:data:`SYNCFS_FROM`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

__all__ = ["SYNCFS_FILE_SYSTEMS", "SYNCFS_FROM", "fs_magic", "open_directory", "syncfs",
           "syncfs_works"]

SYNCFS_FROM = 16  # files in a batch from which two syncfs beat a pool of fsyncs

# ctypes, since the os module has only sync(2), which flushes every file system.
_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    _libc_syncfs = _libc.syncfs if _libc is not None else None
except (OSError, AttributeError):
    _libc_syncfs = None


def open_directory(directory: Path) -> int | None:
    """A descriptor of ``directory`` for :func:`syncfs`, to be opened *before* writing what it
    is to flush: the kernel reports through a descriptor the write-back errors since it was
    opened, so one opened after the writes could miss an error that another process's syncfs
    of the same file system reported first. The caller closes it. None where there is no
    syncfs (other systems) or the folder cannot be opened."""
    if _libc_syncfs is None:
        return None
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None


def syncfs(directory: Path, fd: int | None = None) -> None:
    """Flush the file system ``directory`` is on, through ``fd`` (:func:`open_directory`) when
    given; OSError if the kernel says it failed (a full disk, an I/O error): then nothing
    written since ``fd`` was opened may be reported durable."""
    assert _libc_syncfs is not None
    own = fd is None
    if fd is None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    finally:
        if own:
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
SYNCFS_FILE_SYSTEMS = frozenset({
    0xEF53,  # ext4 (and ext2/ext3 mounted by the ext4 driver; without a journal it flushes too)
    0x58465342,  # XFS
    0x9123683E,  # Btrfs
})


def fs_magic(directory: Path) -> int | None:
    """statfs(2)'s f_type of ``directory`` (the first field of struct statfs, a C long)."""
    if _libc is None:
        return None
    buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.statfs(os.fsencode(directory), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def syncfs_works(directory: Path) -> bool:
    """Whether syncfs can stand in for fsyncs in ``directory``: Linux 5.8 or later (earlier
    kernels do not report write-back errors through syncfs), a file system known to flush
    everything on it (:data:`SYNCFS_FILE_SYSTEMS`), and no seccomp filter refusing it."""
    if _libc_syncfs is None or _kernel() < (5, 8) or \
            fs_magic(directory) not in SYNCFS_FILE_SYSTEMS:
        return False
    try:
        syncfs(directory)
    except OSError:
        return False
    return True
