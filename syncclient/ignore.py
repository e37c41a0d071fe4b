"""Which names in the folder are never synced.

The engine's own files (the ``.drive-sync`` marker dir and the hidden temp files downloads are
assembled in), editors' lock and swap files, OS litter, partial ``*.tmp`` files, and the
patterns of a ``.drivesyncignore`` file in the folder root (one ``fnmatch`` pattern a line,
matched against the name and against the path relative to the root; ``#`` starts a comment).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from .config import MARKER

TEMP_PREFIX = ".~drive-sync-"
"""Downloads are written to ``.~drive-sync-<random>.tmp`` next to their target."""

BUILTIN = ("~$*", ".~lock*", "*.swp", "*.swo", ".DS_Store", "Thumbs.db", "*.tmp",
           TEMP_PREFIX + "*", "desktop.ini")
IGNORE_FILE = ".drivesyncignore"


class Ignore:
    def __init__(self, root: Path) -> None:
        self.patterns: list[str] = list(BUILTIN)
        try:
            text = (root / IGNORE_FILE).read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                self.patterns.append(line.rstrip("/"))
        # One regular expression for all patterns (as fnmatchcase would match each in turn):
        # every scanned path and every watcher event is checked, tens of thousands a minute.
        self._name = re.compile("|".join(fnmatch.translate(p) for p in self.patterns))
        self._sub = re.compile("|".join(fnmatch.translate(p.lstrip("/"))
                                        for p in self.patterns))

    def __call__(self, rel_path: str) -> bool:
        """Is ``/a/b.txt`` (relative to the root, leading slash) ignored, or inside an ignored
        folder?"""
        parts = rel_path.strip("/").split("/")
        if parts[0] == MARKER:
            return True
        for i, name in enumerate(parts):
            if self._name.match(name) or self._sub.match("/".join(parts[: i + 1])):
                return True
        return False
