"""Bytes on the wire for edits of a large file (issue 15), counted at the socket, beside rsync.

A benchmark, not a test. Starts ``drive-server serve`` (a subprocess, temp data dir) and two
devices, A and B, each talking to the server through its own counting TCP proxy: every byte
each way of every connection (HTTP headers, JSON, the change feed, blocks and patches alike)
is counted, so the figure is what a metered link would bill. For each data set (partly
compressible: words from a 5,000-word vocabulary, which zstd shrinks 2.8x like the issue's
file; and incompressible: random bytes) a ``--mib`` MiB file is synced to both devices, then
each of the six edits of the issue's table is made in A and synced with
``drive-sync run --once`` on A (bytes up from A: sent + received on A's proxy) and then on B
(bytes down to B: sent + received on B's proxy). Beside each, in the same run on the same
old/new files: ``rsync -a --no-whole-file --stats`` and ``rsync -az --no-whole-file --stats``
(total bytes sent + received), and the server's storage growth (new objects and their bytes).

Run: ``python bench/wire_bench.py`` (defaults: 100 MiB, both data sets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import PASSWORD  # noqa: E402
from tests.sync_helpers import EMAIL, Device, make_devices  # noqa: E402

MiB = 1024 * 1024


class Server:
    """``drive-server serve`` in a subprocess, with one user; ``port`` from its log line."""

    def __init__(self, data: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}
        self.data = data
        self.log = open(data.parent / "server.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "driveserver", "serve", "--port",
                                      "0", "--data-dir", str(data)], stderr=self.log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.log.seek(0)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not start")
        subprocess.run([sys.executable, "-m", "driveserver", "user", "add", EMAIL,
                        "--password-stdin", "--data-dir", str(data)], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True, env=env)

    def stored(self) -> tuple[int, int]:
        """(objects, bytes) in the block store."""
        n = size = 0
        for dirpath, _, files in os.walk(self.data / "blocks"):
            for f in files:
                n += 1
                size += os.path.getsize(os.path.join(dirpath, f))
        return n, size

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class CountingProxy:
    """A TCP proxy to the server that counts the bytes of every connection, each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = self.down = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def total(self) -> int:
        return self.up + self.down

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(256 * 1024):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, w2, True), pipe(r2, writer, False))

    async def stop(self) -> None:
        self.server.close()


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url


def compressible(n: int, rnd: random.Random) -> bytes:
    """``n`` bytes of words from a 5,000-word vocabulary (zstd -3 makes 4 MiB of it ~1.5 MB)."""
    vocab = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 10)))
             for _ in range(5000)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rnd.choices(vocab, k=200_000)) + b" "
    return bytes(out[:n])


def incompressible(n: int, rnd: random.Random) -> bytes:
    return rnd.randbytes(n)


Edit = Callable[[bytearray, Callable[[int], bytes]], None]


def edits() -> list[tuple[str, Edit]]:
    def overwrite_100(d: bytearray, fresh: Callable[[int], bytes]) -> None:
        mid = len(d) // 2
        d[mid:mid + 100] = fresh(100)

    def append_1m(d: bytearray, fresh: Callable[[int], bytes]) -> None:
        d.extend(fresh(MiB))

    def insert_10_at_0(d: bytearray, fresh: Callable[[int], bytes]) -> None:
        d[0:0] = fresh(10)

    def insert_1m_mid(d: bytearray, fresh: Callable[[int], bytes]) -> None:
        mid = len(d) // 2 + 12345
        d[mid:mid] = fresh(MiB)

    def delete_1m_mid(d: bytearray, fresh: Callable[[int], bytes]) -> None:
        mid = len(d) // 2 - 54321
        del d[mid:mid + MiB]

    def rewrite_first_4m(d: bytearray, fresh: Callable[[int], bytes]) -> None:
        d[0:4 * MiB] = fresh(4 * MiB)

    return [("overwrite 100 B in the middle", overwrite_100), ("append 1 MiB", append_1m),
            ("insert 10 B at offset 0", insert_10_at_0),
            ("insert 1 MiB in the middle", insert_1m_mid),
            ("delete 1 MiB in the middle", delete_1m_mid),
            ("rewrite the first 4 MiB", rewrite_first_4m)]


def rsync_bytes(old: Path, new: Path, work: Path, *flags: str) -> int:
    """Total bytes sent + received by rsync updating a copy of ``old`` to ``new``."""
    dest = work / "rsync-dest.bin"
    shutil.copyfile(old, dest)
    r = subprocess.run(["rsync", *flags, "--no-whole-file", "--ignore-times", "--stats",
                        str(new), str(dest)], capture_output=True, text=True, check=True)
    sent = re.search(r"Total bytes sent: ([\d,.]+)", r.stdout)
    received = re.search(r"Total bytes received: ([\d,.]+)", r.stdout)
    assert sent and received, r.stdout
    return sum(int(m.group(1).replace(",", "").replace(".", "")) for m in (sent, received))


async def run_set(name: str, make: Callable[[int, random.Random], bytes], mib: int,
                  srv: Server, pa: CountingProxy, pb: CountingProxy, a: Device, b: Device,
                  work: Path) -> list[tuple]:
    rnd = random.Random(hash(name) & 0xFFFF)
    data = bytearray(make(mib * MiB, rnd))
    rel = f"{name}.bin"
    a.write(rel, bytes(data))
    await a.sync()
    await b.sync()
    assert b.read(rel) == bytes(data)
    rows = []
    for label, edit in edits():
        old = work / "old.bin"
        old.write_bytes(bytes(data))
        edit(data, lambda n: make(n, rnd))
        new = work / "new.bin"
        new.write_bytes(bytes(data))
        objects, stored = srv.stored()
        a0, b0 = pa.total(), pb.total()
        a.write(rel, bytes(data))
        await a.sync()
        up = pa.total() - a0
        await b.sync()
        down = pb.total() - b0
        assert b.read(rel) == bytes(data), f"{label}: B's copy differs"
        objects2, stored2 = srv.stored()
        rows.append((label, up, down, rsync_bytes(old, new, work, "-a"),
                     rsync_bytes(old, new, work, "-az"), objects2 - objects, stored2 - stored))
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--sets", default="compressible,incompressible")
    ap.add_argument("--cdc", default="", metavar="MIN,AVG",
                    help="measure other FastCDC sizes (KiB; the clients run in this process"
                         " and the server never cuts): how the scheme's were chosen")
    args = ap.parse_args()
    if args.cdc:
        from driveproto import chunking

        chunking.CDC_MIN, chunking.CDC_AVG = (int(x) * 1024 for x in args.cdc.split(","))
        print(f"FastCDC sizes for this run: min {chunking.CDC_MIN // 1024} KiB, avg parameter"
              f" {chunking.CDC_AVG // 1024} KiB, max {chunking.CDC_MAX // 1024} KiB")
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is needed for the reference figures")
    work = Path(tempfile.mkdtemp(prefix="wire-bench-"))
    srv = Server(work / "data")
    pa, pb = CountingProxy(srv.port), CountingProxy(srv.port)
    await pa.start()
    await pb.start()
    makers = {"compressible": compressible, "incompressible": incompressible}
    try:
        a, b = make_devices(work, "wire-a", "wire-b")
        await a.init(_Url(pa.url))  # type: ignore[arg-type]
        await b.init(_Url(pb.url))  # type: ignore[arg-type]
        for name in args.sets.split(","):
            rows = await run_set(name, makers[name], args.mib, srv, pa, pb, a, b, work)
            print(f"\n{args.mib} MiB file, {name}: bytes on the wire (sent + received, at the"
                  " socket) per edit")
            print(f"  {'edit':<31}{'up from A':>12}{'down to B':>12}{'rsync -a':>12}"
                  f"{'rsync -az':>12}   A/B <= rsync / <= rsync -z   storage growth")
            for label, up, down, rs, rz, objs, grown in rows:
                worst = max(up, down)
                verdict = f"{'yes' if worst <= rs else 'NO':>3} / {'yes' if worst <= rz else 'no':>3}"
                print(f"  {label:<31}{up:>12,}{down:>12,}{rs:>12,}{rz:>12,}   {verdict:<28}"
                      f"{objs} objects, {grown:,} B")
    finally:
        await pa.stop()
        await pb.stop()
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
