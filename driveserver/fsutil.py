"""Small durable-file helpers: a crash never leaves a half-written file under its real name."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing; tighten it if it is looser."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, *, overwrite: bool = True) -> bool:
    """Write to a temp file in the same folder, fsync, rename over ``path``, fsync the folder.

    With ``overwrite=False`` an existing ``path`` wins (two processes creating the same secret
    at once must agree on one) and False is returned.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return True


def load_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """Read a secret file, creating it (mode 0600, in a 0700 folder) on first use."""
    ensure_private_dir(path.parent)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        atomic_write(path, secrets.token_bytes(nbytes).hex().encode(), overwrite=False)
        data = path.read_bytes()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return bytes.fromhex(data.decode().strip())
