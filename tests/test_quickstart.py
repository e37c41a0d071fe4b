"""The sh block of docs/first-five-minutes.md, run as a user pasting it: one ``bash -e`` script.

The only change to the block: port 8080 becomes a free port, so the test can run beside anything.
Its ``&`` lines stay background jobs of that script. One line is put before the block: an EXIT
trap that writes the jobs' PIDs to a file and waits for them, with their exit status, so that
the test knows the block is over, stops the jobs by PID, and sees them exit cleanly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "first-five-minutes.md"
# "With the virtualenv active": the bin folder of the interpreter running the tests comes first,
# so the walkthrough runs the drive-server and drive-sync of this checkout, never a copy that
# happens to be installed elsewhere on the machine. (Not resolved: a venv's python is a symlink
# to the base interpreter, whose folder holds no drive-* scripts.)
VENV_BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}
ENV["PATH"] = os.pathsep.join([str(VENV_BIN), ENV.get("PATH", os.defpath)])
ENV["VIRTUAL_ENV"] = str(VENV_BIN.parent)


def block() -> str:
    text = DOC.read_text()
    found = re.search(r"```sh\n(.*?)```", text, re.S)
    assert found, "no sh block in the quickstart"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_walkthrough_runs_this_checkouts_commands() -> None:
    """The commands the walkthrough names resolve to this interpreter's own scripts."""
    for name in ("drive-server", "drive-sync"):
        found = shutil.which(name, path=ENV["PATH"])
        assert found is not None, f"{name} is not installed beside {sys.executable}"
        assert Path(found).parent == VENV_BIN, found


def test_first_five_minutes(tmp_path: Path) -> None:
    port = free_port()
    pids, codes, out, err = (tmp_path / n for n in ("jobs.pids", "jobs.codes", "out", "err"))
    trap = ("rc=$?; jobs -p > \"$PIDS.tmp\"; mv \"$PIDS.tmp\" \"$PIDS\"; for p in $(jobs -p); "
            "do wait \"$p\" && c=0 || c=$?; echo \"$p $c\" >> \"$CODES\"; done; exit $rc")
    script = tmp_path / "walkthrough.sh"
    script.write_text(f"PIDS={shlex.quote(str(pids))} CODES={shlex.quote(str(codes))}\n"
                      f"trap {shlex.quote(trap)} EXIT\n" + block().replace("8080", str(port)))
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # Files, not pipes: the background jobs keep the script's stdout and stderr open.
        bash = subprocess.Popen(["bash", "-e", str(script)], cwd=tmp_path, env=ENV,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True)
    jobs: list[int] = []
    try:
        wait_until(pids.exists, 180, "the walkthrough to end")
        jobs = [int(pid) for pid in pids.read_text().split()]
    finally:
        if not pids.exists():  # the script hangs: stop it and its jobs, with their session
            os.killpg(bash.pid, signal.SIGKILL)
        for pid in jobs:  # the trap waits for them: they are still bash's children
            os.kill(pid, signal.SIGTERM)
        bash.wait(timeout=60)
    printed, logged = out.read_text(), err.read_text()
    assert bash.returncode == 0, f"{printed}\n{logged[-3000:]}"
    assert len(jobs) == 3, jobs  # the server and two daemons
    assert sorted(codes.read_text().split("\n")[:-1]) == sorted(f"{p} 0" for p in jobs), \
        logged[-3000:]
    # The two cats, in order: the first version arrived before it was read, the second after.
    lines = printed.splitlines()
    assert "hello from the laptop" in lines and "second version" in lines
    assert lines.index("hello from the laptop") < lines.index("second version")
    assert re.search(r"^v2 .* laptop$", printed, re.M), printed
    assert re.search(r"^v1 .* laptop$", printed, re.M), printed
    assert "State:   idle" in printed
    assert "correct horse" not in printed
    assert (tmp_path / "Desktop" / "hello.txt").read_text() == "second version\n"
