"""When inotify watches run out, the daemon says exactly what to set and falls back to periodic
rescans instead of silently missing changes in the folders it could not watch.

The limit is real: the daemon runs in a user namespace of its own whose inotify watch limit
(``/proc/sys/user/max_inotify_watches``, settable there) is a handful, so watchdog runs out
part-way through the tree, exactly as it would against a low ``fs.inotify.max_user_watches``,
and nothing else on the machine is affected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import RunningServer, wait_for
from tests.needs import need
from tests.sync_helpers import make_devices

pytestmark = pytest.mark.sqlite_only(
    "the daemon's inotify limit; the server's database plays no part in it")

WATCH_LIMIT = 4


def _namespace_wrapper() -> tuple[tuple[str, ...] | None, str]:
    """A command prefix that runs a program with at most WATCH_LIMIT inotify watches, or None
    and what stands in the way (and how to remove it) where user namespaces are not available."""
    if shutil.which("unshare") is None:
        return None, "needs the `unshare` command: install util-linux"
    prefix = ("unshare", "--user", "--map-root-user", "sh", "-c",
              f'echo {WATCH_LIMIT} > /proc/sys/user/max_inotify_watches && exec "$0" "$@"')
    probe = subprocess.run([*prefix, "cat", "/proc/sys/user/max_inotify_watches"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode == 0 and probe.stdout.strip() == str(WATCH_LIMIT):
        return prefix, ""
    said = (probe.stderr.strip() or probe.stdout.strip() or "no output")[-300:]
    return None, (
        f"needs a user namespace with its own inotify watch limit, and `{' '.join(prefix)} cat "
        f"/proc/sys/user/max_inotify_watches` exited {probe.returncode} ({said}): allow user "
        "namespaces (sysctl user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 "
        "or kernel.apparmor_restrict_unprivileged_userns=0 where the kernel has them; in a "
        "container, `docker run --security-opt seccomp=unconfined`)")


async def test_exhausted_watches_are_reported_and_rescanned(tmp_path: Path,
                                                            srv: RunningServer) -> None:
    wrapper, why = _namespace_wrapper()
    need(wrapper is not None, why)
    assert wrapper is not None
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    for i in range(12):
        a.write(f"projects/p{i}/readme.txt", f"project {i}")
    await a.sync()
    await b.sync()
    b.start_daemon(tmp_path / "b.log", wrapper)
    try:
        status_file = b.config_dir / "status.json"

        def warned() -> bool:
            try:
                return "max_user_watches" in json.loads(status_file.read_text()).get(
                    "warning", "")
            except (OSError, ValueError):
                return False

        await wait_for(warned, within=30, what="the daemon to report exhausted watches")
        warning = json.loads(status_file.read_text())["warning"]
        assert "run `sudo sysctl fs.inotify.max_user_watches=" in warning
        assert "folder(s) are not watched" in warning and "every 5 seconds" in warning
        # A change deep in a folder inotify does not watch still reaches the server.
        b.write("projects/p11/notes.txt", "written where no watch could see it")

        async def uploaded() -> bool:
            return await a.cli("run", "--once") == 0 and \
                (a.folder / "projects/p11/notes.txt").exists()

        await wait_for(uploaded, within=30, interval=0.5, what="the rescan to upload the file")
        assert a.read("projects/p11/notes.txt") == b"written where no watch could see it"
    finally:
        b.stop_daemon()
