"""Where a device keeps its configuration, token and state: the config dir.

Several devices can run side by side on one machine, each with its own config dir
(``--config-dir`` or ``DRIVE_SYNC_HOME``; default ``~/.config/drive-sync``). The token lives in
its own file with mode 0600 so that the config can be shown or shared without leaking it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import NotConfigured

MARKER = ".drive-sync"
CONFIG_FILE = "config.json"
TOKEN_FILE = "token"
STATE_FILE = "state.db"
STATUS_FILE = "status.json"


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
