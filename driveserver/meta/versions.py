"""File versions: the compare-and-swap commit of a block list, version history and retention.

A version is an ordered list of block hashes. Committing one is a single transaction that moves
``files.version`` by compare-and-swap (``UPDATE ... WHERE id = ? AND version = ?``; the row count
decides), records the version and its blocks, and journals the change. Nothing else ever changes
a version number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from driveproto.blocks import CHUNKING_SCHEME, content_checksum

from ..errors import Conflict, NotFound
from .accounts import check_quota, spent_quota, workspace_owner
from .db import Row, Tx
from .journal import Actor, Journal
from .tree import get_file


@dataclass(frozen=True)
class BlockRef:
    hash: str
    size: int


@dataclass(frozen=True)
class CommitResult:
    status: str  # "created" (a new version) or "unchanged" (a retry, or identical content)
    file_id: str
    version: int


async def version_row(q: Any, file_id: str, version: int | None) -> Row | None:
    if version is None:
        return await q.fetchone(
            "SELECT v.* FROM file_versions v JOIN files f ON f.id = v.file_id"
            " WHERE v.file_id = ? AND v.version = f.version", (file_id,))
    return await q.fetchone("SELECT * FROM file_versions WHERE file_id = ? AND version = ?",
                            (file_id, version))


async def version_blocks(q: Any, version_id: int) -> list[BlockRef]:
    rows = await q.fetchall(
        "SELECT block_hash, size FROM version_blocks WHERE version_id = ? ORDER BY ord",
        (version_id,))
    return [BlockRef(r["block_hash"], r["size"]) for r in rows]


async def history(q: Any, file_id: str) -> list[Row]:
    """Every kept version of ``file_id``, newest first, with who made it: ``email`` of the user
    and ``device_name`` of the device (None once either is gone)."""
    return await q.fetchall(
        "SELECT v.version, v.size, v.checksum, v.created_at, v.user_id, u.email, v.device_id,"
        " d.name AS device_name, v.restored_from, v.executable, v.symlink FROM file_versions v"
        " LEFT JOIN users u ON u.id = v.user_id LEFT JOIN devices d ON d.id = v.device_id"
        " WHERE v.file_id = ? ORDER BY v.version DESC", (file_id,))


async def forget_abandoned(tx: Tx, cutoff: float) -> int:
    """Remove files whose first upload never completed (version 0) and that were created
    before ``cutoff`` (GC's grace period); how many."""
    cur = await tx.execute(
        "DELETE FROM files WHERE is_directory = 0 AND version = 0 AND created_at < ?", (cutoff,))
    return cur.rowcount


class Versions:
    def __init__(self, journal: Journal, keep_versions: int, keep_days: float) -> None:
        self.journal = journal
        self.keep_versions = keep_versions
        self.keep_days = keep_days

    async def commit(self, tx: Tx, file_id: str, actor: Actor, blocks: list[BlockRef],
                     base_version: int | None, object_names: dict[str, str],
                     restored_from: int | None = None,
                     journal_as: Actor | None = None,
                     executable: bool | None = None,
                     symlink: bool | None = None,
                     chunking: str = CHUNKING_SCHEME) -> CommitResult:
        """Make ``blocks`` the file's new version, if ``base_version`` is still current.

        The version is credited to ``actor``; the journal entry names ``journal_as`` if given
        (a restore: news to every device, see ``api.common.news_to_every_device``).
        ``executable`` is the new version's exec bit, ``symlink`` whether it is a symbolic
        link (its content is the target); None keeps the current one (a client that does not
        know about them never clears them).

        ``base_version=None`` means "whatever is current" (last writer wins). Retrying with the
        same blocks after a lost response returns the version the first attempt made.
        ``object_names`` maps every hash to its storage name, for the ``blocks`` table.
        ``chunking`` names the scheme the client cut the content by (a label: see
        docs/chunking.md).
        """
        file = await get_file(tx, file_id)
        if file is None or file["trashed_at"] is not None or file["is_directory"]:
            raise NotFound("no such file")
        hashes = [b.hash for b in blocks]
        checksum = content_checksum(hashes)
        size = sum(b.size for b in blocks)
        current = int(file["version"])
        exe = bool(file["executable"]) if executable is None else executable
        link = bool(file["symlink"]) if symlink is None else symlink
        if restored_from is None:
            retry = await self._earlier_identical(tx, file, base_version, checksum, (exe, link),
                                                  actor)
            if retry is not None:
                return retry
        expected = current if base_version is None else base_version
        if current != expected:
            raise Conflict("the file changed since base_version", code="version_conflict",
                           current_version=current, base_version=base_version)
        owner = await workspace_owner(tx, file["workspace_id"])
        assert owner is not None
        await check_quota(tx, owner["id"], owner["quota_bytes"], size - file["size"],
                          "this version would exceed the owner's quota")
        cur = await tx.execute(
            "UPDATE files SET version = version + 1, size = ?, checksum = ?, executable = ?,"
            " symlink = ?, modified_at = ? WHERE id = ? AND version = ?",
            (size, checksum, int(exe), int(link), tx.now, file_id, expected))
        if cur.rowcount != 1:  # cannot happen under the single writer, but the CAS decides
            raise Conflict("the file changed since base_version", code="version_conflict")
        new_version = expected + 1
        cur = await tx.execute(
            "INSERT INTO file_versions (file_id, version, size, checksum, chunking, created_at,"
            " user_id, device_id, restored_from, executable, symlink)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (file_id, new_version, size, checksum, chunking, tx.now, actor.user_id,
             actor.device_id, restored_from, int(exe), int(link)))
        version_id = cur.lastrowid
        await tx.executemany(
            "INSERT INTO version_blocks (version_id, ord, block_hash, size) VALUES (?,?,?,?)",
            [(version_id, i, b.hash, b.size) for i, b in enumerate(blocks)])
        await tx.executemany(
            "INSERT INTO blocks (hash, object_name, size, created_at) VALUES (?,?,?,?)"
            " ON CONFLICT DO NOTHING",
            [(b.hash, object_names[b.hash], b.size, tx.now) for b in {b.hash: b for b in blocks}.values()])
        row = await get_file(tx, file_id)
        assert row is not None
        await self.journal.record(tx, row, "create" if current == 0 else "modify",
                                  journal_as or actor)
        await self._prune(tx, file_id, new_version)
        spent_quota(tx, owner["id"], size - file["size"])
        return CommitResult("created", file_id, new_version)

    async def _earlier_identical(self, tx: Tx, file: Row, base_version: int | None,
                                 checksum: str, kind: tuple[bool, bool], actor: Actor
                                 ) -> CommitResult | None:
        """The version a previous attempt of this same commit made, if any (idempotent retry).
        ``kind`` is (executable, symlink): part of what a version holds."""
        current = int(file["version"])
        if base_version is None:
            if current > 0 and file["checksum"] == checksum and \
                    (bool(file["executable"]), bool(file["symlink"])) == kind:
                return CommitResult("unchanged", file["id"], current)
            return None
        if current == base_version + 1:
            made = await version_row(tx, file["id"], current)
            if made is not None and made["checksum"] == checksum and \
                    (bool(made["executable"]), bool(made["symlink"])) == kind and \
                    made["user_id"] == actor.user_id:
                return CommitResult("unchanged", file["id"], current)
        return None

    async def _prune(self, tx: Tx, file_id: str, current: int) -> None:
        """Version retention: keep the newest ``keep_versions`` and those younger than
        ``keep_days`` (0 = no limit); the current version is always kept. Blocks left
        unreferenced are collected by the GC after its grace period."""
        if not self.keep_versions and not self.keep_days:
            return
        # A version goes only when it is past *both* limits that are set: outside the newest
        # keep_versions and older than keep_days.
        count_cut = current - self.keep_versions if self.keep_versions else current - 1
        age_cut = tx.now - self.keep_days * 86400 if self.keep_days else float("inf")
        await tx.execute(
            "DELETE FROM file_versions WHERE file_id = ? AND version < ? AND version <= ?"
            " AND created_at < ?", (file_id, current, count_cut, age_cut))
