"""An idle daemon with problem files: CPU and log lines over a minute (a benchmark, not a test).

Starts ``drive-server serve`` and one ``drive-sync run`` daemon on a folder of ``--files`` small
files plus items it cannot sync (a name that is not UTF-8, a symlink leading out of the folder,
names differing only in case are resolved at once), waits until the daemon is idle, then
measures, over ``--seconds``: the daemon's CPU time (utime + stime from /proc, as a share of one
core) and the lines it logged. Beside it, the same measurement of ``sleep`` as the floor this
machine gives a process that does nothing.

Target (issue 11): under 1 % of a core, and no more than a few log lines.

Run: ``python bench/idle_bench.py`` (defaults: 1,000 files, 60 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sync_bench import Server  # noqa: E402
from tests.sync_helpers import make_devices  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="idle-bench-"))
    srv = Server(work / "data")
    try:
        (a,) = make_devices(work, "idle-a")
        await a.init(srv)
        for i in range(args.files):
            a.write(f"docs/{i // 100}/f{i}.txt", f"file {i}\n" * 20)
        a.write(os.fsdecode(b"bad-\xff-name.txt"), "a name that is not UTF-8")
        (a.folder / "passwd").symlink_to("/etc/passwd")
        a.write("Index.html", "one")
        a.write("index.html", "two")
        log = work / "daemon.log"
        a.start_daemon(log)
        assert a.daemon is not None
        status = a.config_dir / "status.json"
        deadline = time.monotonic() + 120
        while not (status.exists() and '"pending": 0' in status.read_text()):
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon did not finish its first sync")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # let the first round's retries settle
        lines_before = len(log.read_text().splitlines())
        cpu_before, t0 = cpu_seconds(a.daemon.pid), time.monotonic()
        floor = await asyncio.create_subprocess_exec("sleep", str(args.seconds + 5))
        floor_before = cpu_seconds(floor.pid)
        await asyncio.sleep(args.seconds)
        used = cpu_seconds(a.daemon.pid) - cpu_before
        floor_used = cpu_seconds(floor.pid) - floor_before
        elapsed = time.monotonic() - t0
        floor.kill()
        await floor.wait()
        new_lines = log.read_text().splitlines()[lines_before:]
        print(f"idle daemon, {args.files} files + 2 items it cannot sync, over {elapsed:.0f} s: "
              f"{100 * used / elapsed:.2f} % of a core ({used:.2f} s CPU), "
              f"{len(new_lines)} log line(s) (target < 1 %, a few lines); "
              f"`sleep` beside it: {100 * floor_used / elapsed:.2f} %")
        for line in new_lines[:10]:
            print("  log:", line[:160])
        a.stop_daemon()
    finally:
        srv.stop()


if __name__ == "__main__":
    asyncio.run(main())
