"""WebDAV throughput beside the JSON API's, in the same run, with curl as the client.

Starts ``drive-server serve`` as a subprocess on a temp data dir (local block store), adds a
user and an app password (``drive-server app-password create``), then:

* a file of ``--size-mib`` (default 1024) up and down through the JSON API: upload-init,
  ``curl`` streaming the file to the block route's ``upload_url``, complete; ``curl`` on the
  content route;
* the same file up and down over WebDAV: ``curl -T`` (PUT) and ``curl`` (GET) on ``/dav/``;
* ``PROPFIND`` Depth 1 of a folder of ``--entries`` (default 10,000) files, beside the API's
  listing of the same folder (pages of 5,000).

It prints MB/s and seconds side by side, and the server's peak RSS after each upload (the
WebDAV PUT must stay bounded as the block upload does). Run:
``python bench/dav_bench.py`` (``--size-mib 64 --entries 1000`` for a quick look). A benchmark,
not a test: the machine is shared, so compare figures from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.upload_bench import PASSWORD, make_file, peak_rss_mb, start_server  # noqa: E402

MB = 1e6
EMAIL = "bench@example.com"


def _curl(out: str, *args: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    done = subprocess.run(["curl", "-sS", "--fail", "-o", out, *args], check=True,
                          capture_output=True)
    return time.perf_counter() - t0, done.stdout


async def curl(*args: str, out: str = "/dev/null") -> float:
    """Run curl quietly (in a thread: the loop's session stays usable); seconds it took,
    failing on any HTTP error."""
    return (await asyncio.to_thread(_curl, out, *args))[0]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def app_password(data: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}
    out = subprocess.run([sys.executable, "-m", "driveserver", "app-password", "create", EMAIL,
                          "bench", "--data-dir", str(data)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return out.splitlines()[1]


async def make_entries(s: aiohttp.ClientSession, url: str, auth: dict[str, str],
                       count: int) -> None:
    """``count`` empty files in /many, through the API's batch routes (1,000 a request)."""
    for start in range(0, count, 1000):
        files = [{"path": f"/many/file {i:05d}.txt", "size": 0}
                 for i in range(start, min(count, start + 1000))]
        async with s.post(f"{url}/api/files/upload-init/batch", headers=auth,
                          json={"files": files}) as r:
            results = (await r.json())["results"]
        async with s.post(f"{url}/api/files/complete/batch", headers=auth,
                          json={"files": [{"file_id": x["file_id"], "blocks": []}
                                          for x in results]}) as r:
            assert r.status == 200, await r.text()


async def run(size: int, entries: int, workdir: Path) -> None:
    src = workdir / "src.bin"
    print(f"preparing {size / MB:.0f} MB test file ...", flush=True)
    digest = make_file(src, size)
    data = workdir / "data"
    proc, url = start_server(data)
    basic = f"{EMAIL}:{app_password(data)}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/api/auth/login", json={"email": EMAIL,
                                                            "password": PASSWORD}) as r:
                token = (await r.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            rss_idle = peak_rss_mb(proc.pid)

            t0 = time.perf_counter()
            async with s.post(f"{url}/api/files/upload-init", headers=auth,
                              json={"path": "/api.bin", "size": size}) as r:
                init = await r.json()
            _, out = await asyncio.to_thread(_curl, "-", "-X", "POST", "--upload-file",
                                             str(src), init["upload_url"])
            blocks = json.loads(out)["blocks"]
            async with s.post(f"{url}/api/files/{init['file_id']}/complete", headers=auth,
                              json={"blocks": blocks}) as r:
                assert r.status == 200, await r.text()
            api_up = time.perf_counter() - t0
            rss_api = peak_rss_mb(proc.pid)
            api_down = await curl("-H", f"Authorization: Bearer {token}",
                            f"{url}/api/files/{init['file_id']}/content")

            dav_up = await curl("-u", basic, "-T", str(src), f"{url}/dav/dav.bin")
            rss_dav = peak_rss_mb(proc.pid)
            dav_down = await curl("-u", basic, f"{url}/dav/dav.bin")
            got = workdir / "got.bin"
            await curl("-u", basic, f"{url}/dav/dav.bin", out=str(got))
            assert sha256_of(got) == digest, "WebDAV GET returned different bytes"
            got.unlink()

            print(f"making {entries} entries ...", flush=True)
            await make_entries(s, url, auth, entries)
            propfind = [await curl("-u", basic, "-X", "PROPFIND", "-H", "Depth: 1",
                             f"{url}/dav/many/") for _ in range(3)]
            listing = []
            for _ in range(3):
                t0 = time.perf_counter()
                params: dict[str, str] = {"path": "/many", "limit": "5000"}
                seen = 0
                while True:
                    async with s.get(f"{url}/api/files", headers=auth, params=params) as r:
                        page = await r.json()
                    seen += len(page["entries"])
                    if not page.get("has_more"):
                        break
                    params["cursor"] = page["next_cursor"]
                listing.append(time.perf_counter() - t0)
                assert seen == entries
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

    mbs = size / MB
    print(f"\nfile: {mbs:.0f} MB, loopback, local block store, curl as the client")
    print(f"upload   JSON API (init, curl to upload_url, complete): {mbs / api_up:7.1f} MB/s")
    print(f"upload   WebDAV PUT (curl -T):                          {mbs / dav_up:7.1f} MB/s"
          f"  = {100 * api_up / dav_up:5.1f}% of the API's")
    print(f"download JSON API content route (curl):                 {mbs / api_down:7.1f} MB/s")
    print(f"download WebDAV GET (curl):                             {mbs / dav_down:7.1f} MB/s"
          f"  = {100 * api_down / dav_down:5.1f}% of the API's")
    print(f"PROPFIND Depth 1 of {entries} entries: median {statistics.median(propfind):.3f} s"
          f" (runs {', '.join(f'{t:.3f}' for t in propfind)}); API listing of the same folder"
          f" (pages of 5,000): median {statistics.median(listing):.3f} s")
    print(f"server peak RSS: {rss_idle:.0f} MB idle, {rss_api:.0f} MB after the API upload,"
          f" {rss_dav:.0f} MB after the WebDAV PUT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--entries", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dav-bench-") as tmp:
        asyncio.run(run(args.size_mib * 1024 * 1024, args.entries, Path(tmp)))


if __name__ == "__main__":
    main()
