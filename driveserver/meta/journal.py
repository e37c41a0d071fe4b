"""The change journal: every committed change to a tree, in order, written in the same transaction.

Each workspace has its own sequence (``workspaces.seq``), bumped inside the transaction that makes
the change, so a change that commits is always journalled and one that rolls back never is. The
long-poll hub is woken by a post-commit hook, never before the commit.

Entries older than the retention are pruned (:func:`prune_journal`), a prefix of each
workspace's journal at a time; ``journal_floors`` remembers where each journal now begins.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from .db import Database, Row, Tx
from .mounts import workspace_path

ACTIONS = ("create", "modify", "move", "delete", "restore", "share", "unshare")
PRUNE_BATCH = 5000
_INSERT = ("INSERT INTO journal (workspace_id, seq, file_id, action, path, old_path, is_directory,"
           " version, size, checksum, executable, symlink, user_id, device_id, created_at)"
           " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")

# Called after commit with (workspace_id, seq, device_id); build_app wires the hub here.
CommitListener = Callable[[str, int, str | None], None]


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the user and the device their token is bound to (if any)."""

    user_id: str
    device_id: str | None = None


class Journal:
    def __init__(self) -> None:
        self._listeners: list[CommitListener] = []

    def subscribe(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    async def record(self, tx: Tx, file: Row, action: str, actor: Actor,
                     old_path: str | None = None, path: str | None = None) -> int:
        """Append one entry for ``file`` (its row as it is after the change) and return its seq.

        The entry's path is relative to the file's workspace (see ``meta.mounts``), so one entry
        serves the owner and everyone the workspace is shared with; ``old_path`` (of a move) must
        be relative to the same workspace.
        """
        assert action in ACTIONS, action
        if path is None:  # given only for an item that just left the workspace ``file`` names
            path = await workspace_path(tx, file)
        workspace_id = file["workspace_id"]
        await tx.execute("UPDATE workspaces SET seq = seq + 1 WHERE id = ?", (workspace_id,))
        seq = int(await tx.fetchval("SELECT seq FROM workspaces WHERE id = ?", (workspace_id,)))
        await tx.execute(_INSERT, (
            workspace_id, seq, file["id"], action, path, old_path, file["is_directory"],
            file["version"], file["size"], file["checksum"], file["executable"], file["symlink"],
            actor.user_id, actor.device_id, tx.now))
        tx.announce(workspace_id, seq, actor.device_id)
        for listener in self._listeners:
            tx.on_commit(functools.partial(listener, workspace_id, seq, actor.device_id))
        return seq

    async def record_subtree(self, tx: Tx, rows: list[Row], action: str, actor: Actor) -> None:
        """One entry per row, in the order given (parents first), each at its ``wpath`` (see
        :func:`~driveserver.meta.tree.live_subtree_with_paths`).

        What :meth:`record` does for each, in three statements per workspace instead of three per
        item: a folder of 50,000 items restored or moved into a shared folder once held the
        event loop for over a second with 150,000 statements. Each workspace's range of
        sequence numbers is reserved in one update, the entries go in with one ``executemany``
        in a worker thread, and one post-commit wake-up per workspace (its last seq) tells the
        hub as much as one per entry did.
        """
        assert action in ACTIONS, action
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["workspace_id"]] = counts.get(row["workspace_id"], 0) + 1
        next_seq: dict[str, int] = {}
        for workspace_id, count in counts.items():
            await tx.execute("UPDATE workspaces SET seq = seq + ? WHERE id = ?",
                             (count, workspace_id))
            last = int(await tx.fetchval("SELECT seq FROM workspaces WHERE id = ?",
                                         (workspace_id,)))
            next_seq[workspace_id] = last - count + 1
        entries = []
        for row in rows:
            workspace_id = row["workspace_id"]
            seq, next_seq[workspace_id] = next_seq[workspace_id], next_seq[workspace_id] + 1
            entries.append((workspace_id, seq, row["id"], action, row["wpath"], None,
                            row["is_directory"], row["version"], row["size"], row["checksum"],
                            row["executable"], row["symlink"], actor.user_id, actor.device_id,
                            tx.now))
        await tx.executemany(_INSERT, entries, offload=len(entries) > 64)
        for workspace_id in counts:
            tx.announce(workspace_id, next_seq[workspace_id] - 1, actor.device_id)
            for listener in self._listeners:
                tx.on_commit(functools.partial(listener, workspace_id,
                                               next_seq[workspace_id] - 1, actor.device_id))

    def touch(self, tx: Tx, workspace_id: str) -> None:
        """Wake ``workspace_id``'s listeners after commit although no entry was written.

        For changes to what a user can see rather than to a tree (a folder shared with them or
        unshared): their devices must ask the feed again now, not at their poll's timeout.
        """
        tx.announce(workspace_id, 0, None)
        for listener in self._listeners:
            tx.on_commit(functools.partial(listener, workspace_id, 0, None))


# --- retention --------------------------------------------------------------------------------

async def prune_journal(db: Database, retention_days: float, *, now: float | None = None) -> int:
    """Delete journal entries older than ``retention_days``; return how many were deleted.

    For the periodic maintenance task. Each workspace loses a prefix of its journal (by seq, so a
    clock step cannot punch holes in it), and ``journal_floors`` remembers the last seq deleted:
    a cursor behind it gets ``reset``. Deletes run in batches, each its own short transaction,
    so commits are never held up for long.
    """
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    targets = await db.fetchall(
        "SELECT workspace_id, MAX(seq) AS through FROM journal WHERE created_at < ?"
        " GROUP BY workspace_id", (cutoff,))
    deleted = 0
    for target in targets:
        ws, through = target["workspace_id"], int(target["through"])
        while True:
            async with db.transaction(offload=True) as tx:
                upto = await tx.fetchval(
                    "SELECT MAX(seq) FROM (SELECT seq FROM journal WHERE workspace_id = ?"
                    " AND seq <= ? ORDER BY seq LIMIT ?) AS batch", (ws, through, PRUNE_BATCH))
                if upto is None:
                    break
                cur = await tx.execute(
                    "DELETE FROM journal WHERE workspace_id = ? AND seq <= ?", (ws, upto))
                deleted += max(cur.rowcount, 0)
                await tx.execute(
                    "INSERT INTO journal_floors (workspace_id, pruned_through) VALUES (?, ?)"
                    " ON CONFLICT (workspace_id) DO UPDATE SET pruned_through ="
                    " excluded.pruned_through"
                    " WHERE excluded.pruned_through > journal_floors.pruned_through", (ws, upto))
            if upto >= through:
                break
    return deleted
