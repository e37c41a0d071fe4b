"""Several writers on one PostgreSQL database: two servers (two ``PgDatabase`` objects, as two
processes would have) over the same database and the same block store, racing on one file.

The version compare-and-swap of ``complete`` must pick exactly one winner per base version
however the commits interleave across processes (docs/scale-out.md says why it holds:
SERIALIZABLE, and the conditional UPDATE on ``files.version``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from driveserver import appkeys
from tests.helpers import ApiClient, RunningServer, download_blocks, start_server, upload

WRITERS = 20


@pytest.fixture
async def two_servers(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[RunningServer,
                                                                         RunningServer]]:
    data = tmp_path / "data"
    a = await start_server(data, database_url=pg_url)
    b = await start_server(data, database_url=pg_url)  # same secrets, blocks and database
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def _prepare(client: ApiClient, path: str, data: bytes, base: int) -> tuple[str, Any]:
    """upload-init and the body, not yet complete: the file id and the blocks to commit."""
    r = await client.post("/api/files/upload-init", {"path": path, "size": len(data),
                                                     "base_version": base})
    assert r.status == 200, r
    async with client.session.post(r.body["upload_url"], data=data) as resp:
        assert resp.status == 200, await resp.text()
        return r.body["file_id"], (await resp.json())["blocks"]


async def test_twenty_writers_on_one_base_version_through_two_processes_one_wins(
        two_servers: tuple[RunningServer, RunningServer]) -> None:
    a, b = two_servers
    await a.register("racer@example.com")
    clients = [await (a if i % 2 == 0 else b).login("racer@example.com", device=f"d{i}")
               for i in range(WRITERS)]
    first = await upload(clients[0], "/race.txt", b"version one")
    assert first["version"] == 1
    bodies = [f"writer {i} was here".encode() for i in range(WRITERS)]
    prepared = [await _prepare(c, "/race.txt", body, 1) for c, body in zip(clients, bodies, strict=True)]
    start = asyncio.Event()

    async def commit(client: ApiClient, file_id: str, blocks: Any) -> Any:
        await start.wait()
        return await client.post(f"/api/files/{file_id}/complete",
                                 {"blocks": blocks, "base_version": 1})

    tasks = [asyncio.create_task(commit(c, fid, blocks))
             for c, (fid, blocks) in zip(clients, prepared, strict=True)]
    await asyncio.sleep(0.05)  # every request is parked on the event, then all go at once
    start.set()
    replies = await asyncio.gather(*tasks)
    winners = [i for i, r in enumerate(replies) if r.status == 200]
    losers = [r for r in replies if r.status != 200]
    assert len(winners) == 1, [(r.status, r.body) for r in replies]
    assert all(r.status == 409 and r.error_code() == "version_conflict" for r in losers), \
        [(r.status, r.body) for r in losers]
    # Both processes see the one new version, holding the winner's bytes, and nothing else.
    file_id = prepared[0][0]
    assert {fid for fid, _ in prepared} == {file_id}
    for reader in clients[:2]:  # clients[0] on a, clients[1] on b
        assert await download_blocks(reader, file_id) == bodies[winners[0]]
    versions = await a.app[appkeys.DB].fetchall(
        "SELECT version FROM file_versions WHERE file_id = ? ORDER BY version", (file_id,))
    assert [r["version"] for r in versions] == [1, 2]


async def test_concurrent_uploads_through_two_processes_never_pass_the_quota(
        two_servers: tuple[RunningServer, RunningServer]) -> None:
    """Ten new files of 300 bytes against a quota of 1,000, committed at once through two
    processes: each commit's quota check reads the sum of the owner's files, so two commits
    that both read "600 used" and both add 300 would be a write skew; SERIALIZABLE aborts one
    of them, whose retry then sees the other. Exactly three commit; the rest get 507."""
    a, b = two_servers
    await a.register("quota@example.com")
    clients = [await (a if i % 2 == 0 else b).login("quota@example.com", device=f"q{i}")
               for i in range(10)]
    await a.app[appkeys.DB].write(lambda tx: tx.execute(
        "UPDATE users SET quota_bytes = 1000 WHERE email = ?", ("quota@example.com",)))
    prepared = [await _prepare(c, f"/f{i}.bin", bytes([i]) * 300, 0)
                for i, c in enumerate(clients)]
    start = asyncio.Event()

    async def commit(client: ApiClient, file_id: str, blocks: Any) -> Any:
        await start.wait()
        return await client.post(f"/api/files/{file_id}/complete", {"blocks": blocks})

    tasks = [asyncio.create_task(commit(c, fid, blocks))
             for c, (fid, blocks) in zip(clients, prepared, strict=True)]
    await asyncio.sleep(0.05)
    start.set()
    replies = await asyncio.gather(*tasks)
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * 3 + [507] * 7, [(r.status, r.body) for r in replies]
    r = await clients[1].get("/api/account/usage")
    used = await a.app[appkeys.DB].fetchval(
        "SELECT SUM(f.size) FROM files f JOIN users u ON u.workspace_id = f.workspace_id"
        " WHERE u.email = ? AND f.is_directory = 0", ("quota@example.com",))
    assert used == 900, (used, r)
