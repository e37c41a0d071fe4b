"""The key file on disk: read it, create it atomically, rotate it under a lock.

The file holds every master key (see :mod:`driveserver.blocks.keys` for its format). It is
written to a temp file and renamed (mode 0600 from the start), so a reader sees the old file
or the whole new one, and a rotation holds an exclusive lock so that two at once never lose a
key. Losing this file loses every stored block, so nothing here ever replaces a file it could
not parse.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driveserver.fsutil import atomic_write, fsync_dir

log = logging.getLogger("driveserver.blocks.keys")


class KeyRingError(Exception):
    """The key file is missing, unreadable or malformed."""


def read_key_file(path: Path) -> bytes | None:
    """The key file's bytes, or None if there is no file at ``path``."""
    try:
        with open(path, "rb") as f:
            _warn_if_exposed(path, os.fstat(f.fileno()))
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyRingError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def _warn_if_exposed(path: Path, st: os.stat_result) -> None:
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning(
            "key file %s is accessible to other users (mode %o); run chmod 600 on it",
            path,
            stat.S_IMODE(st.st_mode),
        )


def _ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700 if it is missing (an existing one is left as is)."""
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    fsync_dir(directory.parent)


def write_key_file(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write the key file so readers see the old file or the whole new one (mode 0600 from the
    start); with ``replace=False`` an existing file wins and False is returned."""
    _ensure_private_dir(path.parent)
    try:
        return atomic_write(path, data, 0o600, overwrite=replace)
    except OSError as exc:
        raise KeyRingError(f"cannot write key file {path}: {exc.strerror or exc}") from None


@contextmanager
def locked_key_file(path: Path) -> Iterator[bytes]:
    """Hold an exclusive lock on the key file and yield its contents.

    The file is replaced by rename, so a waiter may wake up holding a lock on
    the old inode; it then retries on the current one.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyRingError(f"key file {path} does not exist") from None
        except OSError as exc:
            raise KeyRingError(f"cannot open key file {path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                current = os.stat(path)
            except FileNotFoundError:
                continue  # renamed away while we waited; lock the new file
            except OSError as exc:
                raise KeyRingError(f"cannot lock key file {path}: {exc.strerror or exc}") from None
            if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                continue  # replaced while we waited; lock the new file
            _warn_if_exposed(path, held)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            yield b"".join(chunks)
            return
        finally:
            os.close(fd)
