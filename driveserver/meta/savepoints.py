"""Savepoints: one item of a batch whose refusal undoes only its own writes.

A batch route (``upload-init/batch``, ``complete/batch``) runs all its files in one write
transaction, each file its own compare-and-swap and its own result. A file refused with an
:class:`~driveserver.errors.ApiError` (a conflict, a quota, a bad field) must leave no trace,
while the files before and after it are kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import ApiError
from .db import Tx


@asynccontextmanager
async def savepoint(tx: Tx, name: str) -> AsyncIterator[None]:
    """Run the block inside ``SAVEPOINT name``: an ``ApiError`` raised in it rolls back what
    the block wrote and goes on to the caller; any other exception is left to end the whole
    transaction, as it would without the savepoint. ``name`` is a fixed identifier, never
    input."""
    await tx.execute(f"SAVEPOINT {name}")
    try:
        yield
    except ApiError:
        await tx.execute(f"ROLLBACK TO {name}")
        await tx.execute(f"RELEASE {name}")
        raise
    await tx.execute(f"RELEASE {name}")
