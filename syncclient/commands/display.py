"""How the commands print a name: on one line, whatever it holds (see ``syncclient/cli.py``:
names are printed one item a line, quoted with C-style escapes if they hold a control
character, as git prints such paths)."""

from __future__ import annotations

import unicodedata


def shown(text: str) -> str:
    """``text`` as one line: unchanged if it has no control character, else quoted with
    C-style escapes (a newline in a name must not look like two items, nor an escape sequence
    reach the terminal). Bytes that were not UTF-8 (``os.fsdecode``) are shown as ``\\xNN``."""
    if not any(_unprintable(c) for c in text):
        return text
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif _unprintable(c):
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidirectional overrides and isolates reorder what follows them on screen.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unprintable(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI
