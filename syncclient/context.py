"""What the stages of one folder's sync share: its settings, state database, server, root, the
record of its own writes, when the current round's scan began, and where status goes.

One ``SyncContext`` per folder, built by the :class:`~syncclient.engine.Engine`; the stages
(``executor``, ``up``, ``down``) are functions of it, so each can be called (and tested) without
the others, with a fake server as ``remote``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import Config
from .localfs import os_path
from .localtree import Scan
from .own_writes import OwnWrites
from .planner import Op
from .progress import Progress, StatusSink, no_status
from .remote_api import RemoteApi
from .state import State, SyncedEntry

# Files per upload batch, and per content batch of a download. The batch's upload grant names
# every file and travels in the block URL's query string, which the server's HTTP parser limits
# to 8190 bytes: 100 ids fit.
BATCH_FILES = 100


@dataclass
class RoundResult:
    """What one round executed (or deferred to the next round) and what failed. The executor
    and the batch upload append as they go; the progress reporter reads ``len(ops)``."""

    ops: list[Op] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class SyncContext:
    """The shared parts of one folder's sync (see the module docstring)."""

    def __init__(self, config: Config, state: State, remote: RemoteApi,
                 status: StatusSink = no_status) -> None:
        self.config, self.state, self.remote = config, state, remote
        self.root: Path = config.root
        self.status = status
        self.own = OwnWrites(config.root)
        # When the current round's scan began, on the folder's file system clock (the one that
        # stamps mtimes); every content recorded in a round was read after it. None: unknown.
        self.scan_started_ns: int | None = None
        self.modes: dict[str, int] = {}  # path -> mode of the file a conflict renamed away
        # The round's download caches (``down``): blocks the folder holds, built once a round.
        self.sources: dict[str, tuple[Path, int]] | None = None
        self.single: dict[str, str] = {}  # checksum of a one-block file -> its block hash
        self.prefetched: dict[str, bytes] = {}  # file id -> content, from a batch download
        # Whether one syncfs flushes the folder's file system (``batch_download``), asked once:
        # st_dev -> answer.
        self.syncfs_ok: dict[int, bool] = {}

    def os_path(self, path: str, local: Scan | None = None) -> Path:
        """Where tree path ``path`` is on disk (``localfs.os_path``)."""
        return os_path(self.root, path, local)

    def put_synced(self, entry: SyncedEntry) -> None:
        """Record a synced entry; a file's content as read in this round, so after this round's
        scan began (what lets a later scan trust its unchanged mtime, see ``stat_trusted``)."""
        if not entry.is_dir:
            entry = replace(entry, verified_ns=self.scan_started_ns or 0)
        self.state.put_synced(entry)

    def notice(self, path: str, message: str) -> None:
        """Something ``drive-sync status`` should tell the user (not an error)."""
        self.state.set_notice(path, message)

    def progress(self, verb: str, path: str, total: int) -> Progress:
        """A progress reporter for one transfer of ``total`` bytes."""
        return Progress(self.status, verb, path, total)
