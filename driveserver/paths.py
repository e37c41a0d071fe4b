"""Path and name rules, in one place so every route (and the sync client) agrees on them.

Paths are absolute POSIX-style, NFC-normalised and case-preserving; two names in one folder may
not differ only by case (``name_key`` is the comparison key), because macOS and Windows clients
cannot hold both.
"""

from __future__ import annotations

import unicodedata

from .errors import BadRequest

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# How many names a path may have below the root, and how deep anything may lie in its owner's
# drive (issue 12, finding 4). 4096 bytes alone let one request name ~2,000 one-letter levels,
# and every walk up or down the tree is as long as it is deep. Real trees stay far below this
# (Windows' 260-character MAX_PATH already stops most at a few dozen levels, macOS's PATH_MAX is
# 1024 bytes); 256 keeps every walk a few hundred indexed rows at most.
MAX_DEPTH = 256


def name_key(name: str) -> str:
    """The key under which a name is unique in its folder: NFC, then case-folded."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


# Bidirectional overrides and isolates: "invoice\u202Efdp.exe" shows as "invoiceexe.pdf".
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


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


def validate_name(name: str) -> str:
    """Return the NFC form of a single path component, or raise :class:`BadRequest`."""
    name = unicodedata.normalize("NFC", name)
    if name == "":
        raise BadRequest("a name may not be empty", code="invalid_name")
    if name in (".", ".."):
        raise BadRequest(f"{name!r} is not a valid name", code="invalid_name")
    if "/" in name:
        raise BadRequest("a name may not contain '/'", code="invalid_name")
    if "\x00" in name:
        raise BadRequest("a name may not contain NUL", code="invalid_name")
    why = refused_characters(name)
    if why is not None:
        raise BadRequest(f"a name may not contain {why}", code="invalid_name")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadRequest(f"a name may be at most {MAX_NAME_BYTES} bytes", code="name_too_long")
    return name


def split_path(path: object) -> list[str]:
    """Validate an absolute path and return its components (``[]`` for the root ``/``)."""
    if not isinstance(path, str):
        raise BadRequest("path must be a string", code="invalid_path")
    if "\x00" in path:
        raise BadRequest("a path may not contain NUL", code="invalid_path")
    path = unicodedata.normalize("NFC", path)
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise BadRequest(f"a path may be at most {MAX_PATH_BYTES} bytes", code="path_too_long")
    if not path.startswith("/"):
        raise BadRequest("path must be absolute (start with '/')", code="invalid_path")
    parts = path.split("/")[1:]
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash is harmless: "/Work/" is "/Work"
    if len(parts) > MAX_DEPTH:
        raise too_deep()
    return [validate_name(p) for p in parts]


def too_deep() -> BadRequest:
    """The error for anything that would lie more than ``MAX_DEPTH`` levels deep."""
    return BadRequest(f"a path may be at most {MAX_DEPTH} folders deep", code="path_too_deep",
                      max_depth=MAX_DEPTH)


def join_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)
