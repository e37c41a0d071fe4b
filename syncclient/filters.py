"""Pure rules applied around the planner: which parts of the three trees a round leaves alone
(before :func:`~syncclient.planner.plan`), and which planned operations can no longer reach the
server (after it).

No I/O: trees and names in, trees, operations and notices out, so the Hypothesis model of
``tests/test_sync_planner.py`` runs them with the planner (unreadable paths, names this computer
cannot create, mounts no longer shared).

* A path the scan could not read is left alone on both sides, with everything below it: a
  folder we cannot list must not look emptied (``problems``).
* A name this computer cannot create stays on the server, alone, never deleted there; an item
  renamed on the server to such a name keeps its copy here, no longer synced.
* Under ``/Shared with me/X`` when X is no longer shared with this user, nothing goes to the
  server any more: what the user changed there stays here, unsynced (``outside_shares``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from . import names
from .planner import TO_SERVER, Node, Op

SHARED_ROOT = "Shared with me"  # where the server mounts folders shared with this user
NOT_HERE = "not synced to this computer"
NOT_ON_WINDOWS = "Windows computers will not get it"
NO_LONGER_SHARED = "kept on this computer only: the folder is no longer shared with you"
NOT_A_SHARE = ("kept on this computer only: only folders shared with you sync in"
               f" {SHARED_ROOT}")


class _Identified(Protocol):
    @property
    def file_id(self) -> str | None: ...


def at_or_below(path: str, roots: Container[str]) -> bool:
    """Is ``path`` one of ``roots`` or below one of them?"""
    while path:
        if path in roots:
            return True
        path = path.rpartition("/")[0]
    return False


@dataclass
class Filtered:
    """The remote and synced trees a round plans on, the local paths it leaves out, and the
    notices of items this computer cannot hold (path -> why)."""

    remote: dict[str, Node]
    synced: dict[str, Node]
    dropped_local: set[str] = field(default_factory=set)
    not_here: dict[str, str] = field(default_factory=dict)


def filter_trees(local: Iterable[str], remote: Mapping[str, Node], synced: Mapping[str, Node],
                 problems: Collection[str] = (),
                 uncreatable: Callable[[str], str | None] | None = None,
                 recorded: Mapping[str, _Identified] | None = None) -> Filtered:
    """What a round leaves alone. ``local``: the paths the scan found; ``problems``: the paths
    it could not read (``"/"``: the root itself); ``uncreatable``: why this computer cannot
    create a path, or None if it can create any the server accepts; ``recorded``: every synced
    record (default ``synced``), ignored ones too, to find items renamed out of reach."""
    out_remote, out_synced = dict(remote), dict(synced)
    if problems:
        def troubled(path: str) -> bool:
            return at_or_below(path, problems) or "/" in problems

        out_synced = {p: n for p, n in out_synced.items() if not troubled(p)}
        out_remote = {p: n for p, n in out_remote.items() if not troubled(p)}
    out = Filtered(out_remote, out_synced)
    if uncreatable is None:
        return out
    here = {p: why for p in out_remote if (why := uncreatable(p)) is not None}
    # An item renamed on the server to such a name keeps its copy here, as it is, no longer
    # synced: it must not be deleted as if it were gone, nor sent back. (Unless the server has
    # another item at the old path now: that one comes here.)
    renamed = {out_remote[p].file_id: p for p in here if out_remote[p].file_id}
    records = synced if recorded is None else recorded
    for old, e in records.items():
        new = renamed.get(e.file_id) if e.file_id else None
        if new is not None and new != old and old not in out_remote:
            here[old] = (f"renamed on the server to {new}, a name this computer cannot "
                         f"create: the copy here is kept as it was and is {NOT_HERE}")
    out.remote = {p: n for p, n in out_remote.items() if not at_or_below(p, here)}
    out.synced = {p: n for p, n in out_synced.items() if not at_or_below(p, here)}
    out.dropped_local = {p for p in local if at_or_below(p, here)}
    out.not_here = here
    return out


def local_uncreatable() -> Callable[[str], str | None] | None:
    """The ``uncreatable`` rule of this computer for :func:`filter_trees` (None on a system
    that can create every name the server accepts)."""
    return None if names.LOCAL_RULES is names.posix_problem else names.uncreatable_here


def not_on_windows(local: Iterable[str]) -> dict[str, str]:
    """Notices for local items Windows cannot hold: they are uploaded (other systems get
    them), and the user is told Windows computers will not."""
    return {p: f"{why}: {NOT_ON_WINDOWS}" for p in local
            if (why := names.windows_problem(p.rpartition("/")[2])) is not None}


def mount_of(path: str) -> str | None:
    """``/Shared with me/X`` for a path at or below it, else None."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] == SHARED_ROOT:
        return "/".join(parts[:3])
    return None


def outside_shares(ops: Iterable[Op], remote: Container[str], synced: Container[str]
                   ) -> tuple[list[Op], dict[str, str]]:
    """The plan rewritten for mounts no longer shared: an operation that would send something
    under ``/Shared with me/X`` when X is not (or no longer) on the server is dropped, and a
    synced record there is forgotten instead (the owner took the folder back; whatever the user
    changed there stays on this computer, unsynced, and nothing tries to upload it again and
    again). The same for something put straight into ``/Shared with me`` under a name no
    share ever had (a folder made there is not a share). Also the notices to show (path ->
    why)."""
    kept: list[Op] = []
    notices: dict[str, str] = {}
    for op in ops:
        mount = mount_of(op.path)
        if op.kind in TO_SERVER and mount is not None and mount not in remote:
            notices[op.path] = NO_LONGER_SHARED if mount in synced else NOT_A_SHARE
            if op.path in synced:
                kept.append(Op("forget", op.path, "no longer shared; kept locally"))
            continue
        kept.append(op)
    return kept, notices
