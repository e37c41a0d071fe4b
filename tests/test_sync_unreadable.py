"""Files and folders the daemon may not read: skipped, reported, never taken for deleted, and
synced once readable.

The client runs in its own process without the file-permission override root has
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so mode 000 stops it exactly as it stops any user's
daemon; run as an ordinary user, the test needs no such step.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import RunningServer
from tests.needs import need
from tests.sync_helpers import REPO, Device, make_devices

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _drop_permission_override() -> None:
    """In the child before exec: remove the two capabilities from the bounding set, so that
    the program run (as root) gets neither."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


async def run_once_unprivileged(device: Device) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "syncclient", *device.argv("run", "--once")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True,
        timeout=120, preexec_fn=_drop_permission_override if os.geteuid() == 0 else None)



def _why_root_keeps_its_override() -> str:
    """Empty if mode 000 can stop the client here: always for an ordinary user; for root, if it
    may shrink its capability bounding set (that needs CAP_SETPCAP, which some containers
    withhold). Otherwise what failed, and what to change."""
    if os.geteuid() != 0:
        return ""
    try:
        subprocess.run(["true"], preexec_fn=_drop_permission_override, check=True, timeout=30)
    except (subprocess.SubprocessError, OSError) as exc:
        return (f"running as root, and dropping CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH for the "
                f"client failed ({exc}): without that, mode 000 cannot stop it. Run the suite as "
                "an ordinary user, or give root CAP_SETPCAP (`docker run --cap-add SETPCAP`)")
    return ""


async def test_unreadable_items_are_skipped_reported_and_synced_later(
        tmp_path: Path, srv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    why = _why_root_keeps_its_override()
    need(not why, why)
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    a.write("readable.txt", "v1")
    a.write("secret.txt", "synced before it became unreadable")
    a.write("locked/inner.txt", "inside a folder that becomes unlistable")
    await a.sync()
    a.write("readable.txt", "v2")
    a.write("secret.txt", "edited, then made unreadable")
    a.write("new-secret.txt", "never readable so far")
    for rel in ("secret.txt", "new-secret.txt", "locked"):
        (a.folder / rel).chmod(0o000)
    try:
        done = await run_once_unprivileged(a)
        assert done.returncode == 1, done.stdout + done.stderr
        for rel in ("/secret.txt", "/new-secret.txt", "/locked"):
            assert f"{rel}: permission denied" in done.stderr
        # The rest went on; nothing unreadable was taken for deleted, nothing half-sent: the
        # server keeps the last version it had of the edited file.
        await b.sync()
        assert b.tree() == {"readable.txt": b"v2",
                            "secret.txt": b"synced before it became unreadable",
                            "locked": None,
                            "locked/inner.txt": b"inside a folder that becomes unlistable"}
        capsys.readouterr()
        assert await a.cli("status") == 0
        status = capsys.readouterr().out
        assert "Problems (3):" in status and "/new-secret.txt: permission denied" in status
    finally:
        for rel, mode in (("secret.txt", 0o644), ("new-secret.txt", 0o644), ("locked", 0o755)):
            (a.folder / rel).chmod(mode)
    # Readable again: the next sync picks them up and the problems are gone.
    done = await run_once_unprivileged(a)
    assert done.returncode == 0, done.stdout + done.stderr
    await b.sync()
    assert b.read("new-secret.txt") == b"never readable so far"
    assert b.read("secret.txt") == b"edited, then made unreadable"
    assert b.tree() == a.tree()
    capsys.readouterr()
    await a.cli("status")
    assert "Problems" not in capsys.readouterr().out
