"""Would a metadata cache pay? The hot paths on PostgreSQL beside SQLite, and the share of each
request spent waiting on the database (issue 18: "a metadata cache only where it measures
faster").

One user (alice) with a realistic tree: 200 folders in her root, 50 small files in each and 200
in the first (10,150 files), three folders shared with bob and one of bob's shared with her.
The tree is made once on SQLite through the API, then copied to PostgreSQL (fsync and
synchronous commit on, as in production) by ``migrate-to-postgres``'s own code, so both
backends serve the same rows. Then, for each backend, one server runs **in this process**
(``build_app``, a real port) while the clients run in other processes:

* listing: ``GET /api/files`` of the root (200 folders, plus "Shared with me") and of the
  200-file folder, ``--requests`` times each, one at a time;
* complete: the upload flow's three steps (upload-init, ``POST /blocks/upload``,
  ``complete``) for ``--requests`` new small files, one at a time;
* long-poll fan-out: ``--polls`` long polls of one of alice's devices (bench/longpoll_bench.py's
  client processes), then one commit by another of her devices.

Each path is measured in two modes, taking turns (``--rounds``): with nothing shared or cached
(the reference), and then the listings and uploads with an *ideal* cache of the metadata every
request repeats (``bench/db_meter.CACHEABLE``, answered from a dict that is never invalidated:
the most any cache could save; not built in the server), the fan-out with the long poll's
revoke marks read once for all the polls that ask at once (:mod:`driveserver.meta.shared_reads`,
as the server now does on PostgreSQL; turned off for the reference).

**How database time is measured** (bench/db_meter.py): in this process, the backends'
statement methods (``Tx``/``PgTx`` execute, executemany, fetchone, fetchall; the
``Database``/``PgDatabase`` reads; a snapshot's begin and end) and whole write transactions
(``db.write``) are wrapped with a timer, and aiohttp's ``Application._handle`` with a label
naming the route, so that every statement is charged to the request it ran for. A read outside
a write transaction is what a cache could serve instead; a statement inside a write
transaction cannot be (a SERIALIZABLE transaction must read what it decides on itself, or the
write-skew arguments of docs/scale-out.md fall). pg_stat_statements is not used: it needs a
preload library on the cluster, and would not see SQLite's side.
Run: ``python bench/cache_bench.py`` (about 4 minutes here).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from bench.db_meter import IDEAL, IDEAL_ON, METER, Stat, install_meter  # noqa: E402
from bench.longpoll_bench import metric, percentile, raise_fd_limit, worker  # noqa: E402
from bench.scale_bench import _login  # noqa: E402
from driveserver import appkeys  # noqa: E402
from syncclient.batch_upload import BatchItem, upload_batch  # noqa: E402
from syncclient.remote import Remote  # noqa: E402
from tests.helpers import METRICS_AUTH, RunningServer, start_server  # noqa: E402
from tests.pg_cluster import _admin, run_async, start_cluster, stop_cluster  # noqa: E402

ALICE, BOB = "alice@example.com", "bob@example.com"

# --- clients (other processes) ---------------------------------------------------------------

async def _client(url: str, token: str, plan: str, n: int) -> list[dict[str, float]]:
    """``n`` requests one after the other: ``list:<path>`` or ``upload:<folder>``; each
    sample's seconds per step."""
    auth = {"Authorization": f"Bearer {token}"}
    rnd = random.Random(plan)
    out = []
    async with aiohttp.ClientSession(headers=auth) as s:
        kind, _, arg = plan.partition(":")
        for i in range(n):
            sample: dict[str, float] = {}
            t0 = time.perf_counter()
            if kind == "list":
                async with s.get(f"{url}/api/files", params={"path": arg}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
            else:
                data = os.urandom(rnd.randint(1024, 4096))
                async with s.post(f"{url}/api/files/upload-init", json={
                        "path": f"{arg}/f{i}-{rnd.random()}.txt", "size": len(data)}) as r:
                    assert r.status == 200, await r.text()
                    init = await r.json()
                t1 = time.perf_counter()
                async with s.post(init["upload_url"], data=data, headers={}) as r:
                    assert r.status == 200, await r.text()
                    blocks = (await r.json())["blocks"]
                t2 = time.perf_counter()
                async with s.post(f"{url}/api/files/{init['file_id']}/complete",
                                  json={"blocks": blocks}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                sample.update(init=t1 - t0, blocks=t2 - t1, complete=time.perf_counter() - t2)
            sample["total"] = time.perf_counter() - t0
            out.append(sample)
    return out


def _client_proc(url: str, token: str, plan: str, n: int, queue: Any) -> None:
    queue.put(asyncio.run(_client(url, token, plan, n)))


async def run_client(url: str, token: str, plan: str, n: int) -> list[dict[str, float]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_client_proc, args=(url, token, plan, n, queue))
    proc.start()
    try:
        result: list[dict[str, float]] = await asyncio.to_thread(queue.get, True, 600)
    finally:
        await asyncio.to_thread(proc.join, 60)
    return result


# --- the tree --------------------------------------------------------------------------------

async def make_tree(server: RunningServer, work: Path, args: argparse.Namespace) -> None:
    """Alice's 10,150 files in 200 folders, three folders shared with bob, one of his with
    her (so her root lists "Shared with me" and her requests look up a mount)."""
    await server.register(ALICE)
    await server.register(BOB)
    contents = work / "contents"
    contents.mkdir()
    rnd = random.Random(18)
    for j in range(64):
        (contents / f"c{j}").write_bytes(rnd.randbytes(rnd.randint(1024, 4096)))
    remote = Remote(server.url, await _login(server.url, "seed", ALICE))
    paths = [f"/d{d:03}/f{k:03}.txt" for d in range(args.folders)
             for k in range(args.big if d == 0 else args.per_folder)]
    for start in range(0, len(paths), args.batch):
        items = [BatchItem(p, contents / f"c{(start + i) % 64}", None, None)
                 for i, p in enumerate(paths[start:start + args.batch])]
        results = await upload_batch(remote, items)
        bad = [r for r in results if isinstance(r, Exception)]
        assert not bad, bad[:3]
    root = await remote.call("GET", "/api/files", params={"path": "/"})
    ids = {e["name"]: e["file_id"] for e in root["entries"]}
    for d, role in ((1, "edit"), (2, "view"), (3, "edit")):
        await remote.call("POST", f"/api/files/{ids[f'd{d:03}']}/share",
                          json={"user_email": BOB, "permission": role})
    bob = Remote(server.url, await _login(server.url, "seed", BOB))
    folder = await bob.call("POST", "/api/folders", json={"path": "/bobs"})
    await bob.call("POST", f"/api/files/{folder['file_id']}/share",
                   json={"user_email": ALICE, "permission": "edit"})
    await remote.close()
    await bob.close()


async def copy_to_postgres(sqlite_path: Path, url: str) -> None:
    """The same rows on PostgreSQL, by the migration command's own code."""
    from driveserver.meta.migrations import MIGRATIONS
    from driveserver.meta.pg import PgDatabase
    from driveserver.meta.to_postgres import migrate

    db = PgDatabase(url)
    await db.open()  # the schema
    await db.close()
    await migrate(sqlite_path, url, len(MIGRATIONS))


# --- the measurements ------------------------------------------------------------------------

@dataclass
class Figures:
    """One hot path's figures on one backend."""

    latency: list[float]  # client-side seconds per request (or per answer)
    handled: float  # server seconds per request (mean, inside aiohttp's _handle); fan-out:
    # the commit-to-last-answer wall time, per answer
    reads: Stat  # statements outside write transactions: what a cache could serve
    in_tx: Stat
    writes: Stat
    per: int  # requests (or answers) the figures are divided by
    top: list[tuple[str, Stat]]

    def merge(self, other: Figures) -> Figures:
        """Both rounds' figures as one (the modes take turns, so that a change of the
        machine's load weighs on both alike)."""
        def add(x: Stat, y: Stat) -> Stat:
            return Stat(x.count + y.count, x.seconds + y.seconds)

        top: dict[str, Stat] = {}
        for sql, st in self.top + other.top:
            top[sql] = add(top.get(sql, Stat()), st)
        per = self.per + other.per
        return Figures(self.latency + other.latency,
                       (self.handled * self.per + other.handled * other.per) / max(1, per),
                       add(self.reads, other.reads), add(self.in_tx, other.in_tx),
                       add(self.writes, other.writes), per,
                       sorted(top.items(), key=lambda kv: -kv[1].seconds)[:4])


def take(labels: tuple[str, ...], latency: list[float], per: int, wall: float | None = None
         ) -> Figures:
    def total(table: dict[str, Stat]) -> Stat:
        out = Stat()
        for label in labels:
            out.count += table[label].count
            out.seconds += table[label].seconds
        return out

    handled = total(METER.handled)
    top = sorted(((sql, s) for (label, sql), s in METER.texts.items() if label in labels),
                 key=lambda kv: -kv[1].seconds)[:4]
    seconds = handled.seconds if wall is None else wall
    return Figures(latency, seconds / max(1, per), total(METER.reads),
                 total(METER.in_tx), total(METER.writes), per, top)


async def listing(url: str, token: str, path: str, n: int) -> Figures:
    await run_client(url, token, f"list:{path}", 20)  # warm: caches, pools, plans
    METER.reset()
    samples = await run_client(url, token, f"list:{path}", n)
    return take(("list",), [s["total"] for s in samples], n)


async def completes(url: str, token: str, folder: str, n: int) -> dict[str, Figures]:
    await run_client(url, token, f"upload:{folder}-warm", 10)
    METER.reset()
    samples = await run_client(url, token, f"upload:{folder}", n)
    return {step: take(labels, [s[step] for s in samples], n)
            for step, labels in (("init", ("init",)), ("blocks", ("blocks",)),
                                 ("complete", ("complete",)),
                                 ("total", ("init", "blocks", "complete")))}


async def fan_out(url: str, polls: int, round_: int) -> Figures:
    """bench/longpoll_bench.py's waiting clients, then one commit by another device."""
    poller = await _login(url, f"poller-{round_}", ALICE)
    writer = await _login(url, f"writer-{round_}", ALICE)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/api/sync/cursor",
                         headers={"Authorization": f"Bearer {poller}"}) as r:
            cursor = (await r.json())["cursor"]
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(url, poller, cursor, k, queue))
                 for k in (polls // 2, polls - polls // 2)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        while True:
            async with s.get(f"{url}/metrics", headers=METRICS_AUTH) as r:
                if metric(await r.text(), "drive_longpoll_open") >= polls:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the polls did not all wait")
            await asyncio.sleep(0.1)
        METER.reset()
        t0 = time.time()
        async with s.post(f"{url}/api/folders", json={"path": f"/wake-{round_}"},
                          headers={"Authorization": f"Bearer {writer}"}) as r:
            assert r.status == 201, await r.text()
        answers: list[tuple[float, int]] = []
        for _ in procs:
            answers += await asyncio.to_thread(queue.get, True, 300)
        for p in procs:
            await asyncio.to_thread(p.join, 60)
    assert all(k == 1 for _, k in answers), "a poll answered without the change"
    latency = [done - t0 for done, _ in answers]
    return take(("longpoll",), latency, polls, wall=max(latency))


async def measure(data: Path, database_url: str, args: argparse.Namespace, tag: str
                  ) -> dict[str, dict[str, Figures]]:
    """Every path with nothing shared or cached, then: the listings and uploads with the ideal
    cache, the fan-out with the revoke marks shared (as the server does now)."""
    server = await start_server(data, database_url=database_url)
    out: dict[str, dict[str, Figures]] = {}
    try:
        token = await _login(server.url, f"bench-{tag}", ALICE)
        shared = getattr(server.app[appkeys.DB], "shared_reads", None)  # PostgreSQL's
        requests = max(1, args.requests // args.rounds)
        for k, on in enumerate([False, True] * args.rounds):
            # Off: the reference, as before the shared mark reads (meta/shared_reads.py).
            # On: those as built, and the ideal cache for the listings and uploads.
            IDEAL.clear()
            if shared is not None:
                shared.enabled = on
            got: dict[str, tuple[str, Figures]] = {}
            IDEAL_ON[0] = on
            try:
                for path in ("/", "/d000"):
                    got[f"list {path}"] = ("ideal" if on else "off",
                                           await listing(server.url, token, path, requests))
                steps = await completes(server.url, token, f"/up-{tag}-{k}", requests)
                for step, figures in steps.items():
                    got[f"upload {step}"] = ("ideal" if on else "off", figures)
            finally:
                IDEAL_ON[0] = False
            got["fan-out"] = ("shared" if on else "off", await fan_out(server.url, args.polls, k))
            for path, (mode, figures) in got.items():
                modes = out.setdefault(path, {})
                modes[mode] = modes[mode].merge(figures) if mode in modes else figures
        if shared is not None:
            shared.enabled = True
        return out
    finally:
        await server.stop()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def report(results: dict[str, dict[str, dict[str, Figures]]]) -> None:
    backends = list(results)
    print(f"\n{'path':<16}{'backend':<11}{'cache':<6}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'server ms':>10}{'reads/req':>10}{'read ms':>8}{'read %':>7}{'tx stmts':>9}"
          f"{'tx ms':>7}{'tx %':>6}")
    for path in results[backends[0]]:
        for backend in backends:
            for mode, f in results[backend][path].items():
                per = max(1, f.per)
                handled = f.handled or 1e-9
                print(f"{path:<16}{backend:<11}{mode:<6}{ms(statistics.median(f.latency)):>8}"
                      f"{ms(percentile(f.latency, 0.95)):>8}{ms(f.handled):>10}"
                      f"{f.reads.count / per:>10.1f}{ms(f.reads.seconds / per):>8}"
                      f"{100 * f.reads.seconds / per / handled:>6.0f}%"
                      f"{f.in_tx.count / per:>9.1f}{ms(f.writes.seconds / per):>7}"
                      f"{100 * f.writes.seconds / per / handled:>5.0f}%")
    print("\n(reads: statements outside write transactions, what a cache could serve; tx: write"
          " transactions, timed whole; %: of the server's time per request. Fan-out: per"
          " answer, and 'server ms' is the commit-to-last-answer wall time / answers; the"
          " answers' awaits overlap, so its % may pass 100. cache 'ideal': the repeated"
          " metadata reads (CACHEABLE) served from a dict never invalidated (a ceiling: not"
          " built); fan-out 'shared': the revoke marks the polls ask for at once read once"
          " (meta/shared_reads.py, PostgreSQL only; SQLite reads no mark).)")
    for backend in backends:
        print(f"\nmost expensive reads on {backend}, cache off (per request: count, ms):")
        for path, modes in results[backend].items():
            if path == "upload total":
                continue
            f = modes["off"]
            for sql, st in f.top[:4 if path.startswith("list") else 2]:
                print(f"  {path:<16}{st.count / max(1, f.per):5.1f}"
                      f" {ms(st.seconds / max(1, f.per)):>6}  {sql}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--polls", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2,
                    help="turns of each mode (the requests are split over them)")
    ap.add_argument("--folders", type=int, default=200, help="folders in alice's root")
    ap.add_argument("--per-folder", type=int, default=50, help="files in each folder")
    ap.add_argument("--big", type=int, default=200, help="files in the first folder")
    ap.add_argument("--batch", type=int, default=200, help="files per batch while seeding")
    args = ap.parse_args()
    raise_fd_limit()
    install_meter()
    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    cluster = start_cluster(durable=True)
    try:
        data = work / "data"
        seeding = await start_server(data)
        started = time.monotonic()
        try:
            await make_tree(seeding, work, args)
        finally:
            await seeding.stop()
        print(f"tree made on SQLite in {time.monotonic() - started:.0f} s", flush=True)
        run_async(_admin(cluster, "CREATE DATABASE bench TEMPLATE template0 LOCALE 'C.UTF-8'"))
        url = cluster.url("bench")
        await copy_to_postgres(seeding.config.database_path, url)
        results: dict[str, dict[str, dict[str, Figures]]] = {}
        for backend, database_url in (("SQLite", ""), ("PostgreSQL", url)):
            results[backend] = await measure(data, database_url, args, backend.lower())
            print(f"{backend} measured", flush=True)
        report(results)
    finally:
        stop_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
