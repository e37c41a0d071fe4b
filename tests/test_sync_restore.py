"""A restore run from a device reaches that device's own folder (its feed used to leave it out
as an echo of its own change), and a later edit there goes up normally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import RunningServer, wait_for
from tests.sync_helpers import Device, make_devices, with_engine


async def file_id_of(device: Device, path: str) -> str:
    async def read(engine: Any) -> str:
        entry = engine.state.synced_entries()[path]
        return entry.file_id
    return await with_engine(device, read)


async def test_a_version_restored_by_this_device_reaches_its_folder(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("hello.txt", "first\n")
    await a.sync()
    a.write("hello.txt", "second, longer\n")
    await a.sync()
    assert await a.cli("restore", "hello.txt", "--version", "1") == 0
    await a.sync()
    assert a.read("hello.txt") == b"first\n"
    await b.sync()
    assert b.read("hello.txt") == b"first\n"
    # An edit after the restore goes up on the restored version: no 409 loop, no conflict.
    a.write("hello.txt", "third\n")
    await a.sync()
    await b.sync()
    assert b.read("hello.txt") == b"third\n"
    assert not [p for d in (a, b) for p in d.tree() if "conflicted" in p]


async def test_an_item_restored_from_the_trash_by_this_device_comes_back_here(
        tmp_path: Path, srv: RunningServer) -> None:
    a, _ = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    a.write("docs/tax.pdf", "the return")
    await a.sync()
    file_id = await file_id_of(a, "/docs")
    (a.folder / "docs/tax.pdf").unlink()
    (a.folder / "docs").rmdir()
    await a.sync()

    async def restore(engine: Any) -> None:
        await engine.remote.call("POST", f"/api/trash/{file_id}/restore")
    await with_engine(a, restore)
    await a.sync()
    assert a.read("docs/tax.pdf") == b"the return"


async def test_a_running_daemon_hears_of_its_own_restore_at_once(
        tmp_path: Path, srv: RunningServer) -> None:
    """The restore wakes the daemon's long poll (it is not taken for its own echo), so the
    folder has the old content within seconds, not at the next periodic rescan."""
    a, _ = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    a.write("hello.txt", "first\n")
    await a.sync()
    a.write("hello.txt", "second\n")
    await a.sync()
    a.start_daemon(tmp_path / "a.log")
    try:
        # The daemon is up and polling once its status says so.
        status = a.config_dir / "status.json"
        await wait_for(lambda: status.exists() and '"idle"' in status.read_text(), within=30,
                       what="the daemon to be idle")
        assert await a.cli("restore", "hello.txt", "--version", "1") == 0
        await wait_for(lambda: a.read("hello.txt") == b"first\n", within=10,
                       what="the restored version in the folder")
    finally:
        a.stop_daemon()
