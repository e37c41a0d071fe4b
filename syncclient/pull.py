"""The first stage of a round: the change feed applied to the remote tree cache in ``State``.

Each answer of the feed is applied in one transaction with the cursor that follows it, so a
crash leaves the cache and the cursor in step (the next pull starts where the last commit did).
"""

from __future__ import annotations

from driveproto.replies import ChangeEntry

from .planner import Node
from .remote_api import RemoteApi
from .state import State


async def pull(state: State, remote: RemoteApi, wait_seconds: float = 0) -> int:
    """Apply the change feed to the remote tree cache until it is current; the number of
    changes applied. With ``wait_seconds`` the first request is a long poll."""
    applied = 0
    while True:
        cursor = state.get("cursor") or "0"
        answer = await remote.changes(cursor, wait_seconds)
        wait_seconds = 0
        if state.get("cursor") not in (cursor, None) and cursor != "0":
            continue  # someone else advanced the cursor meanwhile: this answer is stale
        with state.transaction():
            if answer.get("reset"):
                state.clear_remote()
                state.set("cursor", "0")
                continue
            if cursor == "0":
                state.clear_remote()  # a full listing starts from nothing
            for change in answer["changes"]:
                apply_change(state, change)
                applied += 1
            state.set("cursor", answer["next_cursor"])
        if not answer.get("has_more"):
            return applied


def apply_change(state: State, c: ChangeEntry) -> None:
    """One change of the feed, applied to the cache: a deletion drops the item (and what the
    cache has below where it was), a move carries its subtree along, and an older state than
    the cache already has (one this device recorded from its own answer) is ignored."""
    known = state.remote_path_of(c["file_id"])
    if c["action"] == "delete":
        where = known or c.get("old_path") or c["path"]
        state.drop_remote_id(c["file_id"])
        state.drop_remote(where)
        return
    if known is not None and known != c["path"]:
        state.move_remote(known, c["path"])
    current = state.remote_by_path(c["path"])
    if current is not None and current.file_id == c["file_id"] and \
            current.version > c["version"]:
        return  # an older state than one we recorded ourselves
    state.put_remote(c["path"], Node(bool(c["is_directory"]), c.get("checksum"), c["file_id"],
                                     c["version"], None, c.get("size") or 0,
                                     bool(c.get("executable")), bool(c.get("symlink"))))
