"""Upload/download throughput of the block server on loopback, beside the machine's raw limit.

Starts ``drive-server serve`` as a subprocess on a temp data dir (local block store), creates a
user, then:

* uploads a file of ``--size-mib`` through the 3-step flow (upload-init, streamed body, complete);
* downloads it through the content endpoint and through the per-block URLs (4 in parallel);

and prints MB/s for each next to the in-process raw limit of the same work on the same bytes
(SHA-256 + zstd + AES-256-GCM sealing, and opening), plus the server's peak RSS (VmHWM).
Run: ``python bench/upload_bench.py --size-mib 1024`` (and ``--size-mib 2048`` for the RSS target).
This is a benchmark, not a test: the machine is shared, so compare figures from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driveproto.blocks import BLOCK_SIZE, block_hash  # noqa: E402
from driveproto.wire import decompress_from_wire  # noqa: E402
from driveserver.blocks.keys import KeyRing  # noqa: E402

try:
    from driveserver.blocks.pipeline import default_threads  # noqa: E402
except ImportError:  # a checkout from before issue 15: its pool had the same size
    def default_threads() -> int:
        return min(4, os.cpu_count() or 2)

MB = 1e6
PASSWORD = "benchmark password"


def make_file(path: Path, size: int) -> str:
    """Half incompressible, half compressible text-like data, like a real mix of files."""
    h = hashlib.sha256()
    rnd = os.urandom(BLOCK_SIZE)
    text = (b"the quick brown fox jumps over the lazy dog; " * 100_000)[:BLOCK_SIZE]
    with path.open("wb") as fh:
        written, i = 0, 0
        while written < size:
            chunk = (rnd if i % 2 == 0 else text)[: size - written]
            chunk = chunk[:-8] + i.to_bytes(8, "big") if len(chunk) >= 8 else chunk
            fh.write(chunk)
            h.update(chunk)
            written += len(chunk)
            i += 1
    return h.hexdigest()


def raw_limit(path: Path, workdir: Path, threads: int = 1, max_bytes: int = 512 * 1024 * 1024
              ) -> tuple[float, float, float]:
    """MB/s of seal (hash+zstd+AES) and open (AES+zstd+hash) over the file's own blocks, on
    ``threads`` threads (the server's pipeline has ``default_threads()``: the same number is its
    limit), and of storing those sealed blocks durably on this disk as the local store does
    (each to its own file, fsynced, then its folder fsynced), counted in plaintext bytes like
    the upload."""
    ring = KeyRing.generate()
    blocks = []
    with path.open("rb") as fh:
        while sum(len(b) for b in blocks) < max_bytes and (b := fh.read(BLOCK_SIZE)):
            blocks.append(b)
    total = sum(len(b) for b in blocks)

    def seal(b: bytes) -> tuple[str, bytes]:
        h = block_hash(b)
        return h, ring.seal(h, b)

    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        sealed = list(pool.map(seal, blocks))
        t1 = time.perf_counter()
        list(pool.map(lambda hs: ring.open(*hs), sealed))
        t2 = time.perf_counter()
    disk = workdir / "durable-write-probe"
    disk.mkdir()
    t3 = time.perf_counter()
    for i, (_, s) in enumerate(sealed):
        fd = os.open(disk / f"b{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, s)
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(disk, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    t4 = time.perf_counter()
    for child in disk.iterdir():
        child.unlink()
    disk.rmdir()
    return total / (t1 - t0) / MB, total / (t2 - t1) / MB, total / (t4 - t3) / MB


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def start_server(data: Path, profile: Path | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DRIVE_SERVER_LOG_LEVEL": "WARNING"}
    env = {k: v for k, v in env.items() if not k.startswith("DRIVE_") or k == "DRIVE_SERVER_LOG_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this tree's code
    subprocess.run([sys.executable, "-m", "driveserver", "user", "add", "bench@example.com",
                    "--password-stdin", "--data-dir", str(data)], input=PASSWORD + "\n",
                   text=True, check=True, capture_output=True, env=env)
    # Under cProfile the server writes its profile when SIGINT ends it.
    runner = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    proc = subprocess.Popen([*runner, "-m", "driveserver", "serve", "--port", "0",
                             "--data-dir", str(data)], stderr=subprocess.PIPE, text=True,
                            env={**env, "DRIVE_SERVER_LOG_LEVEL": "INFO",
                                 "DRIVE_VERSIONS_GC_INTERVAL_SECONDS": "0"})
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            # Stop reading the log (access lines would fill the pipe): send it to /dev/null.
            proc.stderr.close()
            return proc, m.group(1)
    raise SystemExit("server did not start")


async def run(size: int, workdir: Path, profile: Path | None = None) -> None:
    src = workdir / "src.bin"
    print(f"preparing {size / MB:.0f} MB test file ...", flush=True)
    digest = make_file(src, size)
    threads = default_threads()
    seal1, open1, _ = raw_limit(src, workdir, 1)
    seal_mbs, open_mbs, disk_mbs = raw_limit(src, workdir, threads)
    proc, url = start_server(workdir / "data", profile)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/api/auth/login", json={"email": "bench@example.com",
                                                            "password": PASSWORD}) as r:
                token = (await r.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            rss_before = peak_rss_mb(proc.pid)

            async def body():
                with src.open("rb") as fh:
                    while chunk := fh.read(1024 * 1024):
                        yield chunk

            t0 = time.perf_counter()
            async with s.post(f"{url}/api/files/upload-init", headers=auth,
                              json={"path": "/big.bin", "size": size}) as r:
                init = await r.json()
            async with s.post(init["upload_url"], data=body()) as r:
                blocks = (await r.json())["blocks"]
            async with s.post(f"{url}/api/files/{init['file_id']}/complete", headers=auth,
                              json={"blocks": blocks}) as r:
                assert r.status == 200, await r.text()
            up = time.perf_counter() - t0
            rss_upload = peak_rss_mb(proc.pid)
            if profile:
                print(f"upload (under cProfile, slower): {size / MB / up:.1f} MB/s")
                return

            # Timed like `curl -o /dev/null`: the client only receives. The bytes are checked in
            # a second, untimed download (hashing here would bill the client's CPU to the
            # server on this two-core machine).
            received = 0
            t0 = time.perf_counter()
            async with s.get(f"{url}/api/files/{init['file_id']}/content", headers=auth) as r:
                async for chunk in r.content.iter_chunked(1024 * 1024):
                    received += len(chunk)
            down = time.perf_counter() - t0
            assert received == size
            h = hashlib.sha256()
            async with s.get(f"{url}/api/files/{init['file_id']}/content", headers=auth) as r:
                async for chunk in r.content.iter_chunked(1024 * 1024):
                    h.update(chunk)
            assert h.hexdigest() == digest, "content endpoint returned different bytes"

            async with s.get(f"{url}/api/files/{init['file_id']}/download", headers=auth) as r:
                plan = (await r.json())["blocks"]
            sem = asyncio.Semaphore(4)
            got: dict[int, bytes] = {}

            async def fetch(b: dict) -> None:
                async with sem, s.get(b["url"]) as r:
                    data = decompress_from_wire(r.headers["X-Block-Encoding"], await r.read())
                    assert block_hash(data) == b["hash"]
                    got[b["order"]] = hashlib.sha256(data).digest()  # keep memory small

            t0 = time.perf_counter()
            await asyncio.gather(*(fetch(b) for b in plan))
            blocks_down = time.perf_counter() - t0
            rss_end = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

    mbs = size / MB
    print(f"\nfile: {mbs:.0f} MB ({len(blocks)} blocks), loopback, local block store")
    print(f"raw limit in-process, one thread: seal {seal1:7.1f} MB/s   open {open1:7.1f} MB/s")
    print(f"raw limit in-process, {threads} threads (the server's pipeline):"
          f" seal {seal_mbs:7.1f} MB/s   open {open_mbs:7.1f} MB/s")
    print(f"durable write of the sealed blocks, one at a time: {disk_mbs:7.1f} MB/s")
    print(f"upload   (3-step, streamed):     {mbs / up:7.1f} MB/s  = {100 * mbs / up / seal_mbs:5.1f}% of the seal limit,"
          f" {100 * mbs / up / min(seal_mbs, disk_mbs):5.1f}% of the lower of seal and durable write")
    print(f"download (content endpoint, like curl): {mbs / down:7.1f} MB/s  = {100 * mbs / down / open_mbs:5.1f}% of open limit")
    print(f"download (block URLs, 4 at once): {mbs / blocks_down:6.1f} MB/s  = {100 * mbs / blocks_down / open_mbs:5.1f}% of open limit")
    print(f"server peak RSS: {rss_before:.0f} MB idle, {rss_upload:.0f} MB after upload, {rss_end:.0f} MB at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the server under cProfile, upload only, and write its"
                             " profile to FILE (read it with pstats; where the upload's time goes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drive-bench-") as tmp:
        asyncio.run(run(args.size_mib * 1024 * 1024, Path(tmp),
                        args.profile.resolve() if args.profile else None))


if __name__ == "__main__":
    main()
