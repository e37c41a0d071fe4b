"""Echo suppression: the writes this engine made to the folder, so that the watcher can tell
them from the user's and a download does not wake the next round.

The watcher asks from its own thread; the engine records from the event loop. The record is a
dict replaced whole (never mutated while shared), so a reader sees either the old or the new.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

OWN_WRITE_SECONDS = 60.0  # how long the watcher may take to report one of our own writes

OwnKey = tuple[Any, ...]


def own_key(st: os.stat_result) -> OwnKey:
    """What must be unchanged for an item to still be ours: a file's size, mtime and inode; a
    folder's identity only (its mtime moves whenever a download lands in it)."""
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_ino)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class OwnWrites:
    """What this engine last did to a path below the root (spelled as the OS spells it): when,
    and the resulting ``own_key`` — or None if it removed the item."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._own: dict[str, tuple[float, OwnKey | None]] = {}

    def is_own_write(self, rel: str) -> bool:
        """Is the item at ``rel`` exactly as this engine left it moments ago? A user's edit since
        changes size, mtime or inode, so it is never mistaken for ours."""
        mark = self._own.get(rel)
        if mark is None or time.monotonic() - mark[0] > OWN_WRITE_SECONDS:
            return False
        try:
            st = os.lstat(self.root / rel.lstrip("/"))
        except FileNotFoundError:
            return mark[1] is None
        except OSError:
            return False
        return mark[1] == own_key(st)

    def wrote(self, target: Path, st: os.stat_result | None) -> None:
        """Record that the engine just left ``target`` as ``st`` shows (None: removed it)."""
        self._own[str(target)[len(str(self.root)):]] = (
            time.monotonic(), None if st is None else own_key(st))

    def forget_old(self) -> None:
        cutoff = time.monotonic() - OWN_WRITE_SECONDS
        # A new dict, swapped in whole: the watcher's thread may be reading the old one.
        self._own = {k: v for k, v in self._own.items() if v[0] >= cutoff}
