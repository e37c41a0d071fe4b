"""The name rules client and server share.

Paths are absolute POSIX-style, NFC-normalised and case-preserving; two names in one folder may
not differ only by case (:func:`name_key` is the comparison key), because macOS and Windows
clients cannot hold both. The server refuses what breaks these rules (``driveserver.paths``
turns them into 400s); the client asks the same functions first, so that it reports such a local
name once instead of failing to upload it for ever.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "BIDI_CONTROLS",
    "MAX_DEPTH",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "SHARED_ROOT",
    "name_key",
    "refused_characters",
]

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# How many names a path may have below the root, and how deep anything may lie in its owner's
# drive (issue 12, finding 4). 4096 bytes alone let one request name ~2,000 one-letter levels,
# and every walk up or down the tree is as long as it is deep. Real trees stay far below this
# (Windows' 260-character MAX_PATH already stops most at a few dozen levels, macOS's PATH_MAX is
# 1024 bytes); 256 keeps every walk a few hundred indexed rows at most.
MAX_DEPTH = 256

SHARED_ROOT = "Shared with me"
"""The virtual folder of a user's root under which each folder shared with them is mounted."""

# Bidirectional overrides and isolates: "invoice\u202Efdp.exe" shows as "invoiceexe.pdf".
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def name_key(name: str) -> str:
    """The key under which a name is unique in its folder: NFC, then case-folded."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def refused_characters(name: str) -> str | None:
    """What in ``name`` no name may hold, or None: control characters (C0, DEL and C1), and
    the bidirectional controls that make a name show as another one. (Line and paragraph
    separators are allowed: odd, but they disguise nothing.) The sync client asks this too,
    so that it reports such a local name instead of failing to upload it for ever."""
    for c in name:
        if unicodedata.category(c) == "Cc":
            return f"control characters ({c!r})"
        if c in BIDI_CONTROLS:
            return f"bidirectional control characters (U+{ord(c):04X})"
    return None
