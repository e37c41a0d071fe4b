"""Names one computer can hold and another cannot.

The server takes any name of 1–255 UTF-8 bytes without ``/`` or NUL (see
``driveproto.names``), which Linux and macOS can both create. Windows cannot create names with
``< > : " | ? * \\`` or control characters, names ending in a space or a dot, or the device names
``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``–``COM9``, ``LPT1``–``LPT9`` (with any extension).
And Linux can hold a file name that is not UTF-8 at all, which no other system (nor the server)
can.

So: an item on the server whose name this computer cannot create is left alone (not downloaded,
never deleted) and reported as a notice; a local name that is not UTF-8 cannot be uploaded and is
reported as a problem to fix; a local name Windows cannot hold is uploaded (Linux and macOS
devices get it) with a notice that Windows devices will not.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

_WINDOWS_CHARS = frozenset('<>:"|?*\\') | frozenset(chr(c) for c in range(32))
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})


def windows_problem(name: str) -> str | None:
    """Why Windows cannot create ``name`` (a single path component), or None."""
    bad = sorted({c for c in name if c in _WINDOWS_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"the name contains {shown}, which Windows does not allow"
    if name.endswith((" ", ".")):
        return "the name ends with a space or a dot, which Windows does not allow"
    if name.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return "the name is reserved for a device on Windows"
    return None


def posix_problem(name: str) -> str | None:
    """Why Linux or macOS cannot create ``name``: never, for a name the server accepted."""
    del name
    return None


# The rules of the system this client runs on (tests of other systems' rules replace it).
LOCAL_RULES: Callable[[str], str | None] = windows_problem if sys.platform == "win32" \
    else posix_problem


def uncreatable_here(path: str) -> str | None:
    """Why this computer cannot create the item at ``path`` (``/a/b``), or None."""
    for name in path.strip("/").split("/"):
        why = LOCAL_RULES(name)
        if why is not None:
            return f"{why}: it stays on the server and is not synced to this computer"
    return None


def not_utf8(name: str) -> bool:
    """A name read from the file system that was not valid UTF-8 (``os.fsdecode`` turned the
    bad bytes into lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
