"""The ``blocks`` table's life cycle: tombstones, the GC epoch, and what GC and tiering record.

These are the units of work (and the reads) that :mod:`driveserver.gc` and ``complete`` are
built from; the argument for why they are safe together is in :mod:`driveserver.gc`. None of
them touches the block store: the callers do that outside any transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .db import Tx

CHUNK = 500  # names per IN (...) list: well under SQLite's 32,766 bound parameters


def _chunks(names: Iterable[str]) -> Iterable[list[str]]:
    unique = sorted(set(names))
    for i in range(0, len(unique), CHUNK):
        yield unique[i: i + CHUNK]


async def gc_epoch(q: Any) -> int:
    """How many transactions have dropped tombstones so far (see :mod:`driveserver.gc`)."""
    value = await q.fetchval("SELECT dropped FROM gc_epoch WHERE id = 1")
    return int(value or 0)


async def _present(q: Any, table: str, names: Iterable[str]) -> set[str]:
    """Of the object ``names``, those ``table`` has a row for (in chunks of bound parameters)."""
    out: set[str] = set()
    for chunk in _chunks(names):
        out.update(r[0] for r in await q.fetchall(
            f"SELECT object_name FROM {table}"
            f" WHERE object_name IN ({','.join('?' * len(chunk))})", chunk))
    return out


async def tombstoned(q: Any, names: Iterable[str]) -> set[str]:
    """Of the object ``names``, those GC has marked for deletion (or is deleting)."""
    return await _present(q, "block_tombstones", names)


async def all_tombstones(q: Any) -> list[str]:
    """Every tombstone left: those of a GC run that died between marking and dropping."""
    return [r[0] for r in await q.fetchall(
        "SELECT object_name FROM block_tombstones ORDER BY object_name")]


async def mark_unreferenced(tx: Tx, cutoff: float, limit: int) -> list[str]:
    """Tombstone up to ``limit`` recorded blocks that no version references and that are older
    than ``cutoff``; their object names. The reference check and the tombstone are one
    transaction, so a ``complete`` that commits a reference first keeps its block."""
    rows = await tx.fetchall(
        "SELECT object_name FROM blocks b WHERE created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM version_blocks vb WHERE vb.block_hash = b.hash)"
        " AND NOT EXISTS (SELECT 1 FROM block_tombstones t WHERE t.object_name = b.object_name)"
        " LIMIT ?", (cutoff, limit))
    names = [r[0] for r in rows]
    await tx.executemany(
        "INSERT INTO block_tombstones (object_name, created_at) VALUES (?, ?)"
        " ON CONFLICT DO NOTHING",
        [(n, tx.now) for n in names])
    return names


async def recorded(q: Any, names: Iterable[str]) -> set[str]:
    """Of the object ``names``, those a ``blocks`` row records."""
    return await _present(q, "blocks", names)


async def mark_orphans(tx: Tx, names: Iterable[str]) -> list[str]:
    """Tombstone those of ``names`` that still no ``blocks`` row records (checked here, in the
    transaction: a ``complete`` may have recorded one since the caller looked); their names."""
    marked: list[str] = []
    for chunk in _chunks(names):
        known = await recorded(tx, chunk)
        new = [n for n in chunk if n not in known]
        await tx.executemany(
            "INSERT INTO block_tombstones (object_name, created_at) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            [(n, tx.now) for n in new])
        marked += new
    return marked


async def drop_tombstones(tx: Tx, names: Iterable[str]) -> None:
    """After their objects were deleted: drop the tombstones and the ``blocks`` rows of
    ``names``, and move the GC epoch on, so that a ``complete`` whose store look-up began
    before the delete does not trust it."""
    for chunk in _chunks(names):
        marks = ",".join("?" * len(chunk))
        # A row is dropped only if still unreferenced: nothing can have referenced a
        # tombstoned block (complete refuses them), but a row that somehow is referenced is
        # better kept, so that the block shows up as corrupt rather than as nothing.
        await tx.execute(
            f"DELETE FROM blocks WHERE object_name IN ({marks}) AND NOT EXISTS"
            " (SELECT 1 FROM version_blocks vb WHERE vb.block_hash = blocks.hash)", chunk)
        await tx.execute(f"DELETE FROM block_tombstones WHERE object_name IN ({marks})", chunk)
    await tx.execute("UPDATE gc_epoch SET dropped = dropped + 1 WHERE id = 1")


async def cold_candidates(q: Any, cutoff: float) -> list[tuple[str, str]]:
    """(hash, object name) of hot blocks that only versions older than ``cutoff`` reference,
    and that GC is not deleting."""
    rows = await q.fetchall(
        "SELECT b.hash, b.object_name FROM blocks b WHERE b.tier = 'hot'"
        " AND EXISTS (SELECT 1 FROM version_blocks vb WHERE vb.block_hash = b.hash)"
        " AND NOT EXISTS (SELECT 1 FROM version_blocks vb"
        "   JOIN file_versions v ON v.id = vb.version_id"
        "   WHERE vb.block_hash = b.hash AND v.created_at >= ?)"
        " AND NOT EXISTS (SELECT 1 FROM block_tombstones t WHERE t.object_name = b.object_name)",
        (cutoff,))
    return [(r[0], r[1]) for r in rows]


async def record_cold(tx: Tx, hashes: Iterable[str]) -> None:
    """Record that the blocks ``hashes`` now live in the cold tier (after the move)."""
    await tx.executemany("UPDATE blocks SET tier = 'cold' WHERE hash = ?",
                         [(h,) for h in hashes])
