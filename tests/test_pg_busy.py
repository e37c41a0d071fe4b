"""A write that keeps losing serialization races on PostgreSQL (driveserver/meta/pg.py) ends as
a clear 503 ``busy`` that commits nothing, after its bounded retries, not as a 500."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from driveserver.errors import Busy
from driveserver.meta import pg
from driveserver.meta.db import Tx


async def test_a_unit_that_never_serializes_is_a_503_and_commits_nothing(pg_url: str) -> None:
    db = pg.PgDatabase(pg_url)
    await db.open()
    attempts = 0
    try:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE busy_probe (n BIGINT)")

        async def unit(tx: Tx) -> None:
            nonlocal attempts
            attempts += 1
            await tx.execute("INSERT INTO busy_probe (n) VALUES (?)", (attempts,))
            raise asyncpg.exceptions.SerializationError("could not serialize access")

        with pytest.raises(Busy) as caught:
            await db.write(unit)
        assert caught.value.status == 503 and caught.value.code == "busy"
        assert attempts == pg.MAX_ATTEMPTS
        assert await db.fetchval("SELECT COUNT(*) FROM busy_probe") == 0
    finally:
        await db.close()
