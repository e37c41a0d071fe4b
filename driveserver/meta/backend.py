"""Which metadata database the configuration names: SQLite (the embedded default) or
PostgreSQL (``[database] url``, see :mod:`.pg`)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from .db import Database


def open_database(url: str, path: Path) -> Database:
    """PostgreSQL when ``url`` names one, else SQLite at ``path``. Not opened yet.

    Typed as :class:`.db.Database`: :class:`.pg.PgDatabase` has its interface, which is all
    the callers use (tests/test_pg_db.py compares the two). asyncpg is imported only here, so a
    SQLite install needs no ``postgres`` extra."""
    if url:
        try:
            from .pg import PgDatabase
        except ImportError as exc:  # the extra is not installed
            raise RuntimeError("database.url names PostgreSQL, but asyncpg is not installed:"
                               " pip install '.[server,postgres]'") from exc
        return cast(Database, PgDatabase(url))
    return Database(path)
