"""The drive-server command line, run as a real subprocess the way the README runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ENV = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}


def drive_server(*args: str, stdin: str | None = None, cwd: Path | None = None,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driveserver", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**ENV, **(env or {})})


class Serve:
    """``drive-server serve`` in the background; the URL is read from its own log line."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driveserver", "serve", "--port", "0", *args],
            stderr=subprocess.PIPE, text=True, cwd=cwd, env=ENV)
        self.log: list[str] = []
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                # Keep draining the log so the server never blocks on a full pipe.
                self._drain = threading.Thread(target=self._read_rest, daemon=True)
                self._drain.start()
                return
        self.stop()
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return resp.status, resp.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        if getattr(self, "_drain", None) is not None:
            self._drain.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


def test_serve_on_embedded_defaults_creates_data_dir_and_answers_healthz(tmp_path: Path) -> None:
    srv = Serve(cwd=tmp_path)  # no --data-dir, no config: ./drive-data
    try:
        assert srv.get("/healthz") == (200, '{"status": "ok"}')
    finally:
        assert srv.stop() == 0
    data = tmp_path / "drive-data"
    assert (data / "meta.sqlite3").exists()
    assert (data.stat().st_mode & 0o777) == 0o700
    key = data / "secrets" / "session.key"
    assert (key.stat().st_mode & 0o777) == 0o600
    mode = (data / "meta.sqlite3").stat().st_mode
    assert mode & 0o077 == 0 or (data.stat().st_mode & 0o077) == 0
    # Read with Python's own sqlite3, not a sqlite3 command that only some machines have (a
    # check that runs only where a tool happens to be installed is no check on the others).
    with contextlib.closing(sqlite3.connect(data / "meta.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_user_add_and_list_on_a_served_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "d"
    srv = Serve("--data-dir", str(data))
    try:
        r = drive_server("user", "add", "zoe@example.com", "--password-stdin",
                         "--data-dir", str(data), stdin="a long password\n")
        assert r.returncode == 0, r.stderr
        assert "created user zoe@example.com" in r.stdout
        r = drive_server("user", "list", "--data-dir", str(data))
        assert r.returncode == 0 and "zoe@example.com" in r.stdout
        # The running server sees the new user at once: log in over HTTP.
        import json
        req = urllib.request.Request(
            srv.url + "/api/auth/login", method="POST",
            data=json.dumps({"email": "zoe@example.com", "password": "a long password"}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200 and "token" in json.loads(resp.read())
        r = drive_server("user", "quota", "zoe@example.com", "2G", "--data-dir", str(data))
        assert r.returncode == 0, r.stderr
        assert f"/{2 * 1024**3} bytes" in drive_server("user", "list", "--data-dir",
                                                        str(data)).stdout
    finally:
        srv.stop()


def test_user_add_refuses_duplicates_and_short_passwords(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    assert drive_server("user", "add", "a@example.com", "--password-stdin", "--data-dir", data,
                        stdin="password 123\n").returncode == 0
    r = drive_server("user", "add", "A@example.com", "--password-stdin", "--data-dir", data,
                     stdin="password 123\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = drive_server("user", "add", "b@example.com", "--password-stdin", "--data-dir", data,
                     stdin="short\n")
    assert r.returncode != 0 and "at least" in r.stderr


@pytest.mark.parametrize("args, env, fragment", [
    (["serve", "--port", "99999"], {}, "server.port (command line)"),
    (["user", "list"], {"DRIVE_STORAGE_BACKEND": "nfs"}, "storage.backend (env"),
])
def test_bad_config_is_one_clear_line_and_no_start(tmp_path: Path, args, env, fragment) -> None:
    r = drive_server(*args, "--data-dir", str(tmp_path / "d"), env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert not (tmp_path / "d").exists()


def test_check_and_gc_on_a_fresh_data_dir(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    r = drive_server("check", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert "database ok" in r.stdout and "block storage ok (local)" in r.stdout
    assert (tmp_path / "d" / "secrets" / "master.key").stat().st_mode & 0o777 == 0o600
    r = drive_server("gc", "--data-dir", data)
    assert r.returncode == 0 and "gc: 0 unreferenced" in r.stdout, r.stderr


def test_check_reports_items_in_the_wrong_workspace(tmp_path: Path) -> None:
    """An item whose workspace disagrees with its folder (what finding 6 of issue 12 left) is
    named by ``drive-server check``, which then fails."""
    data = str(tmp_path / "d")
    assert drive_server("user", "add", "a@example.com", "--password-stdin", "--data-dir", data,
                        stdin="long enough password\n").returncode == 0
    with sqlite3.connect(tmp_path / "d" / "meta.sqlite3") as db:
        root = db.execute("SELECT id, workspace_id FROM files WHERE parent_id IS NULL").fetchone()
        db.execute("INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
                   " version, size, created_at, modified_at)"
                   " VALUES ('f_stray', 'w_elsewhere', ?, 'stray', 'stray', 1, 1, 0, 0, 0)",
                   (root[0],))
    r = drive_server("check", "--data-dir", data)
    assert r.returncode != 0 and "f_stray ('stray') is in workspace w_elsewhere" in r.stderr, r


def test_check_reports_unreachable_s3_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = drive_server("check", "--data-dir", str(tmp_path / "d"), env={
        "DRIVE_STORAGE_BACKEND": "s3", "DRIVE_STORAGE_S3_BUCKET": "b",
        "DRIVE_STORAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "DRIVE_STORAGE_S3_ACCESS_KEY_ID": "x", "DRIVE_STORAGE_S3_SECRET_ACCESS_KEY": "y",
        # Two tries, not five: the message is the same, without 15 s of back-off.
        "DRIVE_STORAGE_S3_MAX_ATTEMPTS": "2"})
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("drive-server: ") and "connect" in last, r.stderr
    assert "after 2 attempts" in last, last  # the setting reached the store
