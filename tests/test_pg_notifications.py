"""Notifications with two server processes on one PostgreSQL database: each keeps its own copy
of how far it has read each workspace's journal, and one that is behind must not notify again
what the other already did (driveserver/meta/notifications.record_notifications)."""

from __future__ import annotations

from typing import Any

from tests.helpers import RunningServer, upload, wait_for
from tests.test_notifications import notes
from tests.test_pg_concurrency import two_servers  # noqa: F401  (the fixture)
from tests.test_sharing import share


async def test_two_processes_notify_each_change_once(
        two_servers: tuple[RunningServer, RunningServer]) -> None:  # noqa: F811
    a, b = two_servers
    await a.register("alice@example.com")
    await a.register("bob@example.com")
    alice_a = await a.login("alice@example.com", device="alice-a")
    alice_b = await b.login("alice@example.com", device="alice-b")
    bob = await a.login("bob@example.com", device="bob")
    folder = await alice_a.mkdir("/S")
    await share(alice_a, folder["file_id"], "bob@example.com", "view")

    async def of_files() -> list[dict[str, Any]]:  # (the share itself is a notification too)
        return [n for n in (await notes(bob))["notifications"]
                if n["path"].startswith("/Shared with me/S/")]

    async def bob_has(n: int) -> list[dict[str, Any]]:
        async def enough() -> bool:
            return len(await of_files()) >= n
        await wait_for(enough, what=f"{n} notification(s) for bob")
        return await of_files()

    await upload(alice_b, "/S/f1.txt", b"1")  # B reads the journal, and keeps its mark
    await bob_has(1)
    await upload(alice_a, "/S/f2.txt", b"2")  # A goes further
    await upload(alice_a, "/S/f3.txt", b"3")
    await bob_has(3)
    await upload(alice_b, "/S/f4.txt", b"4")  # B, whose own mark is behind A's, again
    got = await bob_has(4)
    assert sorted(n["path"] for n in got) == [f"/Shared with me/S/f{i}.txt" for i in (1, 2, 3, 4)]
    assert all(n["count"] == 1 for n in got), [(n["path"], n["count"]) for n in got]
