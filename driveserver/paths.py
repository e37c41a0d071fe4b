"""The server's checks of paths and names: a rule broken is a 400 with its own code.

The rules themselves (limits, ``name_key``, the characters no name may hold) live in
:mod:`driveproto.names`, which the sync client asks too, so that both sides agree on them.
"""

from __future__ import annotations

import unicodedata

from driveproto.names import MAX_DEPTH, MAX_NAME_BYTES, MAX_PATH_BYTES, refused_characters

from .errors import BadRequest


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
