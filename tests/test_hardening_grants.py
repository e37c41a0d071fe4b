"""Regression tests for issue 12, finding 10: what storing a block tells about other people's
blocks. Each name says its finding."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import aiohttp

from driveserver import appkeys
from driveserver.blocks.format import block_hash
from driveserver.blocks.routes import encode_batch
from tests.helpers import ApiClient, RunningServer

# --- helpers -------------------------------------------------------------------------------------

async def init(client: ApiClient, path: str, size: int) -> dict[str, Any]:
    r = await client.post("/api/files/upload-init", {"path": path, "size": size})
    assert r.status == 200, r
    return r.body


def block_url(grant: dict[str, Any], h: str) -> str:
    return grant["block_url"].replace("{hash}", h)


def stored(server: RunningServer, data: bytes) -> bool:
    """Whether the block store holds ``data`` (asked of the files, not of any API)."""
    name = server.app[appkeys.KEYRING].object_name(block_hash(data))
    return any(server.config.blocks_dir.glob(f"*/*/{name}"))


# --- finding 10: storing a block says nothing about other people's blocks -----------------------

def p_less(xs: list[float], ys: list[float]) -> float:
    """P(x < y) for x drawn from ``xs`` and y from ``ys`` (ties count half): 0.5 when the two are
    indistinguishable, 0 or 1 when they are disjoint (the Mann-Whitney U statistic, scaled)."""
    ranked = sorted([(x, 0) for x in xs] + [(y, 1) for y in ys])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(1 for k in range(i, j) if ranked[k][1] == 1) * (i + j + 1) / 2
        i = j
    u = rank_sum - len(ys) * (len(ys) + 1) / 2
    return u / (len(xs) * len(ys))


async def test_finding10_storing_a_block_someone_has_costs_what_a_new_one_does(
        server: RunningServer, alice: ApiClient, bob: ApiClient) -> None:
    """Bob PUTs, interleaved, 250 blocks nobody has and 250 blocks Alice stored. Before, the
    second kind skipped the write and answered in ~2/3 of the time, every time (the two ranges
    were disjoint: P(known faster) = 1.0), which told Bob whether anyone had that exact
    content. Now both cost a write; the rank statistic must be near 0.5 (the bound of 0.25 is
    many standard errors away for these sample sizes, and far from what the old code gives)."""
    n, size = 250, 2048
    rng = random.Random(10)
    theirs = [rng.randbytes(size) for _ in range(n)]
    mine = [rng.randbytes(size) for _ in range(n)]
    grant = await init(alice, "/theirs.bin", n * size)
    async with alice.session.post(grant["batch_url"],
                                  data=encode_batch([(block_hash(d), d) for d in theirs])) as r:
        assert r.status == 200, await r.text()
    assert all(stored(server, d) for d in theirs[:5])
    grant = await init(bob, "/mine.bin", 2 * n * size + 8 * size)
    times: dict[str, list[float]] = {"new": [], "known": []}
    plan = [("new", d) for d in mine] + [("known", d) for d in theirs]
    rng.shuffle(plan)
    async with aiohttp.ClientSession() as s:
        for _ in range(8):  # warm the connection and the code paths
            data = rng.randbytes(size)
            async with s.put(block_url(grant, block_hash(data)), data=data) as r:
                assert r.status == 200
        for kind, data in plan:
            url = block_url(grant, block_hash(data))
            start = time.perf_counter()
            async with s.put(url, data=data) as r:
                await r.read()
            times[kind].append(time.perf_counter() - start)
            assert r.status == 200
    known_faster = p_less(times["known"], times["new"])
    medians = {k: round(statistics.median(v) * 1000, 3) for k, v in times.items()}
    assert 0.25 < known_faster < 0.75, (known_faster, medians)
