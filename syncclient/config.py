"""Where a device keeps its configuration, token and state: the config dir.

Several devices can run side by side on one machine, each with its own config dir
(``--config-dir`` or ``DRIVE_SYNC_HOME``; default ``~/.config/drive-sync``). The token lives in
its own file with mode 0600 so that the config can be shown or shared without leaking it.

One process at a time owns a config dir: ``run`` for as long as it syncs, ``init`` and
``logout`` while they change the config or the token (:func:`lock_device`). The lock is an
``flock`` on ``run.lock``, so it dies with its process, even on kill -9; the holder writes its
pid and command into the file so that the others can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import NotConfigured, SyncClientError

MARKER = ".drive-sync"
CONFIG_FILE = "config.json"
TOKEN_FILE = "token"
STATE_FILE = "state.db"
STATUS_FILE = "status.json"
LOCK_FILE = "run.lock"
# A process that finds the lock taken tries again for this long: ``drive-sync wait`` and
# ``status`` look at it for an instant (see lock_holder), which must not turn a daemon away.
LOCK_PATIENCE_SECONDS = 0.5


def default_config_dir() -> Path:
    env = os.environ.get("DRIVE_SYNC_HOME")
    if env:
        return Path(env)
    return Path.home() / ".config" / "drive-sync"


@dataclass
class Config:
    """The settings ``drive-sync init`` writes."""

    server: str
    email: str
    folder: str
    device_name: str
    device_id: str | None = None
    user_id: str | None = None
    # Local deletions of more than this share of the synced files (when there are at least
    # ``delete_guard_min_files``) pause the sync until ``drive-sync resume``.
    delete_guard_share: float = 0.5
    delete_guard_min_files: int = 10
    # Uploads at most this big are sent with the batch routes.
    batch_max_file_bytes: int = 1024 * 1024
    parallel_transfers: int = 4
    # Symbolic links whose target is relative and stays inside the folder are synced as links
    # (never followed); false: every symlink is left alone, here and on the server.
    sync_symlinks: bool = True

    @property
    def root(self) -> Path:
        return Path(self.folder)


def load(config_dir: Path) -> Config:
    path = config_dir / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotConfigured(f"no configuration in {config_dir}: run `drive-sync init` first"
                            ) from None
    known = set(Config.__dataclass_fields__)
    return Config(**{k: v for k, v in raw.items() if k in known})


def save(config_dir: Path, config: Config) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp = config_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
    os.replace(tmp, config_dir / CONFIG_FILE)


def save_token(config_dir: Path, token: str) -> None:
    """Write the token readable by the owner only (created 0600, never world-readable)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)


def load_token(config_dir: Path) -> str:
    try:
        return (config_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        raise NotConfigured(f"not logged in ({config_dir}): run `drive-sync init`") from None


def forget_token(config_dir: Path) -> None:
    (config_dir / TOKEN_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a config dir's lock, as it wrote it (None: not written yet)."""

    pid: int | None
    command: str | None

    def describe(self) -> str:
        what = "a drive-sync daemon" if self.command == "run" else \
            f"drive-sync {self.command}" if self.command else "another drive-sync"
        return f"{what} (pid {self.pid})" if self.pid else what


class DeviceBusy(SyncClientError):
    """Another process holds the config dir's lock."""

    def __init__(self, config_dir: Path, holder: LockHolder) -> None:
        super().__init__(f"{holder.describe()} is already running for {config_dir}")
        self.config_dir, self.holder = config_dir, holder


def lock_device(config_dir: Path, command: str) -> int:
    """Take the config dir's lock for ``command`` (blocking, briefly: run it in a thread) and
    return its file descriptor; closing it releases the lock. Raises :class:`DeviceBusy`."""
    config_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(config_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_PATIENCE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise DeviceBusy(config_dir, holder) from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    return fd


def lock_holder(config_dir: Path) -> LockHolder | None:
    """Who holds the config dir's lock now, or None if nobody does. Looks without waiting and
    without taking it for more than an instant."""
    try:
        fd = os.open(config_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> LockHolder:
    pid, _, command = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
    return LockHolder(int(pid) if pid.isdigit() else None, command or None)
