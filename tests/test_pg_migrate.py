"""``drive-server migrate-to-postgres`` (issue 18): a SQLite installation with versions, shares,
links, trash and a device's offline queue copied into PostgreSQL, checked by the command, then
served from PostgreSQL by the same data directory as if nothing had happened."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.helpers import download_blocks, start_server, upload
from tests.test_cli import drive_server
from tests.test_links import make_link
from tests.test_sharing import cursor_of, drain, share


async def test_an_installation_moves_to_postgresql_whole(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    srv = await start_server(data)
    try:
        await srv.register("alice@example.com")
        await srv.register("bob@example.com")
        alice = await srv.login("alice@example.com", device="alice-laptop")
        bob = await srv.login("bob@example.com", device="bob-laptop")
        report = await upload(alice, "/Work/report.txt", b"first draft")
        await upload(alice, "/Work/report.txt", b"second draft, longer",
                     file_id=report["file_id"], base_version=1)
        big = await upload(alice, "/Work/big.bin", bytes(range(256)) * 40_000)  # several blocks
        folder = await alice.mkdir("/Shared out")
        await share(alice, folder["file_id"], "bob@example.com", "edit")
        await upload(alice, "/Shared out/plan.txt", b"the plan")
        token, _ = await make_link(alice, report["file_id"])
        doomed = await upload(alice, "/old.txt", b"to the trash")
        assert (await alice.delete(f"/api/files/{doomed['file_id']}")).status in (200, 204)
        # Bob's laptop goes offline with its cursor; Alice goes on working meanwhile.
        offline_cursor = await cursor_of(bob)
        await upload(alice, "/Shared out/while-away.txt", b"news for bob")
    finally:
        await srv.stop()

    r = drive_server("migrate-to-postgres", "--data-dir", str(data), "--to", pg_url)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "checked: all" in r.stdout and "versions" in r.stdout
    # Run again: the target has users now, so nothing is copied over them.
    again = drive_server("migrate-to-postgres", "--data-dir", str(data), "--to", pg_url)
    assert again.returncode != 0 and "must be empty" in again.stderr

    srv = await start_server(data, database_url=pg_url)
    try:
        alice = await srv.login("alice@example.com", device="alice-phone")
        assert sorted(await alice.listdir("/")) == ["Shared out", "Work"]
        versions = (await alice.get(f"/api/files/{report['file_id']}/versions")).body["versions"]
        assert [v["version"] for v in versions] == [2, 1]
        assert await download_blocks(alice, report["file_id"], 1) == b"first draft"
        assert await download_blocks(alice, report["file_id"]) == b"second draft, longer"
        assert hashlib.sha256(await download_blocks(alice, big["file_id"])).digest() == \
            hashlib.sha256(bytes(range(256)) * 40_000).digest()
        trash = (await alice.get("/api/trash")).body["entries"]
        assert [e["name"] for e in trash] == ["old.txt"]
        r = await srv.anonymous().get(f"/s/{token}/content")
        assert r.status == 200 and r.body == b"second draft, longer"
        # Bob's laptop comes back: its old cursor still reads what happened while it was away,
        # and its device is still known (its session works as before).
        bob = await srv.login("bob@example.com", device="bob-phone")
        assert await bob.listdir("/Shared with me/Shared out") == ["plan.txt", "while-away.txt"]
        missed, _ = await drain(bob, offline_cursor)
        assert ("create", "/Shared with me/Shared out/while-away.txt") in missed, missed
        # New writes go on from the copied counters (versions, journal sequence numbers).
        done = await upload(alice, "/Work/report.txt", b"third", file_id=report["file_id"],
                            base_version=2)
        assert done["version"] == 3
        # Search works on what was copied (PostgreSQL's triggers rebuilt its keys).
        found = (await alice.get("/api/search", params={"q": "plan"})).body["entries"]
        assert [f["name"] for f in found] == ["plan.txt"]
    finally:
        await srv.stop()


async def test_a_failed_check_commits_nothing(tmp_path: Path, pg_url: str) -> None:
    """The copy and its check are one PostgreSQL transaction: a target that cannot take every
    row (here a table PostgreSQL lacks) is left as empty as it was."""
    data = tmp_path / "data"
    srv = await start_server(data)
    try:
        await srv.register("carol@example.com")
        carol = await srv.login("carol@example.com", device="c")
        await upload(carol, "/a.txt", b"a")
    finally:
        await srv.stop()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("DROP TABLE dav_properties")
    finally:
        await conn.close()
    r = drive_server("migrate-to-postgres", "--data-dir", str(data), "--to", pg_url)
    assert r.returncode != 0 and "nothing was committed" in r.stderr, r.stderr
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM users") == 0
        assert await conn.fetchval("SELECT COUNT(*) FROM files") == 0
    finally:
        await conn.close()


async def test_the_check_finds_a_version_that_differs(tmp_path: Path, pg_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that changed one version's checksum on the way (a converter bug, a trigger) is
    refused by the check, and nothing is committed."""
    from driveserver.meta import to_postgres
    from driveserver.meta.migrations import MIGRATIONS

    data = tmp_path / "data"
    srv = await start_server(data)
    try:
        await srv.register("dave@example.com")
        dave = await srv.login("dave@example.com", device="d")
        await upload(dave, "/a.txt", b"a")
        db_path = srv.config.database_path
    finally:
        await srv.stop()
    real = to_postgres._copy_table

    async def copy_and_spoil(src: Any, dst: Any, table: str) -> int:
        n = await real(src, dst, table)
        if table == "file_versions":
            await dst.execute("UPDATE file_versions SET checksum = 'not it'")
        return n

    monkeypatch.setattr(to_postgres, "_copy_table", copy_and_spoil)
    with pytest.raises(to_postgres.MigrationError, match="versions of 1 file"):
        await to_postgres.migrate(db_path, pg_url, len(MIGRATIONS))
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM file_versions") == 0
    finally:
        await conn.close()


async def test_ids_of_deleted_rows_are_never_handed_out_again(tmp_path: Path, pg_url: str) -> None:
    """SQLite's AUTOINCREMENT never reuses an id, even the highest one after its row was
    deleted; the copy keeps that promise (the counter goes past sqlite_sequence)."""
    import sqlite3

    data = tmp_path / "data"
    srv = await start_server(data)
    try:
        await srv.register("erin@example.com")
        erin = await srv.login("erin@example.com", device="e")
        done = await upload(erin, "/v.txt", b"one")
        await upload(erin, "/v.txt", b"two", file_id=done["file_id"], base_version=1)
        db_path = srv.config.database_path
    finally:
        await srv.stop()
    conn = sqlite3.connect(db_path)
    try:
        highest = conn.execute("SELECT MAX(id) FROM file_versions").fetchone()[0]
        conn.execute("DELETE FROM version_blocks WHERE version_id = ?", (highest,))
        conn.execute("DELETE FROM file_versions WHERE id = ?", (highest,))
        conn.execute("UPDATE files SET version = 1 WHERE id = ?", (done["file_id"],))
        conn.commit()
    finally:
        conn.close()
    r = drive_server("migrate-to-postgres", "--data-dir", str(data),
                     env={"DRIVE_MIGRATE_TO_URL": pg_url})
    assert r.returncode == 0, r.stderr
    pg = await asyncpg.connect(pg_url)
    try:
        assert await pg.fetchval(
            "SELECT nextval(pg_get_serial_sequence('file_versions', 'id'))") > highest
    finally:
        await pg.close()


def test_messages_never_carry_the_password() -> None:
    from driveserver.meta.pg import _safe_url

    assert _safe_url("postgresql://drive:s3cret@db/drive") == "postgresql://drive@db/drive"
    assert _safe_url("postgresql://db/drive?sslmode=require&password=s3cret") == \
        "postgresql://db/drive?sslmode=require"
    assert "s3cret" not in _safe_url("postgresql://u:s3cret@db/drive?PASSWORD=s3cret")
