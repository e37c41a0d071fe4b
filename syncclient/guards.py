"""The guards that stop a round before it does harm: a missing folder must never read as
"the user deleted everything", and one round must not delete most of the server unasked.

``too_many_deletions`` is pure (the plan and the synced tree in, a reason or None out), so the
mass-deletion rule is tested without a folder or a server; ``check_deletions`` adds the pause
flag that ``drive-sync resume`` lifts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from .config import MARKER, Config
from .errors import FolderMissing
from .planner import Op
from .state import State, SyncedEntry


class Paused(Exception):
    """The deletion guard stopped the sync; ``drive-sync resume`` lets it go on."""


def check_folder(root: Path) -> None:
    """Stop with a clear error if the folder or its marker is gone (an unmounted disk, a
    wrong path): an empty folder must never look like "the user deleted everything"."""
    if not root.is_dir():
        raise FolderMissing(f"the sync folder {root} does not exist; not syncing "
                            "(nothing was deleted on the server)")
    if not (root / MARKER).is_dir():
        raise FolderMissing(f"the sync folder {root} has no {MARKER} marker; it may be "
                            "a different or unmounted folder, so nothing is synced. If it "
                            f"is right, create the folder {root / MARKER} to go on")


def too_many_deletions(ops: Iterable[Op], synced: Mapping[str, SyncedEntry], min_files: int,
                       share: float) -> str | None:
    """Why ``ops`` delete too much on the server (more than ``share`` of the synced files, once
    there are at least ``min_files``), or None."""
    files = [p for p, e in synced.items() if not e.is_dir]
    if len(files) < min_files:
        return None
    doomed: set[str] = set()
    for op in ops:
        if op.kind == "delete_remote":
            doomed.update(p for p in files if p == op.path or p.startswith(op.path + "/"))
    if len(doomed) <= share * len(files):
        return None
    return (f"{len(doomed)} of {len(files)} synced files were deleted in the folder; "
            "run `drive-sync resume` to delete them on the server too")


def check_deletions(state: State, config: Config, ops: list[Op]) -> None:
    """The mass-deletion guard: pause (raise :class:`Paused`, and say so in the state) when one
    round would delete too much on the server, unless the user said ``drive-sync resume``."""
    reason = too_many_deletions(ops, state.synced_entries(), config.delete_guard_min_files,
                                config.delete_guard_share)
    if reason is None:
        return
    if state.get("resume") == "1":
        state.set("resume", None)
        state.set("paused", None)
        return
    state.set("paused", reason)
    raise Paused(reason)
