"""Garbage collection and cold tiering of blocks.

No store I/O happens inside a write transaction (it would hold the single writer, every other
writer of the server, across file-system or S3 round trips), so neither GC's deletes nor
``complete``'s look-ups can rely on the writer to keep them apart. They rely on tombstones
(``block_tombstones``, one per object name) and on a counter, ``gc_epoch.dropped``.

GC, for each chunk of objects:

1. *mark* (one write transaction): tombstone the recorded blocks that no version references and
   that are older than the grace period, or, for the orphan pass, the stored objects that no
   ``blocks`` row records (checked again inside the transaction) and whose object is older;
2. *delete* the tombstoned objects from the store, outside any transaction;
3. *drop* (a second write transaction): remove the tombstones and the ``blocks`` rows, and add
   one to ``gc_epoch.dropped``.

``complete`` (:mod:`driveserver.api.complete_routes`):

a. reads ``gc_epoch.dropped`` (committed state), then asks the store, outside any transaction,
   whether each block that comes with a receipt is stored;
b. in its write transaction, treats every tombstoned block as missing, and trusts a "stored"
   answer only if ``gc_epoch.dropped`` has not moved since (a). If it has, it rolls back and
   starts again from (a); after a few tries it reports the blocks missing (the client sends
   them again).

Safety argument: no committed version references a deleted object. Say ``complete`` commits at
C, referencing block B whose object GC deletes at D, after ``complete``'s store look-up (a
delete before the look-up would have made the look-up answer "missing", unless the object was
stored again after the delete, and then this delete does not remove that copy). D is preceded
by the mark transaction M that tombstoned B and followed by the drop transaction P.

* M after C: M sees the reference C committed (a ``version_blocks`` row, and a ``blocks`` row
  for the orphan pass) and does not tombstone B. Contradiction.
* M before C, P after C: C sees B's tombstone and refuses B. Contradiction.
* P before C: P moved ``gc_epoch.dropped`` after D, so after the look-up, so after (a) read the
  epoch; C sees the epoch moved and does not trust the look-up. Contradiction.

So no such D exists. Restoring an old version references only blocks that version references
already, which are never tombstoned. The object-age test (``stat_mtime``) makes an object a PUT
has just stored safe under a grace period; with a negative grace (tests) GC may delete it before
its ``complete``, which then answers ``missing_blocks`` and the client sends it again: a
retry, never a version pointing at nothing. A GC killed between mark and drop leaves
tombstones: their blocks count as missing until :func:`finish_interrupted` (at the server's
start and at the start of every run) deletes and drops them.

Several writers (PostgreSQL): M and C each read what the other writes (references, tombstones,
the epoch row), a write skew that READ COMMITTED lets through; both units must run SERIALIZABLE
(one of them aborts and is retried), or C must lock the epoch row and M the ``blocks`` row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from .meta import blocks
from .meta.db import Database, Tx
from .meta.upload_grants import forget_expired
from .meta.versions import forget_abandoned
from .storage.base import BlockNotFound
from .storage.tiered import TieredBlockStore

log = logging.getLogger("driveserver.gc")
T = TypeVar("T")

CHUNK = 200
PARALLEL = 8  # store deletes (and stats) in flight at once; none inside a transaction


async def _each(items: Iterable[T], fn: Callable[[T], Awaitable[Any]]) -> None:
    """Await ``fn(item)`` for every item, ``PARALLEL`` at a time (store round trips overlap)."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(item: T) -> None:
        async with gate:
            await fn(item)

    await asyncio.gather(*(one(i) for i in items))


async def _delete_and_drop(db: Database, store: TieredBlockStore, names: list[str]) -> None:
    """Steps 2 and 3 for tombstoned ``names`` (see the module docstring)."""
    if not names:
        return
    await _each(names, store.delete)

    async def drop(tx: Tx) -> None:
        await blocks.drop_tombstones(tx, names)

    await db.write(drop, offload=True)


async def finish_interrupted(db: Database, store: TieredBlockStore) -> int:
    """Delete the objects of the tombstones a killed GC run left, and drop them; how many.

    Until then ``complete`` refuses those blocks (their objects may be gone already), so the
    server runs this at start-up as well as at the start of every collection."""
    names = await blocks.all_tombstones(db)
    await _delete_and_drop(db, store, names)
    return len(names)


async def collect_garbage(db: Database, store: TieredBlockStore,
                          grace_seconds: float) -> str:
    cutoff = time.time() - grace_seconds

    async def forget(tx: Tx) -> int:
        abandoned = await forget_abandoned(tx, cutoff)
        # Upload grants past their life: their tokens are refused anyway, their rows only count.
        await forget_expired(tx, time.time())
        return abandoned

    abandoned = await db.write(forget, offload=True)
    await finish_interrupted(db, store)
    deleted = 0
    while True:
        async def mark(tx: Tx) -> list[str]:
            return await blocks.mark_unreferenced(tx, cutoff, CHUNK)

        names = await db.write(mark, offload=True)
        await _delete_and_drop(db, store, names)
        deleted += len(names)
        if len(names) < CHUNK:
            break
    orphans = 0
    candidates: list[str] = []
    async for name in store.iterate():
        candidates.append(name)
    for i in range(0, len(candidates), CHUNK):
        chunk = candidates[i: i + CHUNK]
        # A first look without the writer; the mark below checks again inside its transaction.
        known = await blocks.recorded(db, chunk)
        old: list[str] = []

        async def age(name: str, old: list[str] = old) -> None:
            mtime = await store.stat_mtime(name)
            if mtime is not None and mtime < cutoff:
                old.append(name)

        await _each([n for n in chunk if n not in known], age)
        if not old:
            continue

        async def mark_orphans(tx: Tx, old: list[str] = old) -> list[str]:
            return await blocks.mark_orphans(tx, old)

        names = await db.write(mark_orphans, offload=True)
        await _delete_and_drop(db, store, names)
        orphans += len(names)
    report = (f"gc: {deleted} unreferenced block(s) and {orphans} never-committed block(s) "
              f"deleted, {abandoned} abandoned upload(s) removed")
    log.info(report)
    return report


async def move_cold_blocks(db: Database, store: TieredBlockStore, age_seconds: float) -> int:
    """Move blocks that only versions older than ``age_seconds`` reference to the cold tier.

    Each chunk is moved in the store first (copy, then delete the hot copy; outside any
    transaction) and recorded after, in one transaction. A crash in between leaves rows saying
    ``hot`` for blocks already cold: reads fall back to the cold tier, and the next run finds
    no hot copy and records them. A block GC deleted meanwhile is skipped."""
    cutoff = time.time() - age_seconds
    rows = await blocks.cold_candidates(db, cutoff)
    moved = 0
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i: i + CHUNK]
        done: list[str] = []

        async def move(row: tuple[str, str], done: list[str] = done) -> None:
            try:
                await store.move_to_cold(row[1])
            except BlockNotFound:  # collected since the candidates were read
                return
            done.append(row[0])

        await _each(chunk, move)

        async def record(tx: Tx, done: list[str] = done) -> None:
            await blocks.record_cold(tx, done)

        if done:
            await db.write(record)
        moved += len(done)
    if moved:
        log.info("moved %d block(s) to the cold tier", moved)
    return moved
