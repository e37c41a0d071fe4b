"""The long poll's revoke mark, read once for all the polls a commit wakes (issue 18, "a metadata
cache only where it measures faster": bench/cache_bench.py found this read, not a cache, to be
the one worth changing; driveserver/meta/shared_reads.py).

What must hold: sharing never makes a read stale. A caller is answered only by a read sent
after it asked, so a revoke committed on process A before a poll on B asks for the mark is
always in B's answer, even while an older read of the same mark is still on its way."""

from __future__ import annotations

import asyncio
from typing import Any

from driveserver import appkeys
from driveserver.meta import accounts
from driveserver.meta.shared_reads import SharedReads
from driveserver.sync import views
from tests.helpers import RunningServer, upload, wait_for
from tests.test_changes import cursor_of
from tests.test_pg_concurrency import two_servers  # noqa: F401  (the fixture)
from tests.test_sharing import drain, share


async def test_callers_that_ask_in_one_loop_pass_share_one_read() -> None:
    shared = SharedReads()
    sent = 0

    async def read() -> int:
        nonlocal sent
        sent += 1
        mine = sent
        await asyncio.sleep(0)
        return mine

    answers = await asyncio.gather(*(shared.read("k", read) for _ in range(100)))
    assert answers == [1] * 100 and sent == 1
    assert (shared.reads, shared.joined) == (1, 99)
    # Asked again once that read is done: a read of its own, never the old result.
    assert await shared.read("k", read) == 2
    # Another key is another read.
    assert sorted(await asyncio.gather(shared.read("k", read), shared.read("other", read))) == [3, 4]


async def test_an_error_reaches_every_caller_of_the_read() -> None:
    shared = SharedReads()

    async def broken() -> int:
        raise ConnectionResetError("gone")

    results = await asyncio.gather(*(shared.read("k", broken) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionResetError) for r in results), results
    assert shared.reads == 1


async def test_a_revoke_on_a_is_seen_by_a_mark_asked_on_b_after_it(
        two_servers: tuple[RunningServer, RunningServer]) -> None:  # noqa: F811
    """B's read of Bob's mark is held in flight with the value from before the revoke; Alice
    revokes on A; a mark asked on B afterwards must not join that read: it sees the revoke."""
    a, b = two_servers
    await a.register("alice@example.com")
    await a.register("bob@example.com")
    alice = await a.login("alice@example.com", device="alice")
    bob = await b.login("bob@example.com", device="bob")
    folder = await alice.mkdir("/Kept")
    share_id = await share(alice, folder["file_id"], "bob@example.com", "view")
    db = b.app[appkeys.DB]
    mark = views.share_marker(db, bob.user_id)
    assert mark is not None
    before = await mark()

    selected, release = asyncio.Event(), asyncio.Event()

    async def held() -> Any:  # read before the revoke, answered after it
        value = await accounts.revocations_of(db, bob.user_id)
        selected.set()
        await release.wait()
        return value

    in_flight = asyncio.create_task(db.shared_reads.read(("revocations", bob.user_id), held))
    await asyncio.wait_for(selected.wait(), 10)
    assert (await alice.delete(f"/api/shares/{share_id}")).status == 204  # committed on A
    joined = db.shared_reads.joined
    after = await asyncio.wait_for(mark(), 10)  # answered while the old read is still held
    assert after != before, "B's mark missed a revoke committed on A before it asked"
    assert db.shared_reads.joined == joined
    release.set()
    assert await in_flight == before  # what sharing that read would have served: stale


async def test_one_commit_wakes_many_polls_with_few_mark_reads(
        two_servers: tuple[RunningServer, RunningServer]) -> None:  # noqa: F811
    """50 polls of Bob's on B, one commit of Alice's on A in the folder she shares with him:
    every poll answers with the change, and B read Bob's mark far fewer than 50 times."""
    a, b = two_servers
    await a.register("alice@example.com")
    await a.register("bob@example.com")
    alice = await a.login("alice@example.com", device="alice")
    bob = await b.login("bob@example.com", device="bob")
    start = await cursor_of(bob)
    folder = await alice.mkdir("/Team")
    await share(alice, folder["file_id"], "bob@example.com", "edit")
    _, cursor = await drain(bob, start)
    hub = b.app[appkeys.HUB]
    shared = b.app[appkeys.DB].shared_reads
    polls = [asyncio.create_task(bob.get("/api/sync/changes",
                                         params={"cursor": cursor, "timeout": "30"}))
             for _ in range(50)]
    await wait_for(lambda: hub.waiter_count() == 50, what="50 polls waiting on B")
    reads = shared.reads
    await upload(alice, "/Team/news.txt", b"for everyone")
    answers = await asyncio.gather(*polls)
    for r in answers:
        assert r.status == 200, r
        assert [c["path"] for c in r.body["changes"]] == ["/Shared with me/Team/news.txt"]
    assert shared.reads - reads < 25, (shared.reads - reads, shared.joined)
