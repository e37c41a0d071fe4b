"""Garbage collection and cold tiering of blocks.

Safety argument. A block is deleted only when no version references it and it is older than the
grace period, and the delete happens *inside a write transaction*. ``complete`` checks, inside
its own write transaction, that every block it is about to reference is either referenced
already or still stored. The metadata database has a single writer, so the two never
interleave: either the commit comes first (then the block is referenced and GC skips it) or the
delete comes first (then ``complete`` reports the block missing and the client re-sends it — it
still has the bytes). No version can ever point at a deleted block.
"""

from __future__ import annotations

import logging
import time

from .meta.db import Database
from .meta.upload_grants import forget_expired
from .storage.tiered import TieredBlockStore

log = logging.getLogger("driveserver.gc")

CHUNK = 200


async def collect_garbage(db: Database, store: TieredBlockStore,
                          grace_seconds: float) -> str:
    cutoff = time.time() - grace_seconds
    async with db.transaction(offload=True) as tx:
        # Files whose first upload never completed (version 0) are abandoned after the grace.
        cur = await tx.execute(
            "DELETE FROM files WHERE is_directory = 0 AND version = 0 AND created_at < ?",
            (cutoff,))
        abandoned = cur.rowcount
        # Upload grants past their life: their tokens are refused anyway, their rows only count.
        await forget_expired(tx, time.time())
    deleted = 0
    while True:
        async with db.transaction(offload=True) as tx:
            rows = await tx.fetchall(
                "SELECT hash, object_name FROM blocks b WHERE created_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM version_blocks vb WHERE vb.block_hash = b.hash) LIMIT ?",
                (cutoff, CHUNK))
            for r in rows:
                await store.delete(r["object_name"])
                await tx.execute("DELETE FROM blocks WHERE hash = ?", (r["hash"],))
        deleted += len(rows)
        if len(rows) < CHUNK:
            break
    # Objects that no version ever recorded: uploads that were never completed.
    orphans = 0
    candidates: list[str] = []
    async for name in store.iterate():
        candidates.append(name)
    for i in range(0, len(candidates), CHUNK):
        chunk = candidates[i: i + CHUNK]
        async with db.transaction(offload=True) as tx:
            marks = ",".join("?" * len(chunk))
            recorded = {r["object_name"] for r in await tx.fetchall(
                f"SELECT object_name FROM blocks WHERE object_name IN ({marks})", chunk)}
            for name in chunk:
                if name in recorded:
                    continue
                mtime = await store.stat_mtime(name)
                if mtime is not None and mtime < cutoff:
                    await store.delete(name)
                    orphans += 1
    report = (f"gc: {deleted} unreferenced block(s) and {orphans} never-committed block(s) "
              f"deleted, {abandoned} abandoned upload(s) removed")
    log.info(report)
    return report


async def move_cold_blocks(db: Database, store: TieredBlockStore, age_seconds: float) -> int:
    """Move blocks that only versions older than ``age_seconds`` reference to the cold tier."""
    cutoff = time.time() - age_seconds
    rows = await db.fetchall(
        "SELECT b.hash, b.object_name FROM blocks b WHERE b.tier = 'hot'"
        " AND EXISTS (SELECT 1 FROM version_blocks vb WHERE vb.block_hash = b.hash)"
        " AND NOT EXISTS (SELECT 1 FROM version_blocks vb"
        "   JOIN file_versions v ON v.id = vb.version_id"
        "   WHERE vb.block_hash = b.hash AND v.created_at >= ?)", (cutoff,))
    for r in rows:
        await store.move_to_cold(r["object_name"])
        async with db.transaction(offload=True) as tx:
            await tx.execute("UPDATE blocks SET tier = 'cold' WHERE hash = ?", (r["hash"],))
    if rows:
        log.info("moved %d block(s) to the cold tier", len(rows))
    return len(rows)
