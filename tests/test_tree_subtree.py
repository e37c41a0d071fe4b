"""Work on a whole subtree holds the single writer, never the event loop (issue 13, item 3).

A folder of 100,000 items is trashed, restored, moved into and out of a shared folder, shared,
unshared, trashed and purged, while another client asks ``GET /healthz`` from a thread of its
own: every answer comes within a second. Before, the recursive statements ran on the loop's thread and a
restore or a move into a shared folder journalled item by item (three statements each), which
held the whole server for seconds at this size. The journal entries of such a move are still
one per item, in order, with consecutive sequence numbers.
"""

from __future__ import annotations

from typing import Any

import pytest

from driveserver import appkeys
from driveserver.meta.db import Tx
from tests.helpers import ApiClient, HealthzProbe, RunningServer

FOLDERS, EACH = 100, 1000  # 100,100 items below the top folder


async def big_folder(server: RunningServer, client: ApiClient, path: str) -> dict[str, Any]:
    """A folder with FOLDERS subfolders of EACH folders each, written straight into the
    database (through the API it would take minutes); folders need no blocks or versions."""
    top = await client.mkdir(path)

    async def fill(tx: Tx) -> None:
        workspace = await tx.fetchval("SELECT workspace_id FROM files WHERE id = ?",
                                      (top["file_id"],))
        rows = []
        for i in range(FOLDERS):
            sub = f"{top['file_id']}-{i}"
            rows.append((sub, workspace, top["file_id"], f"s{i:04d}", tx.now))
            rows += [(f"{sub}-{j}", workspace, sub, f"d{j:05d}", tx.now) for j in range(EACH)]
        await tx.executemany(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, created_at, modified_at) VALUES (?1, ?2, ?3, ?4, ?4, 1, 1, 0, ?5, ?5)",
            rows)
    await server.app[appkeys.DB].write(fill, offload=True)
    return top


@pytest.mark.sqlite_only("volume: 100,000 items, about 85 s on PostgreSQL, 17 s on SQLite")
async def test_subtree_work_never_stalls_healthz(server: RunningServer, alice: ApiClient,
                                                 bob: ApiClient) -> None:
    big = await big_folder(server, alice, "/big")
    shared = await alice.mkdir("/shared")
    r = await alice.post(f"/api/files/{shared['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "edit"})
    assert r.status == 201, r
    steps = [
        ("trash", 204, lambda: alice.delete(f"/api/files/{big['file_id']}")),
        ("restore", 200, lambda: alice.post(f"/api/trash/{big['file_id']}/restore")),
        ("move into a shared folder", 200,
         lambda: alice.patch(f"/api/files/{big['file_id']}", {"path": "/shared/big"})),
        ("move out of it", 200,
         lambda: alice.patch(f"/api/files/{big['file_id']}", {"path": "/big"})),
        ("share", 201, lambda: alice.post(f"/api/files/{big['file_id']}/share",
                                          {"user_email": "bob@example.com",
                                           "permission": "view"})),
        ("unshare", 204, lambda: alice.delete(f"/api/shares/{share_id}")),
        ("trash again", 204, lambda: alice.delete(f"/api/files/{big['file_id']}")),
        ("purge", 204, lambda: alice.delete(f"/api/trash/{big['file_id']}")),
    ]
    share_id = ""
    for what, status, request in steps:
        async with HealthzProbe(server.url) as probe:
            r = await request()
        assert r.status == status, (what, r)
        if what == "share":
            share_id = r.body["share_id"]
        assert not probe.errors, (what, probe.errors)
        assert probe.slowest < 1.0, f"{what}: /healthz took {probe.slowest:.2f} s"
        if what == "move into a shared folder":
            workspace = (await server.app[appkeys.DB].fetchone(
                "SELECT workspace_id FROM files WHERE id = ?", (shared["file_id"],)))
            row = await server.app[appkeys.DB].fetchone(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT seq) AS seqs, MAX(seq) - MIN(seq) AS span"
                " FROM journal WHERE action = 'create' AND workspace_id = (SELECT id FROM"
                " workspaces WHERE root_id = ?)", (shared["file_id"],))
            assert workspace is not None and row is not None
            assert (row["n"], row["seqs"], row["span"]) == (
                FOLDERS * (EACH + 1) + 1, FOLDERS * (EACH + 1) + 1, FOLDERS * (EACH + 1))
    assert (await alice.get(f"/api/files/{big['file_id']}")).status == 404
