"""GC and ``complete`` without store I/O inside a write transaction (issue 13, item 3).

* A block-store wrapper fails any call made while the calling task holds the writer, and the
  broad flows (uploads by all three block routes, complete, complete/batch, restore, purge, GC,
  cold moves, downloads) run with it installed.
* Two fixed interleavings that only exist now that the store is asked outside the transaction:
  GC runs whole between ``complete``'s store look-up and its transaction (the GC epoch must
  catch it), and ``complete`` runs whole between GC's mark and its delete (the tombstone must).
* A real race, many iterations: several uploads at once, completes single and batched, GC
  gathered with them and GC looping in a task of its own, grace -1; afterwards every committed
  version reads back, block by block, verified.
* While a heavy GC runs, another client's ``GET /healthz`` answers within a second.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from driveproto.blocks import BLOCK_SIZE, block_hash
from driveproto.frames import encode_batch
from driveserver import appkeys
from driveserver.gc import collect_garbage, move_cold_blocks
from driveserver.meta.db import writing
from driveserver.storage.base import BlockStore
from tests.helpers import (
    ApiClient,
    HealthzProbe,
    RunningServer,
    content,
    download_blocks,
    start_server,
    upload,
    wait_for,
)

# --- a store that refuses to be called inside a write transaction ---------------------------


class GuardedStore:
    """Wraps a BlockStore; every call made while the calling task is inside a write transaction
    is recorded in ``violations`` and fails (the record survives a route turning the failure
    into a 500)."""

    def __init__(self, inner: BlockStore, violations: list[str]) -> None:
        self.inner = inner
        self.violations = violations
        self.calls = 0

    def _check(self, what: str, name: str = "") -> None:
        self.calls += 1
        if writing():
            self.violations.append(f"{what}({name[:12]})")
            raise AssertionError(f"store call {what} inside a write transaction")

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def put_if_absent(self, name: str, data: bytes) -> bool:
        self._check("put_if_absent", name)
        return await self.inner.put_if_absent(name, data)

    async def get(self, name: str) -> bytes:
        self._check("get", name)
        return await self.inner.get(name)

    async def exists(self, name: str) -> bool:
        self._check("exists", name)
        return await self.inner.exists(name)

    async def delete(self, name: str) -> None:
        self._check("delete", name)
        await self.inner.delete(name)

    async def iterate(self) -> AsyncIterator[str]:
        self._check("iterate")
        async for name in self.inner.iterate():
            yield name

    async def stat_mtime(self, name: str) -> float | None:
        self._check("stat_mtime", name)
        return await self.inner.stat_mtime(name)

    async def check(self) -> None:
        self._check("check")
        await self.inner.check()


def guard(server: RunningServer) -> tuple[list[str], list[GuardedStore]]:
    """Install :class:`GuardedStore` under both tiers of the server's store."""
    store = server.app[appkeys.STORE]
    violations: list[str] = []
    store.hot = GuardedStore(store.hot, violations)
    store.cold = GuardedStore(store.cold, violations)
    return violations, [store.hot, store.cold]


async def init(client: ApiClient, path: str, size: int) -> dict[str, Any]:
    r = await client.post("/api/files/upload-init", {"path": path, "size": size})
    assert r.status == 200, r
    return r.body


async def send(client: ApiClient, grant: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """Upload ``data`` on ``grant`` (streamed); its block receipts."""
    async with client.session.post(grant["upload_url"], data=data) as resp:
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["blocks"])


def object_name(server: RunningServer, data: bytes) -> str:
    return server.app[appkeys.KEYRING].object_name(block_hash(data))


def gc(server: RunningServer) -> Awaitable[str]:
    """An eager collection (grace -1: everything unreferenced goes at once)."""
    return collect_garbage(server.app[appkeys.DB], server.app[appkeys.STORE], -1)


# --- the flows, guarded ----------------------------------------------------------------------

async def test_no_store_call_inside_a_write_transaction_in_any_flow(
        alice: ApiClient, bob: ApiClient, server: RunningServer) -> None:
    """Uploads (stream, PUT, batch), complete, complete/batch, restore, block and content
    downloads, trash purge, GC (both passes) and cold moves all make their store calls, and none
    of them with the writer held (was: complete looked blocks up, and GC deleted and stat'ed
    objects, inside their write transactions)."""
    violations, stores = guard(server)
    db = server.app[appkeys.DB]
    # Stream upload + complete, twice (a second version), and a multi-block file.
    first = await upload(alice, "/a.txt", b"version one " * 100)
    await upload(alice, "/a.txt", b"version two " * 100)
    big = os.urandom(BLOCK_SIZE) + b"tail"
    done_big = await upload(alice, "/big.bin", big)
    # PUT of single blocks, then complete with their receipts.
    data = b"put block"
    grant = await init(alice, "/put.txt", len(data))
    async with alice.session.put(grant["block_url"].replace("{hash}", block_hash(data)),
                                 data=data) as resp:
        assert resp.status == 200
        receipt = await resp.json()
    r = await alice.post(f"/api/files/{grant['file_id']}/complete", {"blocks": [receipt]})
    assert r.status == 200, r
    # A batch: upload-init/batch, /blocks/batch, complete/batch.
    files = {f"/many/f{i}": f"small {i}".encode() for i in range(10)}
    await alice.mkdir("/many")
    r = await alice.post("/api/files/upload-init/batch", {"files": [
        {"path": p, "size": len(d)} for p, d in files.items()]})
    assert r.status == 200, r
    async with alice.session.post(r.body["batch_url"], data=encode_batch(
            [(block_hash(d), d) for d in files.values()])) as resp:
        assert resp.status == 200
        receipts = {b["hash"]: b for b in (await resp.json())["blocks"]}
    out = await alice.post("/api/files/complete/batch", {"files": [
        {"file_id": res["file_id"], "blocks": [receipts[block_hash(d)]]}
        for res, d in zip(r.body["results"], files.values(), strict=True)]})
    assert all(o.get("status") == "created" for o in out.body["results"]), out
    # Restore, reads by both download routes, and a share read by bob.
    assert (await alice.post(f"/api/files/{first['file_id']}/restore/1")).status == 200
    assert (await content(alice, first["file_id"])).body == b"version one " * 100
    assert await download_blocks(alice, done_big["file_id"]) == big
    # Never completed (an orphan), deleted and purged (unreferenced): both GC passes.
    orphan = await init(alice, "/never", 9)
    await send(alice, orphan, b"abandoned")
    gone = await upload(alice, "/gone.txt", b"delete me " * 100)
    assert (await alice.delete(f"/api/files/{gone['file_id']}")).status == 204
    assert (await alice.delete(f"/api/trash/{gone['file_id']}")).status == 204
    report = await gc(server)
    assert "1 unreferenced" in report and "1 never-committed" in report, report
    # Cold moves, then reads from the cold tier and a GC that leaves cold blocks alone.
    async with db.transaction() as tx:
        await tx.execute("UPDATE file_versions SET created_at = created_at - 400 * 86400")
    moved = await move_cold_blocks(db, server.app[appkeys.STORE], 30 * 86400)
    assert moved > 0
    await gc(server)
    assert (await content(alice, first["file_id"], params={"version": "2"})).body == \
        b"version two " * 100
    assert await download_blocks(alice, done_big["file_id"]) == big
    assert violations == []
    assert sum(s.calls for s in stores) > 50  # the guard really saw the flows' store calls


# --- two interleavings that need the tombstone protocol ------------------------------------

class Hooked(GuardedStore):
    """A guarded store that runs ``hook`` once, when ``method`` is called for ``name``:
    before the call (``after=False``) or after it, before its answer is returned."""

    def __init__(self, inner: BlockStore, violations: list[str]) -> None:
        super().__init__(inner, violations)
        self.armed: tuple[str, str, bool, Callable[[], Awaitable[None]]] | None = None

    async def _maybe(self, method: str, name: str, after: bool) -> None:
        if self.armed is not None and self.armed[:3] == (method, name, after):
            hook = self.armed[3]
            self.armed = None
            await hook()

    async def exists(self, name: str) -> bool:
        answer = await super().exists(name)
        await self._maybe("exists", name, True)
        return answer

    async def delete(self, name: str) -> None:
        await self._maybe("delete", name, False)
        await super().delete(name)


def hook_store(server: RunningServer) -> tuple[Hooked, list[str]]:
    store = server.app[appkeys.STORE]
    violations: list[str] = []
    hot = Hooked(store.hot, violations)
    store.hot = hot
    return hot, violations


async def _prepared(alice: ApiClient, server: RunningServer, kind: str
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """A grant and fresh receipts for a block GC will collect: an orphan (stored, never
    completed) or an unreferenced recorded block (completed once, then purged)."""
    data = f"block to race, {kind}".encode() * 50
    if kind == "unreferenced":
        done = await upload(alice, "/was.txt", data)
        assert (await alice.delete(f"/api/files/{done['file_id']}")).status == 204
        assert (await alice.delete(f"/api/trash/{done['file_id']}")).status == 204
    # A file with a version already: eager GC also removes files whose first upload never
    # completed, which would turn the race into a 404.
    await upload(alice, "/racing.txt", b"first version")
    grant = await init(alice, "/racing.txt", len(data))
    return grant, await send(alice, grant, data), data


async def _outcome(alice: ApiClient, file_id: str, reply: Any, data: bytes) -> None:
    """A complete that raced GC either reported the block missing or made a version whose
    bytes read back (now, and after one more eager GC)."""
    if reply.status == 400:
        assert reply.error_code() == "missing_blocks", reply
        return
    assert reply.status == 200, reply
    assert await download_blocks(alice, file_id) == data


@pytest.mark.parametrize("kind", ["orphan", "unreferenced"])
async def test_gc_whole_between_completes_store_lookup_and_its_transaction(
        alice: ApiClient, server: RunningServer, kind: str) -> None:
    """GC marks, deletes and drops the block after ``complete`` was told it is stored and
    before ``complete``'s transaction: the moved GC epoch makes ``complete`` ask again, and it
    reports the block missing. GC could not run there at all before (the look-up held the
    writer)."""
    grant, receipts, data = await _prepared(alice, server, kind)
    hot, violations = hook_store(server)
    ran: list[str] = []

    async def run_gc() -> None:
        ran.append(await asyncio.wait_for(gc(server), 10))

    hot.armed = ("exists", object_name(server, data), True, run_gc)
    reply = await alice.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
    assert ran and "never-committed" in ran[0]
    assert not await server.app[appkeys.PIPELINE].exists(block_hash(data))
    assert reply.status == 400 and reply.error_code() == "missing_blocks", reply
    await _outcome(alice, grant["file_id"], reply, data)
    # The client sends the block again and completes.
    receipts = await send(alice, grant, data)
    reply = await alice.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
    assert reply.status == 200, reply
    await gc(server)
    assert await download_blocks(alice, grant["file_id"]) == data
    assert violations == []


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("kind", ["orphan", "unreferenced"])
async def test_complete_whole_between_gcs_mark_and_its_delete(
        alice: ApiClient, server: RunningServer, kind: str, batch: bool) -> None:
    """``complete`` runs (look-up and transaction) after GC tombstoned the block and before GC
    deletes it: the store still says "stored", the tombstone says missing, and nothing is
    committed that the delete would break. Before, ``complete`` could not run there (GC held
    the writer across its deletes)."""
    grant, receipts, data = await _prepared(alice, server, kind)
    hot, violations = hook_store(server)
    replies: list[Any] = []

    async def run_complete() -> None:
        if batch:
            r = await alice.post("/api/files/complete/batch", {"files": [
                {"file_id": grant["file_id"], "blocks": receipts}]})
            assert r.status == 200, r
            result = r.body["results"][0]
            status = 400 if "error" in result else 200
            replies.append((status, result.get("error", {}).get("code")))
        else:
            r = await asyncio.wait_for(alice.post(
                f"/api/files/{grant['file_id']}/complete", {"blocks": receipts}), 10)
            replies.append((r.status, r.error_code()))

    hot.armed = ("delete", object_name(server, data), False, run_complete)
    await asyncio.wait_for(gc(server), 20)
    assert replies == [(400, "missing_blocks")]
    assert (await alice.get(f"/api/files/{grant['file_id']}")).body["version"] == 1  # unmoved
    receipts = await send(alice, grant, data)
    r = await alice.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
    assert r.status == 200, r
    await gc(server)
    assert await download_blocks(alice, grant["file_id"]) == data
    assert violations == []


# --- the real race ---------------------------------------------------------------------------

async def _complete_until_done(client: ApiClient, grant: dict[str, Any], data: bytes,
                               batch: bool) -> int:
    """Send and complete like the sync client: a block reported missing is sent again. The
    version made."""
    for _ in range(50):
        receipts = await send(client, grant, data)
        if batch:
            r = await client.post("/api/files/complete/batch", {"files": [
                {"file_id": grant["file_id"], "blocks": receipts}]})
            assert r.status == 200, r
            result = r.body["results"][0]
            if "error" in result:
                assert result["error"]["code"] == "missing_blocks", result
                continue
            return int(result["version"])
        r = await client.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
        if r.status == 400 and r.error_code() == "missing_blocks":
            continue
        assert r.status == 200, r
        return int(r.body["version"])
    raise AssertionError("complete kept losing its blocks to GC")


async def test_gc_racing_complete_never_loses_a_committed_block(tmp_path: Path,
        database: dict[str, Any]) -> None:
    """40 rounds; in each, four uploads at once (single and batch completes, new content and
    content whose blocks the previous round left unreferenced), gathered with an eager GC,
    while another eager GC loops in its own task. Every version committed reads back verified,
    during the race and after it; ``/healthz`` answers within a second throughout."""
    # old versions: garbage at once
    srv = await start_server(tmp_path / "d", **database, keep_versions=1)
    rng = random.Random(13)
    stop = asyncio.Event()
    runs = 0

    async def gc_loop() -> None:
        nonlocal runs
        while not stop.is_set():
            await gc(srv)
            runs += 1
            await asyncio.sleep(0)

    try:
        async with srv.user("racer@example.com") as alice:
            violations, _ = guard(srv)
            committed: dict[str, tuple[int, bytes]] = {}
            pool = [os.urandom(rng.randrange(1, 3000)) for _ in range(6)]
            for j in range(4):  # (eager GC removes files whose first upload is not complete)
                await upload(alice, f"/f{j}.bin", b"first")
            background = [asyncio.create_task(gc_loop())]
            async with HealthzProbe(srv.url) as health:
                try:
                    for rnd in range(40):
                        jobs: list[Awaitable[Any]] = []
                        work: list[tuple[str, bytes]] = []
                        for j in range(4):
                            # Half new bytes, half bytes a version of an earlier round held (whose
                            # blocks keep_versions=1 made unreferenced when it was replaced).
                            data = os.urandom(rng.randrange(1, 5000)) if j % 2 else \
                                rng.choice(pool)
                            grant = await init(alice, f"/f{j}.bin", len(data))
                            work.append((grant["file_id"], data))
                            jobs.append(_complete_until_done(alice, grant, data, batch=j >= 2))
                        versions = await asyncio.gather(*jobs, gc(srv))
                        for (file_id, data), version in zip(work, versions, strict=False):
                            assert version >= committed.get(file_id, (0, b""))[0]  # same bytes: unchanged
                            committed[file_id] = (version, data)
                            assert await download_blocks(alice, file_id) == data, rnd
                finally:
                    stop.set()
                    await asyncio.gather(*background)
            await gc(srv)
            for file_id, (version, data) in committed.items():
                assert await download_blocks(alice, file_id, version) == data
                assert (await content(alice, file_id)).body == data
            assert violations == []
            assert runs >= 10, runs  # the looping GC really ran during the rounds
            health.check()
    finally:
        await srv.stop()


async def test_healthz_answers_during_a_heavy_gc(alice: ApiClient, server: RunningServer) -> None:
    """3,000 never-committed objects and 300 unreferenced blocks collected in one run: the
    deletes happen outside transactions and the marks in worker threads, so another client's
    ``/healthz`` answers within a second all along."""
    pipeline = server.app[appkeys.PIPELINE]
    for i in range(0, 3000, 100):
        await asyncio.gather(*(pipeline.put(f"orphan {k}".encode()) for k in range(i, i + 100)))
    folder = await alice.mkdir("/old")
    for i in range(0, 300, 50):
        await asyncio.gather(*(upload(alice, f"/old/{k}", f"old {k}".encode())
                               for k in range(i, i + 50)))
    file_id = folder["file_id"]
    assert (await alice.delete(f"/api/files/{file_id}")).status == 204
    assert (await alice.delete(f"/api/trash/{file_id}")).status == 204
    async with HealthzProbe(server.url) as health:
        report = await gc(server)
    assert "300 unreferenced" in report and "3000 never-committed" in report, report
    health.check()


async def test_a_gc_killed_between_mark_and_drop_is_finished_at_start(tmp_path: Path,
        database: dict[str, Any]) -> None:
    """A GC that died after committing its tombstones (kill -9 before deleting) leaves blocks
    that ``complete`` refuses, as it must (their objects may be gone); the next server start
    deletes and drops them, and the block, sent again, completes."""
    from driveserver.meta import blocks

    data = b"tombstoned by a GC that died" * 20
    srv = await start_server(tmp_path / "d", **database)
    try:
        async with srv.user("k@example.com") as alice:
            await upload(alice, "/k.txt", b"first")
            grant = await init(alice, "/k.txt", len(data))
            receipts = await send(alice, grant, data)
            name = object_name(srv, data)

            async def mark(tx: Any) -> list[str]:
                return await blocks.mark_orphans(tx, [name])

            assert await srv.app[appkeys.DB].write(mark) == [name]  # ... and then kill -9
            r = await alice.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
            assert r.status == 400 and r.error_code() == "missing_blocks", r
    finally:
        await srv.stop()
    srv = await start_server(tmp_path / "d", **database)
    try:
        db = srv.app[appkeys.DB]

        async def finished() -> bool:
            return await blocks.all_tombstones(db) == []

        await wait_for(finished, what="the interrupted GC to be finished at start")
        assert not await srv.app[appkeys.PIPELINE].exists(block_hash(data))
        alice = await srv.login("k@example.com")
        grant = await init(alice, "/k.txt", len(data))
        receipts = await send(alice, grant, data)
        r = await alice.post(f"/api/files/{grant['file_id']}/complete", {"blocks": receipts})
        assert r.status == 200, r
        assert await download_blocks(alice, grant["file_id"]) == data
    finally:
        await srv.stop()
