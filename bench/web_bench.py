"""The web app in a real browser, beside drive-sync on the same machine in the same run.

Starts ``drive-server serve`` (subprocess, temp data dir), then with Debian's Chromium driven
headless by Playwright:

* **first listing** of a folder of ``--entries`` entries: from navigating to the folder's URL to
  its first row on screen, and to the status line counting them all;
* **upload** of a ``--size-mib`` file (half incompressible, half text) through the page's file
  input (hashing in the browser, sending the blocks, complete), until the server holds it,
  beside ``drive-sync run --once`` uploading the same file from a fresh sync folder.

Run: ``python bench/web_bench.py`` (defaults: 10,000 entries, 1024 MiB). A benchmark, not a
test: this machine is shared, so compare figures from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_bench import PASSWORD, make_file, start_server  # noqa: E402

EMAIL = "bench@example.com"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
MB = 1e6


async def fill_folder(url: str, token: str, count: int) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.post(f"{url}/api/folders", json={"path": "/big"}) as r:
            assert r.status == 201, await r.text()
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem, s.post(f"{url}/api/folders", json={"path": f"/big/entry {i:05d}"}) as r:
                assert r.status == 201, await r.text()
        await asyncio.gather(*(one(i) for i in range(count)))


async def server_size(url: str, token: str, path: str) -> int | None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s, \
            s.get(f"{url}/api/files", params={"path": "/"}) as r:
        for e in (await r.json())["entries"]:
            if e["name"] == path.lstrip("/") and e["version"] > 0:
                return int(e["size"])
    return None


async def wait_stored(url: str, token: str, name: str, size: int, within: float) -> None:
    start = time.monotonic()
    while await server_size(url, token, name) != size:
        if time.monotonic() - start > within:
            raise TimeoutError(f"{name} never reached the server")
        await asyncio.sleep(0.05)


def drive_sync_upload(url: str, src: Path, work: Path) -> float:
    """``drive-sync run --once`` from a fresh folder holding only ``src`` (as ``cli.bin``)."""
    folder, config = work / "sync-folder", work / "sync-config"
    folder.mkdir()
    cli = [sys.executable, "-m", "syncclient", "--config-dir", str(config)]
    subprocess.run([*cli, "init", "--server", url, "--email", EMAIL, "--password-stdin",
                    "--folder", str(folder), "--device-name", "bench-cli"],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    shutil.copyfile(src, folder / "cli.bin")
    start = time.perf_counter()
    subprocess.run([*cli, "run", "--once"], check=True, capture_output=True)
    return time.perf_counter() - start


async def run(entries: int, size: int, work: Path) -> None:
    src = work / "src.bin"
    print(f"preparing {size / MB:.0f} MB test file and a folder of {entries:,} entries ...",
          flush=True)
    make_file(src, size)
    proc, url = start_server(work / "data")
    try:
        async with aiohttp.ClientSession() as s, s.post(
                f"{url}/api/auth/login", json={"email": EMAIL, "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        await fill_folder(url, token, entries)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            context = await browser.new_context()
            r2 = await context.request.post(f"{url}/api/auth/login", data={
                "email": EMAIL, "password": PASSWORD, "cookie": True})
            assert r2.ok, await r2.text()
            page = await context.new_page()
            page.set_default_timeout(600_000)
            await page.goto(url + "/")
            await page.get_by_role("grid").wait_for()
            start = time.perf_counter()
            await page.goto(url + "/#/files/big")
            await page.get_by_role("row").filter(has_text="entry 00000").wait_for()
            first_row = time.perf_counter() - start
            await page.get_by_role("status").filter(
                has_text=f"{entries:,} items").wait_for()
            all_counted = time.perf_counter() - start

            await page.goto(url + "/")
            await page.get_by_role("grid").wait_for()
            start = time.perf_counter()
            await page.get_by_label("Upload files").set_input_files(str(src))
            await wait_stored(url, token, "/src.bin", size, 3600)
            browser_up = time.perf_counter() - start
            await browser.close()
        cli_up = await asyncio.to_thread(drive_sync_upload, url, src, work)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    mbs = size / MB
    print(f"\nfolder of {entries:,} entries: first row after {first_row * 1000:.0f} ms,"
          f" all {entries:,} counted after {all_counted * 1000:.0f} ms")
    print(f"upload of {mbs:.0f} MB: browser {mbs / browser_up:6.1f} MB/s ({browser_up:.1f} s),"
          f" drive-sync {mbs / cli_up:6.1f} MB/s ({cli_up:.1f} s, a run --once from start-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drive-web-bench-") as tmp:
        asyncio.run(run(args.entries, args.size_mib * 1024 * 1024, Path(tmp)))


if __name__ == "__main__":
    main()
