"""Savepoints: one item of a batch whose refusal undoes only its own writes.

A batch route (``upload-init/batch``, ``complete/batch``) runs all its files in one write
transaction, each file its own compare-and-swap and its own result. A file refused with an
:class:`~driveserver.errors.ApiError` (a conflict, a quota, a bad field) must leave no trace,
while the files before and after it are kept.

A savepoint costs more than its two statements: SQLite's full-text index of names (FTS5)
flushes what it holds at every RELEASE, so a file created inside its own savepoint writes an
index segment of its own (about 9 statements more a file, and a fuller index to merge later).
Most batches have no refused file, so :func:`optimistic` runs a batch first without them: the
first refusal rolls the whole transaction back (:class:`ItemRefused`) and the batch runs again
as before, each file in its savepoint. The answer is the same either way, since the first run
left nothing behind; a batch with a refusal costs two runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from ..errors import ApiError
from .db import Tx

T = TypeVar("T")
_OPTIMISTIC = "savepoints.optimistic"  # tx.memo key: this run has no savepoints


class ItemRefused(Exception):
    """An item of a batch run without savepoints was refused: the run is abandoned (its
    transaction rolled back) for one with savepoints."""


async def optimistic(run: Callable[[Callable[[Tx], Awaitable[T]]], Awaitable[T]],
                     unit: Callable[[Tx], Awaitable[T]]) -> T:
    """``run(unit)`` (a write of ``unit`` as one transaction) with every :func:`savepoint` in
    it skipped; if an item is refused, ``run(unit)`` again with them (see the docstring)."""
    async def without(tx: Tx) -> T:
        tx.memo[_OPTIMISTIC] = True
        return await unit(tx)

    try:
        return await run(without)
    except ItemRefused:
        return await run(unit)


@asynccontextmanager
async def savepoint(tx: Tx, name: str) -> AsyncIterator[None]:
    """Run the block inside ``SAVEPOINT name``: an ``ApiError`` raised in it rolls back what
    the block wrote and goes on to the caller; any other exception is left to end the whole
    transaction, as it would without the savepoint. ``name`` is a fixed identifier, never
    input. In a run of :func:`optimistic`, there is no savepoint and a refusal ends the run."""
    if tx.memo.get(_OPTIMISTIC):
        try:
            yield
        except ApiError as exc:
            raise ItemRefused from exc
        return
    await tx.execute(f"SAVEPOINT {name}")
    try:
        yield
    except ApiError:
        await tx.execute(f"ROLLBACK TO {name}")
        await tx.execute(f"RELEASE {name}")
        raise
    await tx.execute(f"RELEASE {name}")
