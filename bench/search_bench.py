"""Search benchmark: ``GET /api/search`` over 100,000 files, beside a plain LIKE scan.

Builds a fresh data directory, creates the users and inserts their files straight into the
metadata database (one transaction; the migration's triggers fill the search index as every
unit of work would), then starts ``drive-server serve`` on it as a subprocess and times many
searches over HTTP. In the same run, on the same database file, it times the two ways the
query itself can be answered, without HTTP: the trigram index (the SQL the route runs) and a
plain ``LIKE '%q%'`` scan of ``files`` restricted to the asker's workspace (the reference).

Three askers, in one run:

* ``alice``: 100,000 files of her own (100 folders of 1,000), alone on the server;
* ``alice`` again, once ``bob`` has 100,000 files with names made of the same words;
* ``carol``: 1,000 files of her own among those 201,000 (the index holds everyone's names:
  this shows that someone else's matches cost the asker nothing);
* ``carol`` again once ``bob`` shares a folder of 1,000 files with her: her search now reads
  bob's range of the index too (the index is partitioned by owner), keeping only the shared
  folder's items, so this is what a big sharer's other items cost a recipient.

Queries: ``part`` (a random 4-8 character piece of an existing name: few matches), ``word``
(a common word: thousands of matches, a full page), ``miss`` (absent), ``short`` (1-2
characters: no trigram, the asker's items are scanned). Prints p50 / p95 per kind.

    python bench/search_bench.py                    # 100,000 files each
    python bench/search_bench.py --files 20000 --queries 100

Target (issue 14): 100,000 files answer in under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from driveproto.names import name_key
from driveserver.auth import new_id
from driveserver.config import load_config
from driveserver.meta import search
from driveserver.meta.accounts import create_user
from driveserver.meta.db import Database

PASSWORD = "benchmark password"
WORDS = ("report budget invoice photo holiday draft final scan contract notes meeting plan"
         " summary slides design review backup export archive letter receipt schedule"
         " proposal analysis dataset figure chapter thesis résumé straße menu recipe"
         " minutes agenda diagram mockup logo banner video song podcast lecture").split()
EXTS = ("pdf", "docx", "xlsx", "jpg", "png", "txt", "md", "mp4", "csv", "zip")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_name(rng: random.Random, n: int) -> str:
    return (f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}-{n:06d}"
            f" {rng.randrange(2015, 2026)}.{rng.choice(EXTS)}")


def fill(path: Path, user: Any, files: int, rng: random.Random) -> list[str]:
    """``files`` files in folders of 1,000 below the user's root, in one transaction on a
    plain connection (the triggers index them as they would for any unit of work); returns
    their names."""
    conn = sqlite3.connect(path, isolation_level=None)
    root = conn.execute("SELECT root_id FROM workspaces WHERE id = ?",
                        (user["workspace_id"],)).fetchone()[0]
    names: list[str] = []
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    for folder_no in range(max(1, files // 1000)):
        folder_id = new_id("f")
        fname = f"Folder {folder_no:03d}"
        conn.execute(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, created_at, modified_at) VALUES (?,?,?,?,?,1,1,0,?,?)",
            (folder_id, user["workspace_id"], root, fname, name_key(fname), now, now))
        rows = []
        for i in range(min(1000, files - folder_no * 1000)):
            name = make_name(rng, folder_no * 1000 + i)
            names.append(name)
            rows.append((new_id("f"), user["workspace_id"], folder_id, name, name_key(name),
                         1000 + i, "0" * 64, now, now))
        conn.executemany(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, checksum, created_at, modified_at)"
            " VALUES (?,?,?,?,?,0,1,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return names


def queries(rng: random.Random, names: list[str], count: int) -> dict[str, list[str]]:
    def part() -> str:
        name = rng.choice(names)
        size = rng.randrange(4, 9)
        start = rng.randrange(0, max(1, len(name) - size))
        return name[start: start + size]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return {
        "part": [part() for _ in range(count)],
        "word": [rng.choice(WORDS) for _ in range(count)],
        "miss": ["".join(rng.choice(letters) for _ in range(6)) + "qqz" for _ in range(count)],
        "short": [rng.choice(letters) + rng.choice(["", *letters]) for _ in range(count)],
    }


def pct(times: list[float]) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return f"{statistics.median(times) * 1000:6.1f} / {p95 * 1000:6.1f}"


def direct_times(path: Path, workspace_id: str, qs: list[str], like: bool) -> list[float]:
    """The query alone on its own connection: the route's SQL, or the LIKE scan reference."""
    conn = sqlite3.connect(path)
    no = conn.execute("SELECT o.no FROM workspaces w JOIN search_owners o"
                      " ON o.user_id = w.owner_id WHERE w.id = ?", (workspace_id,)).fetchone()[0]
    lo, hi = no << search.SEQ_BITS, (no << search.SEQ_BITS) | search.SEQ_MASK
    out = []
    for q in qs:
        needle = search.fold(q)
        if like:
            sql = ("SELECT f.* FROM files f WHERE f.workspace_id = ? AND f.trashed_at IS NULL"
                   " AND (f.is_directory = 1 OR f.version > 0) AND f.name_key LIKE ?"
                   " ESCAPE '\\' ORDER BY f.created_at DESC LIMIT 51")
            params: tuple[Any, ...] = (workspace_id, search.like_pattern(needle))
        elif len(needle) >= search.MIN_INDEXED:
            sql = search._INDEXED_PART.format(marks="?")
            params = (search.fts_phrase(needle), lo, hi, workspace_id, 51)
        else:
            sql = search._SHORT_PART.format(marks="?")
            params = (lo, hi, search.like_pattern(needle), workspace_id, 51)
        start = time.perf_counter()
        conn.execute(sql, params).fetchall()
        out.append(time.perf_counter() - start)
    conn.close()
    return out


async def http_times(url: str, email: str, qs: list[str]) -> list[float]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/auth/login", json={"email": email,
                                                          "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        out = []
        for q in qs:
            start = time.perf_counter()
            async with s.get(f"{url}/api/search", params={"q": q}, headers=headers) as r:
                assert r.status == 200, await r.text()
                await r.read()
            out.append(time.perf_counter() - start)
        return out


def start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    with open(data.parent / "server.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "driveserver", "serve", "--data-dir", str(data),
             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log)


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(f"{url}/healthz"):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


async def share_first_folder(url: str, owner: str, grantee: str) -> None:
    """``owner`` shares their first folder (1,000 files) with ``grantee``, timed."""
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/auth/login", json={"email": owner,
                                                          "password": PASSWORD}) as r:
            headers = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with s.get(f"{url}/api/files", params={"path": "/"}, headers=headers) as r:
            folder = next(e for e in (await r.json())["entries"] if e["name"] == "Folder 000")
        start = time.perf_counter()
        async with s.post(f"{url}/api/files/{folder['file_id']}/share", headers=headers,
                          json={"user_email": grantee, "permission": "view"}) as r:
            assert r.status == 201, await r.text()
        print(f"\n{owner} shared a folder of 1,000 files with {grantee}:"
              f" {(time.perf_counter() - start) * 1000:.0f} ms")


async def measure(label: str, data: Path, db_path: Path, email: str, workspace_id: str,
                  qs: dict[str, list[str]], share: tuple[str, str] | None = None) -> None:
    """The HTTP figures with the server running, then, with it stopped, the SQL alone: no
    other process writes or even opens the database while the server has it open."""
    port = free_port()
    server = start_server(data, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        if share:
            await share_first_folder(url, *share)
        route = {kind: await http_times(url, email, items) for kind, items in qs.items()}
    finally:
        server.terminate()
        server.wait(30)
    print(f"\n{label}\n  {'kind':6} {'HTTP route':>15} {'index (SQL)':>15} {'LIKE scan':>15}"
          "   p50 / p95 ms")
    for kind, items in qs.items():
        index = direct_times(db_path, workspace_id, items, like=False)
        scan = direct_times(db_path, workspace_id, items, like=True)
        print(f"  {kind:6} {pct(route[kind]):>15} {pct(index):>15} {pct(scan):>15}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="per kind")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        data = Path(tmp) / "data"
        config = load_config(None, env={}, overrides={"data_dir": data})
        db = Database(config.database_path)
        await db.open()
        users = {e: await create_user(db, f"{e}@example.com", PASSWORD, 1 << 40)
                 for e in ("alice", "bob", "carol")}
        await db.close()
        start = time.perf_counter()
        alice_names = fill(config.database_path, users["alice"], args.files, rng)
        print(f"inserted {args.files:,} files for alice in {time.perf_counter() - start:.1f} s"
              " (search index kept by the triggers)")
        qs = queries(rng, alice_names, args.queries)
        await measure(f"alice, {args.files:,} files, alone", data, config.database_path,
                      "alice@example.com", users["alice"]["workspace_id"], qs)
        bob_names = fill(config.database_path, users["bob"], args.files, rng)
        carol_names = fill(config.database_path, users["carol"], 1000, rng)
        await measure(f"alice again, bob has {args.files:,} files of the same words", data,
                      config.database_path, "alice@example.com",
                      users["alice"]["workspace_id"], qs)
        carol_qs = queries(rng, carol_names, args.queries)
        await measure(f"carol, 1,000 files among {2 * args.files + 1000:,}", data,
                      config.database_path, "carol@example.com",
                      users["carol"]["workspace_id"], carol_qs)
        await measure(f"carol again, once bob shares 1,000 of his {args.files:,} files with her"
                      " (the SQL columns: her own workspace only)", data,
                      config.database_path, "carol@example.com",
                      users["carol"]["workspace_id"],
                      queries(rng, carol_names + bob_names[:1000], args.queries),
                      share=("bob@example.com", "carol@example.com"))


if __name__ == "__main__":
    asyncio.run(main())
