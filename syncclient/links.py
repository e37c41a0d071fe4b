"""Which symbolic links are synced: those whose target is relative and, read from where the link
is, stays inside the sync folder. Such a link means the same on every computer the folder is
on; an absolute one (``/etc/passwd``, ``/home/me/x``) or one that climbs out (``../../x``) does
not, and a link created from someone else's shared folder must not point this computer's
programs anywhere outside it. Links are never followed: the check is on the text alone, and
since every synced link passes it, a chain of them stays inside too.
"""

from __future__ import annotations

import os
from pathlib import Path

from driveproto.blocks import block_hash, content_checksum

TARGET_MAX = 4096  # bytes; PATH_MAX on Linux (the server refuses longer ones too)


def symlink_stays_inside(link_path: str, target: str) -> bool:
    """May the link at ``link_path`` (``/a/b/link``, relative to the sync root) point at
    ``target``? Relative, and climbing (``..``) only at its start and no higher than the
    root: ``../x/y`` from ``/a/link`` is fine, ``x/../y`` is not, because ``x`` may itself be a
    link (to ``.``, or to a folder outside) and ``..`` would then climb from wherever it leads.
    Together with the rule that nothing is ever created below a link, the text alone then says
    where the link leads."""
    if not target or target.startswith("/") or "\0" in target or \
            len(target.encode("utf-8", "surrogateescape")) > TARGET_MAX:
        return False
    depth = len([p for p in link_path.strip("/").split("/")[:-1] if p])
    parts = [p for p in target.split("/") if p not in ("", ".")]
    climbs = 0
    while climbs < len(parts) and parts[climbs] == "..":
        climbs += 1
    return climbs <= depth and ".." not in parts[climbs:]


def resolves_inside(root: Path, link: Path, target: str) -> bool:
    """Where ``target`` leads from ``link`` on this disk (every link on the way followed) is
    inside ``root``: the last check before a link is created."""
    real_root = os.path.realpath(root)
    where = os.path.realpath(os.path.join(os.path.dirname(link), target))
    return where == real_root or where.startswith(real_root + os.sep)


def link_content(path: Path) -> tuple[str, tuple[str, ...], int]:
    """A symlink's checksum, block list and size, as the server keeps its content (the
    target's bytes, one block)."""
    target = os.fsencode(os.readlink(path))
    blocks = (block_hash(target),)
    return content_checksum(blocks), blocks, len(target)
