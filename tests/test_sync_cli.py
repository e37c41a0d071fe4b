"""``drive-sync`` as a user types it: the run lock that ``init``, ``run`` and ``logout`` share,
device names, paths relative to the current directory, undelete from the trash, ``wait``, and
output that stays one item a line (names with control characters, a reader that goes away).

A real server on a real port; the CLI's ``main()`` in-process (``Device.cli``), daemons and the
command whose standard output is closed as subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PASSWORD, RunningServer, wait_for
from tests.sync_helpers import EMAIL, REPO, Device, make_devices


def init_args(d: Device, server: RunningServer, *extra: str) -> list[str]:
    return ["init", "--server", server.url, "--email", EMAIL, "--password-stdin",
            "--folder", str(d.folder), "--device-name", d.name, *extra]


def status_of(d: Device) -> dict:
    try:
        return json.loads((d.config_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


async def start(d: Device, log: Path) -> None:
    """Start the daemon and wait for its first status (written once it holds the lock)."""
    d.start_daemon(log)
    assert d.daemon is not None
    pid = d.daemon.pid
    await wait_for(lambda: status_of(d).get("pid") == pid, within=30,
                   what=f"{d.name}'s daemon to start")


# --- finding 5: one lock per config dir -------------------------------------------------------

async def test_init_over_an_existing_config_needs_force(two: tuple[Device, Device],
                                                        srv: RunningServer, capsys) -> None:
    a, _ = two
    a.write("kept.txt", "synced")
    await a.sync()
    config = (a.config_dir / "config.json").read_text()
    capsys.readouterr()
    elsewhere = Device(a.name, a.config_dir, a.folder.parent / "Elsewhere")
    assert await elsewhere.cli(*init_args(elsewhere, srv), stdin=PASSWORD + "\n") == 2
    assert "--force" in capsys.readouterr().err
    assert (a.config_dir / "config.json").read_text() == config
    # The same device logging in again with --force keeps its synced tree.
    assert await a.cli(*init_args(a, srv, "--force"), stdin=PASSWORD + "\n") == 0
    await a.sync()
    assert await a.cli("status") == 0
    assert "Synced:  1 file(s)" in capsys.readouterr().out


async def test_init_and_logout_leave_a_running_daemon_alone(
        two: tuple[Device, Device], srv: RunningServer, tmp_path: Path, capsys) -> None:
    a, _ = two
    a.write("kept.txt", "synced")
    await a.sync()
    config = (a.config_dir / "config.json").read_text()
    await start(a, tmp_path / "a.log")
    try:
        assert a.daemon is not None
        pid = a.daemon.pid
        capsys.readouterr()
        elsewhere = Device(a.name, a.config_dir, tmp_path / "Elsewhere")
        assert await elsewhere.cli(*init_args(elsewhere, srv, "--force"),
                                   stdin=PASSWORD + "\n") == 1
        err = capsys.readouterr().err
        assert f"daemon (pid {pid}) is already running" in err and "--force" in err
        assert (a.config_dir / "state.db").exists()
        assert (a.config_dir / "config.json").read_text() == config
        assert not (tmp_path / "Elsewhere").exists()

        assert await a.cli("logout") == 1
        err = capsys.readouterr().err
        assert f"pid {pid}" in err and "stop it first" in err
        assert (a.config_dir / "token").exists()
        assert a.daemon.poll() is None
        # Still logged in and syncing.
        a.write("later.txt", "after the refusals")
        assert await a.cli("wait", "--timeout", "30") == 0
    finally:
        assert a.stop_daemon() == 0
    assert await a.cli("logout") == 0
    assert not (a.config_dir / "token").exists()
    assert "init --force" in capsys.readouterr().out
    assert await a.cli(*init_args(a, srv, "--force"), stdin=PASSWORD + "\n") == 0
    await a.sync()
    assert set(a.tree()) == {"kept.txt", "later.txt"}


# --- finding 8 --------------------------------------------------------------------------------

async def test_a_device_name_the_account_has_is_refused(two: tuple[Device, Device],
                                                        srv: RunningServer, tmp_path: Path,
                                                        capsys) -> None:
    a, _ = two
    twin = Device(a.name, tmp_path / "twin-config", tmp_path / "twin-folder")
    capsys.readouterr()
    assert await twin.cli(*init_args(twin, srv), stdin=PASSWORD + "\n") == 1
    assert "already has a device named 'laptop'" in capsys.readouterr().err
    assert not (twin.config_dir / "config.json").exists()
    # On the wire: refused only when asked for a new device; a plain login still reuses it.
    anon = srv.anonymous()
    body = {"email": EMAIL, "password": PASSWORD, "device_name": "laptop"}
    r = await anon.post("/api/auth/login", {**body, "new_device": True})
    assert r.status == 409 and r.error_code() == "device_name_taken", r
    r = await anon.post("/api/auth/login", {**body, "new_device": True, "device_name": "tablet"})
    assert r.status == 200, r
    r = await anon.post("/api/auth/login", body)
    assert r.status == 200, r
    client = await srv.login(EMAIL)
    names = [d["name"] for d in (await client.get("/api/devices")).body["devices"]]
    assert sorted(names) == ["desktop", "laptop", "tablet"]


async def test_paths_relative_to_the_current_directory(two: tuple[Device, Device],
                                                       tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = two
    a.write("docs/hello.txt", "hi")
    await a.sync()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    local = f"./{a.folder.name}/docs/hello.txt"
    for arg in (local, f"{a.folder.name}/docs/hello.txt", str(a.folder / "docs/hello.txt"),
                "/docs/hello.txt", "docs/hello.txt"):
        assert await a.cli("versions", arg) == 0, arg
        assert "v1" in capsys.readouterr().out
    monkeypatch.chdir(a.folder / "docs")
    for arg in ("hello.txt", "./hello.txt", "../docs/hello.txt"):
        assert await a.cli("versions", arg) == 0, arg
    assert await a.cli("ls", ".") == 0
    assert capsys.readouterr().out.split()[-1] == "hello.txt"
    assert await a.cli("ls", "..") == 0
    assert capsys.readouterr().out.split()[-1] == "docs"
    monkeypatch.chdir(tmp_path)
    assert await a.cli("versions", "./not-the-folder/hello.txt") == 1
    assert "not inside the sync folder" in capsys.readouterr().err


async def test_trash_lists_and_restore_undeletes(two: tuple[Device, Device], capsys) -> None:
    a, b = two
    a.write("doc.txt", "precious")
    a.write("dir/inner.txt", "also")
    await a.sync()
    await b.sync()
    (a.folder / "doc.txt").unlink()
    (a.folder / "dir/inner.txt").unlink()
    (a.folder / "dir").rmdir()
    await a.sync()
    await b.sync()
    assert b.tree() == {}
    capsys.readouterr()
    assert await a.cli("trash") == 0
    listed = capsys.readouterr()
    lines = listed.out.splitlines()
    assert sorted(line.split()[-1] for line in lines) == ["/dir/", "/doc.txt"]
    dir_id = next(line.split()[4] for line in lines if line.endswith("/dir/"))
    assert "drive-sync restore PATH" in listed.err

    assert await a.cli("restore", "doc.txt") == 0
    assert "from the trash" in capsys.readouterr().out
    assert await a.cli("restore", "/dir/inner.txt") == 1
    assert "restore that with `drive-sync restore /dir`" in capsys.readouterr().err
    assert await a.cli("restore", "--trash-id", dir_id) == 0
    assert await a.cli("restore", "doc.txt") == 1
    assert "is not deleted" in capsys.readouterr().err
    assert await a.cli("restore", "nothing.txt") == 1
    assert "neither on the server nor in the trash" in capsys.readouterr().err
    await b.sync()
    assert b.tree() == {"doc.txt": b"precious", "dir": None, "dir/inner.txt": b"also"}


async def test_resume_says_what_it_does(two: tuple[Device, Device], capsys) -> None:
    a, _ = two
    for i in range(12):
        a.write(f"f{i}.txt", str(i))
    await a.sync()
    for i in range(8):
        (a.folder / f"f{i}.txt").unlink()
    await a.sync(expect=1)
    capsys.readouterr()
    assert await a.cli("resume") == 0
    out = capsys.readouterr().out
    assert "8 of 12 synced files were deleted" in out
    assert "run `drive-sync resume`" not in out and "deleted on the server too" in out


async def test_names_with_control_characters_print_one_item_a_line(
        two: tuple[Device, Device], capsys) -> None:
    a, _ = two
    a.write("two\nlines.txt", "the server refuses this name")
    content = "a line separator the server takes"
    a.write("page\u2028break.txt", content)
    await a.sync(expect=1)
    capsys.readouterr()
    assert await a.cli("status") == 0
    out = capsys.readouterr().out
    assert '"/two\\nlines.txt"' in out
    assert not [line for line in out.splitlines() if line.startswith("lines.txt")]
    assert await a.cli("ls") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"- {len(content):>12} v1    \"page\\u2028break.txt\""]
    assert await a.cli("versions", "page\u2028break.txt") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    (a.folder / "page\u2028break.txt").unlink()
    await a.sync(expect=1)
    capsys.readouterr()
    assert await a.cli("trash") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith('"/page\\u2028break.txt"')


@pytest.mark.parametrize("command", ["status", "ls"])
async def test_a_closed_standard_output_ends_quietly(two: tuple[Device, Device],
                                                     command: str) -> None:
    """As in ``drive-sync status | head -1``: the reader is gone before the output is written
    (its end of the pipe is closed before the command starts, so this is certain)."""
    a, _ = two
    a.write("x.txt", "x")
    await a.sync()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        # In a thread: the server it talks to runs in this test's event loop.
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "syncclient", *a.argv(command)], stdout=write_end,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
            timeout=60)
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == 141


async def test_status_says_why_it_is_not_in_sync_and_wait_gives_up(
        two: tuple[Device, Device], tmp_path: Path, capsys) -> None:
    a, _ = two
    a.write("fine.txt", "ok")
    (a.folder / os.fsdecode(b"bad\xff.txt")).write_text("a name no server can hold")
    await start(a, tmp_path / "a.log")
    try:
        await wait_for(lambda: status_of(a).get("state") == "error", within=30,
                       what="the daemon to report the name")
        capsys.readouterr()
        assert await a.cli("status") == 0
        out = capsys.readouterr().out
        state = next(line for line in out.splitlines() if line.startswith("State:"))
        last = [line for line in out.splitlines() if line.startswith("Last error:")]
        assert state != "State:   error" or (last and last[0].strip() != "Last error:"), out
        assert "bad\\xff.txt" in out
        assert await a.cli("wait", "--timeout", "1") == 1
        err = capsys.readouterr().err
        assert "not in sync after 1 s" in err and "bad\\xff.txt" in err
    finally:
        assert a.stop_daemon() == 0


async def test_wait_returns_once_everything_is_synced(two: tuple[Device, Device],
                                                      tmp_path: Path, capsys) -> None:
    """The walkthrough's race, without sleeping: each save is followed at once by ``wait`` on
    both devices, and what was saved is then there, and every save is a version."""
    a, b = two
    capsys.readouterr()
    assert await a.cli("wait", "--timeout", "1") == 1
    assert "no drive-sync daemon is running" in capsys.readouterr().err
    await start(a, tmp_path / "a.log")
    await start(b, tmp_path / "b.log")
    try:
        for i in range(3):
            a.write("hello.txt", f"version {i + 1}\n" + "x" * i)
            assert await a.cli("wait", "--timeout", "60") == 0
            assert await b.cli("wait", "--timeout", "60") == 0
            assert b.read("hello.txt") == a.read("hello.txt")
        b.write("from-b/reply.txt", "back")
        assert await b.cli("wait", "--timeout", "60") == 0
        assert await a.cli("wait", "--timeout", "60") == 0
        assert a.read("from-b/reply.txt") == b"back"
        capsys.readouterr()
        assert await a.cli("versions", "hello.txt") == 0
        assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
            "v3", "v2", "v1"]
    finally:
        assert a.stop_daemon() == 0
        assert b.stop_daemon() == 0


async def test_two_config_dirs_on_one_folder_never_sync_at_once(
        tmp_path: Path, srv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A copied config dir names the same folder: while one daemon syncs it, the other is
    refused (each config dir has its own lock; the folder's marker holds one too)."""
    import shutil

    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    await a.sync()
    copy = Device("a-copy", tmp_path / "a-copy-config", a.folder)
    shutil.copytree(a.config_dir, copy.config_dir)
    a.start_daemon(tmp_path / "a.log")
    try:
        def daemon_up() -> bool:
            try:
                status = json.loads((a.config_dir / "status.json").read_text())
            except (OSError, ValueError):
                return False
            assert a.daemon is not None
            return status.get("pid") == a.daemon.pid and status.get("state") == "idle"
        await wait_for(daemon_up, within=30, what="the daemon to be up")
        capsys.readouterr()
        assert await copy.cli("run", "--once") == 1
        assert "one sync at a time per folder" in capsys.readouterr().err
    finally:
        assert a.stop_daemon() == 0
    assert await copy.cli("run", "--once") == 0  # once it stopped, the copy may sync


async def test_versions_and_restore_of_shared_with_me_say_it_is_no_file(
        two: tuple[Device, Device], srv: RunningServer, tmp_path: Path, capsys) -> None:
    """The virtual ``/Shared with me`` has no file id: ``versions`` and ``restore --version``
    of it end with a message that says what it is, rather than asking the server about the id
    ``None`` (whose "not found" told the user nothing)."""
    a, _ = two
    a.write("Proj/plan.txt", "v1")
    await a.sync()
    await srv.register("bob@example.com")
    assert await a.cli("share", "Proj", "--with", "bob@example.com") == 0
    [bob_pc] = make_devices(tmp_path, "bob-pc")
    await bob_pc.init(srv, email="bob@example.com")
    capsys.readouterr()
    for args in (("versions", "/Shared with me"),
                 ("restore", "/Shared with me", "--version", "1")):
        assert await bob_pc.cli(*args) == 1, args
        err = capsys.readouterr().err
        assert "only lists the folders shared with you" in err, (args, err)
    # What is inside it is a real item, with versions.
    assert await bob_pc.cli("versions", "/Shared with me/Proj/plan.txt") == 0
    assert "v1" in capsys.readouterr().out
