"""Which names in the folder are never synced.

The engine's own files (the ``.drive-sync`` marker dir and the hidden temp files downloads are
assembled in), editors' lock and swap files, OS litter, partial ``*.tmp`` files, and the
patterns of a ``.drivesyncignore`` file in the folder root (one ``fnmatch`` pattern a line,
matched against the name and against the path relative to the root; ``#`` starts a comment).
"""

from __future__ import annotations

import fnmatch
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

    def __call__(self, rel_path: str) -> bool:
        """Is ``/a/b.txt`` (relative to the root, leading slash) ignored, or inside an ignored
        folder?"""
        parts = rel_path.strip("/").split("/")
        if parts[0] == MARKER:
            return True
        for i, name in enumerate(parts):
            sub = "/".join(parts[: i + 1])
            for pat in self.patterns:
                if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(sub, pat.lstrip("/")):
                    return True
        return False
