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
    return [validate_name(p) for p in parts]


def join_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)
