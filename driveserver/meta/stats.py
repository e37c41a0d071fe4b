"""Reads for the operator's endpoints: ``/healthz`` (is the database answering) and
``/metrics`` (how big the journal is)."""

from __future__ import annotations

from .db import Database


async def ping(db: Database) -> None:
    """One trivial statement on the reading connection: it fails if the database does."""
    await db.fetchval("SELECT 1")


async def journal_entries(db: Database) -> int:
    """How many entries the change journal holds (pruned after ``journal_retention_days``)."""
    return int(await db.fetchval("SELECT COUNT(*) FROM journal"))
