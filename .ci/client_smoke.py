"""The sync client on its own install: a real two-way sync with a `drive-sync` installed alone.

Usage: ``.venv/bin/python .ci/client_smoke.py CLIENT_BIN``, where ``CLIENT_BIN`` is the ``bin``
folder of a fresh virtualenv that holds only the base install (``pip install .``, no extras),
and the interpreter running this script is one with the server installed (the main venv).

It checks that the client's install holds none of the server's dependencies and that
``drive-sync`` loads no server module, then starts ``drive-server`` from the main venv on
127.0.0.1 with a free port and a temporary data dir, and syncs a small folder (small files in a
batch, an empty one, a two-block file, a subfolder, an executable) from one device to a second
and an edit back, comparing the folders byte for byte. Everything it starts is stopped by PID,
and its temporary folder removed, whatever happens. Standard library only, so it needs nothing
from either venv but their commands.
"""

from __future__ import annotations

import filecmp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_DEPENDENCIES = ("aiosqlite", "aiobotocore", "botocore", "cryptography", "itsdangerous",
                       "prometheus_client", "confusable_homoglyphs", "PIL", "stream_zip")
EMAIL, PASSWORD = "smoke@example.com", "correct horse battery"
STEP_SECONDS = 120  # a generous bound for one command on a busy CI machine


def run(*cmd: str | Path, stdin: str | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True,
                          timeout=STEP_SECONDS, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{done.stdout}{done.stderr}")
    return done.stdout


def check_client_install(client_bin: Path) -> None:
    """The base install: none of the server's libraries, and drive-sync loads no server code."""
    probe = ("import importlib.util, sys\n"
             f"deps = {SERVER_DEPENDENCIES!r}\n"
             "found = [d for d in deps if importlib.util.find_spec(d) is not None]\n"
             "import syncclient.cli, syncclient.daemon\n"
             "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'driveserver', *deps})\n"
             "print(found, loaded)\n"
             "sys.exit(1 if found or loaded else 0)\n")
    run(client_bin / "python", "-c", probe)
    run(client_bin / "drive-sync", "--help")
    # drive-server is installed too (one package), but without its libraries it says so.
    with tempfile.TemporaryDirectory() as data:
        done = subprocess.run([str(client_bin / "drive-server"), "serve", "--port", "0",
                               "--data-dir", data], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "pip install '.[server]'" in done.stderr, done


def start_server(server_bin: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    run(server_bin / "drive-server", "user", "add", EMAIL, "--password-stdin",
        "--data-dir", data, stdin=PASSWORD + "\n")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(server_bin / "drive-server"), "serve", "--data-dir",
                                 str(data), "--host", "127.0.0.1", "--port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=ENV)
    deadline = time.monotonic() + STEP_SECONDS
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"drive-server exited ({proc.returncode}):\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"drive-server did not start:\n{log.read_text()}")


def fill(folder: Path) -> None:
    folder.mkdir()
    for i in range(20):
        (folder / f"note-{i}.txt").write_text(f"note {i}\n" * (i + 1))
    (folder / "empty").write_bytes(b"")
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "sub" / "deeper" / "two-blocks.bin").write_bytes(os.urandom(4 * 1024 * 1024 + 5))
    script = folder / "sub" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)


def same_trees(a: Path, b: Path) -> list[str]:
    """Paths whose presence, kind, bytes or exec bit differ (the sync's own .drive-sync aside)."""
    def tree(root: Path) -> dict[str, tuple[bool, bool]]:
        return {p.relative_to(root).as_posix(): (p.is_dir(), os.access(p, os.X_OK))
                for p in root.rglob("*") if ".drive-sync" not in p.relative_to(root).parts}
    ta, tb = tree(a), tree(b)
    differ = sorted(set(ta) ^ set(tb))
    for rel in sorted(set(ta) & set(tb)):
        if ta[rel] != tb[rel] or (not ta[rel][0] and
                                  not filecmp.cmp(a / rel, b / rel, shallow=False)):
            differ.append(rel)
    return differ


def main() -> None:
    client_bin = Path(sys.argv[1]).absolute()
    server_bin = Path(sys.executable).parent  # the main venv's bin, not resolved (a symlink)
    check_client_install(client_bin)
    with tempfile.TemporaryDirectory(prefix="drive-client-smoke-") as tmp:
        work = Path(tmp)
        proc, url = start_server(server_bin, work / "drive-data", work / "server.log")
        try:
            sync = client_bin / "drive-sync"
            fill(work / "Laptop")
            for device, folder in (("laptop", "Laptop"), ("desktop", "Desktop")):
                run(sync, "init", "--config-dir", work / f"{device}-config", "--server", url,
                    "--email", EMAIL, "--password-stdin", "--folder", work / folder,
                    "--device-name", device, stdin=PASSWORD + "\n")
            run(sync, "run", "--once", "--config-dir", work / "laptop-config")
            run(sync, "run", "--once", "--config-dir", work / "desktop-config")
            differ = same_trees(work / "Laptop", work / "Desktop")
            if differ:
                raise SystemExit(f"laptop -> desktop: these differ: {differ}")
            (work / "Desktop" / "note-3.txt").write_text("edited on the desktop\n")
            (work / "Desktop" / "note-4.txt").unlink()
            run(sync, "run", "--once", "--config-dir", work / "desktop-config")
            run(sync, "run", "--once", "--config-dir", work / "laptop-config")
            differ = same_trees(work / "Laptop", work / "Desktop")
            if differ:
                raise SystemExit(f"desktop -> laptop: these differ: {differ}")
            listed = run(sync, "ls", "--config-dir", work / "laptop-config", "/")
            if "note-3.txt" not in listed or "note-4.txt" in listed:
                raise SystemExit(f"the server's listing is not the synced tree:\n{listed}")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"client-only install synced against {url}: ok")


ENV = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}

if __name__ == "__main__":
    main()
