"""``drive-sync``: the desktop sync daemon (under construction: see issue 5)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("drive-sync: not implemented yet", file=sys.stderr)
    return 2
