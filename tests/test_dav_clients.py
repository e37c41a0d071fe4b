"""Real WebDAV clients against the real server (issue 16's acceptance): the litmus compliance
suites (basic, copymove, props, locks, http), and rclone copying a tree of a few hundred
files, checking it, and copying again without transferring anything."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
from pathlib import Path

from tests.dav_helpers import dav_user
from tests.helpers import RunningServer
from tests.needs import need

SUITES = ("basic", "copymove", "props", "locks", "http")


async def _run(*argv: str, cwd: Path, within: float = 300) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "RCLONE_CONFIG": "/dev/null"})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def test_litmus_suites_all_pass(server: RunningServer, tmp_path: Path) -> None:
    need(shutil.which("litmus") is not None,
         "litmus is not installed (Debian: apt-get install litmus; .ci/run installs it)")
    _, dav = await dav_user(server)
    rc, out = await _run("litmus", "-k", f"{server.url}/dav/", dav.email, dav.password,
                         cwd=tmp_path)
    summaries = re.findall(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, "
                           r"(\d+) failed", out)
    for suite, run, passed, failed in summaries:
        print(f"litmus {suite}: {passed} of {run} passed, {failed} failed")
    assert [s[0] for s in summaries] == list(SUITES), out[-3000:]
    failures = [line for line in out.splitlines() if "FAIL" in line or "WARNING" in line]
    assert all(s[3] == "0" for s in summaries), "\n".join(failures)
    assert rc == 0, out[-3000:]


def _tree(root: Path, count: int) -> None:
    rng = random.Random(16)
    for i in range(count):
        folder = root / f"d{i % 7}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.bin").write_bytes(rng.randbytes(rng.randint(0, 50_000)))
    (root / "ünïcode name & more.txt").write_text("names travel as they are\n")
    (root / "empty folder").mkdir()


async def test_rclone_copy_check_and_a_second_copy_that_sends_nothing(
        server: RunningServer, tmp_path: Path) -> None:
    need(shutil.which("rclone") is not None,
         "rclone is not installed (Debian: apt-get install rclone; .ci/run installs it)")
    api, dav = await dav_user(server)
    src = tmp_path / "src"
    _tree(src, 300)
    rc, obscured = await _run("rclone", "obscure", dav.password, cwd=tmp_path)
    assert rc == 0
    remote = (f":webdav,url='{server.url}/dav/',vendor=other,user='{dav.email}',"
              f"pass='{obscured.strip()}':backup")
    rc, out = await _run("rclone", "copy", "--create-empty-src-dirs", str(src), remote,
                         cwd=tmp_path)
    assert rc == 0, out
    rc, out = await _run("rclone", "check", str(src), remote, cwd=tmp_path)
    assert rc == 0 and "0 differences found" in out, out
    listed = (await api.get("/api/files", params={"path": "/backup"})).body["entries"]
    assert {e["name"] for e in listed} >= {"d0", "ünïcode name & more.txt", "empty folder"}
    rc, out = await _run("rclone", "copy", "-v", "--stats-one-line", str(src), remote,
                         cwd=tmp_path)
    assert rc == 0, out
    assert not re.search(r"INFO\s+:\s+\S.*: Copied", out), out
    assert re.search(r"Transferred:\s+0 B / 0 B", out) or "0 B / 0 B" in out, out
    # An edit is sent again, and only that file.
    (src / "d0" / "sub0" / "f0.bin").write_bytes(b"changed")
    rc, out = await _run("rclone", "copy", "-v", str(src), remote, cwd=tmp_path)
    assert rc == 0 and len(re.findall(r": Copied", out)) == 1, out
    rc, out = await _run("rclone", "check", str(src), remote, cwd=tmp_path)
    assert rc == 0, out
