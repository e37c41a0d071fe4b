"""What the journal holds and what a feed answer carries: :class:`Entry` and :class:`Change`.

An :class:`Entry` is one row of the journal (see :mod:`driveserver.meta.journal`); compaction
(:mod:`driveserver.sync.compaction`) turns a page of them into :class:`Change` s, and snapshot
listings produce changes directly. A change's :meth:`Change.to_json` is its shape on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..meta.db import Row


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry; ``implied`` marks a delete implied by the delete of a folder above."""

    workspace_id: str
    seq: int
    file_id: str
    action: str
    path: str
    old_path: str | None
    is_directory: bool
    version: int
    size: int
    checksum: str | None
    user_id: str
    device_id: str | None
    created_at: float
    implied: bool = False
    executable: bool = False
    symlink: bool = False

    @classmethod
    def from_row(cls, row: Row) -> Entry:
        return cls(row["workspace_id"], row["seq"], row["file_id"], row["action"], row["path"],
                   row["old_path"], bool(row["is_directory"]), row["version"], row["size"],
                   row["checksum"], row["user_id"], row["device_id"], row["created_at"],
                   executable=bool(row["executable"]), symlink=bool(row["symlink"]))


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of an answer. ``devices`` are the devices whose changes it stands for (not sent):
    an entry standing only for the asking device's own changes is left out of its answer."""

    seq: int | None
    workspace_id: str
    file_id: str
    path: str
    old_path: str | None
    action: str
    version: int
    size: int
    checksum: str | None
    is_directory: bool
    device_id: str | None
    user_id: str | None
    modified_at: float
    devices: frozenset[str | None] = frozenset()
    executable: bool = False
    symlink: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "workspace_id": self.workspace_id, "file_id": self.file_id,
                "path": self.path, "old_path": self.old_path, "action": self.action,
                "version": self.version, "size": self.size, "checksum": self.checksum,
                "executable": self.executable, "symlink": self.symlink,
                "is_directory": self.is_directory, "device_id": self.device_id,
                "user_id": self.user_id, "modified_at": self.modified_at}

    def only_from(self, device_id: str | None) -> bool:
        return device_id is not None and self.devices == {device_id}
