"""End-to-end: a real server on a real port, real ``drive-sync`` clients through their CLI.

Each device has its own ``--config-dir`` and folder. ``run --once`` drives them step by step;
the daemon test runs ``python -m syncclient run`` as subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from driveproto.blocks import BLOCK_SIZE, content_checksum
from driveproto.chunking import chunk_lengths
from driveserver import appkeys
from driveserver.meta.versions import content_checksum as server_checksum
from syncclient.config import STATE_FILE
from syncclient.engine import Engine
from tests.helpers import METRICS_AUTH, RunningServer, start_server, wait_for
from tests.sync_helpers import (
    EMAIL,
    Device,
    act_after_planning,
    converge,
    make_devices,
    metric,
    restart_server,
    with_engine,
)


def conflicted(d: Device) -> list[str]:
    return sorted(p for p in d.tree() if "conflicted copy" in p)


def test_checksum_matches_server() -> None:
    hashes = ["00" * 32, "ab" * 32]
    assert content_checksum(hashes) == server_checksum(hashes)
    assert content_checksum([]) == server_checksum([])


async def test_init_stores_token_privately(two: tuple[Device, Device]) -> None:
    a, _ = two
    token = a.config_dir / "token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.read_text() not in (a.config_dir / "config.json").read_text()
    assert (a.folder / ".drive-sync").is_dir()


async def test_create_edit_move_delete_propagate_both_ways(two: tuple[Device, Device]) -> None:
    a, b = two
    a.write("notes.txt", "v1")
    a.write("docs/deep/er/file.md", "# deep")
    a.write("empty.txt", b"")
    (a.folder / "empty-folder").mkdir()
    await converge(a, b)
    assert b.tree() == a.tree()
    assert b.read("docs/deep/er/file.md") == b"# deep"

    b.write("notes.txt", "v2 from desktop")
    (b.folder / "docs").rename(b.folder / "papers")
    b.write("papers/new.txt", "new")
    await converge(b, a)
    assert a.tree() == b.tree()
    assert a.read("notes.txt") == b"v2 from desktop"
    assert not (a.folder / "docs").exists()

    (a.folder / "notes.txt").rename(a.folder / "renamed.txt")
    (a.folder / "empty.txt").unlink()
    for p in sorted((a.folder / "papers").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (a.folder / "papers").rmdir()
    await converge(a, b)
    assert b.tree() == a.tree()
    assert set(b.tree()) == {"renamed.txt", "empty-folder"}
    assert conflicted(a) == conflicted(b) == []


async def test_local_rename_is_a_server_move(two: tuple[Device, Device], srv: RunningServer
                                             ) -> None:
    a, b = two
    a.write("big.bin", os.urandom(300_000))
    await converge(a, b)
    before = await metric(srv, "drive_block_bytes_total", "in")
    (a.folder / "big.bin").rename(a.folder / "moved.bin")
    await converge(a, b)
    assert await metric(srv, "drive_block_bytes_total", "in") == before
    assert b.read("moved.bin") == a.read("moved.bin")
    trash = await (await srv.login(EMAIL)).get("/api/trash")
    assert trash.body["entries"] == []  # a move, not delete + upload


async def test_one_byte_edit_moves_one_block(two: tuple[Device, Device], srv: RunningServer
                                             ) -> None:
    a, b = two
    data = bytearray(os.urandom(20 * 1024 * 1024))
    a.write("video.raw", bytes(data))
    await converge(a, b)
    assert b.read("video.raw") == bytes(data)
    in_bytes = await metric(srv, "drive_block_bytes_total", "in")
    in_blocks = await metric(srv, "drive_blocks_total", "in")
    out_blocks = await metric(srv, "drive_blocks_total", "out")
    out_bytes = await metric(srv, "drive_block_bytes_total", "out")
    data[10 * 1024 * 1024 + 7] ^= 0xFF
    a.write("video.raw", bytes(data))
    await a.sync()
    await b.sync()
    assert b.read("video.raw") == bytes(data)
    # One block moves each way: the content-defined block holding the changed byte.
    edited, at = 10 * 1024 * 1024 + 7, 0
    for size in chunk_lengths(bytes(data)):
        if at <= edited < at + size:
            break
        at += size
    assert size <= BLOCK_SIZE
    assert await metric(srv, "drive_blocks_total", "in") - in_blocks == 1
    assert await metric(srv, "drive_block_bytes_total", "in") - in_bytes == size
    assert await metric(srv, "drive_blocks_total", "out") - out_blocks == 1
    assert await metric(srv, "drive_block_bytes_total", "out") - out_bytes == size


async def test_same_file_on_two_devices_uploaded_once(two: tuple[Device, Device],
                                                      srv: RunningServer) -> None:
    a, b = two
    payload = os.urandom(5 * 1024 * 1024)
    a.write("shared.iso", payload)
    b.write("shared.iso", payload)          # same path, same bytes
    b.write("copy-of-shared.iso", payload)  # same bytes under another name
    await a.sync()
    blocks_in = await metric(srv, "drive_blocks_total", "in")
    await b.sync()
    await a.sync()
    assert await metric(srv, "drive_blocks_total", "in") == blocks_in
    assert a.tree() == b.tree()
    assert conflicted(a) == []


async def test_concurrent_edits_give_one_conflicted_copy(two: tuple[Device, Device]) -> None:
    a, b = two
    a.write("report.txt", "base")
    await converge(a, b)
    a.write("report.txt", "laptop's words")
    b.write("report.txt", "desktop's words")
    await a.sync()
    await b.sync()
    await a.sync()
    assert a.tree() == b.tree()
    copies = conflicted(b)
    assert len(copies) == 1
    assert copies[0].startswith("report (desktop's conflicted copy ")
    assert copies[0].endswith(").txt")
    assert b.read("report.txt") == b"laptop's words"
    assert b.read(copies[0]) == b"desktop's words"


async def test_edit_vs_delete_keeps_the_edit(two: tuple[Device, Device]) -> None:
    a, b = two
    a.write("keep-local.txt", "v1")
    a.write("keep-remote.txt", "v1")
    await converge(a, b)
    a.write("keep-local.txt", "edited on laptop")
    (b.folder / "keep-local.txt").unlink()
    (a.folder / "keep-remote.txt").unlink()
    b.write("keep-remote.txt", "edited on desktop")
    await b.sync()
    await a.sync()
    await b.sync()
    assert a.tree() == b.tree()
    assert a.read("keep-local.txt") == b"edited on laptop"
    assert a.read("keep-remote.txt") == b"edited on desktop"


async def test_a_folder_deleted_on_the_server_keeps_what_changed_here_meanwhile(
        tmp_path: Path, two: tuple[Device, Device], monkeypatch: pytest.MonkeyPatch) -> None:
    """The deletions reach the desktop, which plans to remove the folders; before it does, the
    user saves a file in one and creates another, touches a file in a second, and swaps a
    subfolder of a third for a symlink to where it moved it. What changed stays (and goes back
    to the server); the touched folder goes, ignored leftovers included; nothing is deleted
    through the symlink."""
    a, b = two
    a.write("Project/plan.txt", "plan")
    a.write("Project/notes.txt", "notes")
    a.write("Project/sub/old.txt", "old")
    a.write("Old/f.txt", "f")
    a.write("Linked/sub/x.txt", "moved away, not deleted")
    await converge(a, b)
    b.write("Old/.DS_Store", "finder junk")  # ignored: never synced, goes with its folder
    os.mkfifo(b.folder / "Old" / "pipe")  # never synced either (as sockets and devices)
    for name in ("Project", "Old", "Linked"):
        shutil.rmtree(a.folder / name)
    await a.sync()
    archive = tmp_path / "archive"

    def the_user_acts() -> None:
        b.write("Project/notes.txt", "notes, edited just now")
        b.write("Project/sub/new.txt", "new just now")
        os.utime(b.folder / "Old/f.txt", ns=(10**18, 10**18))  # touched, same content
        (b.folder / "Linked/sub").rename(archive)
        (b.folder / "Linked/sub").symlink_to(archive)
    edited = act_after_planning(monkeypatch, the_user_acts)
    await b.sync()
    assert edited
    expected = {"Project": None, "Project/notes.txt": b"notes, edited just now",
                "Project/sub": None, "Project/sub/new.txt": b"new just now"}
    assert b.tree() == expected
    assert (archive / "x.txt").read_bytes() == b"moved away, not deleted"
    await a.sync()
    assert a.tree() == expected


async def test_a_deletion_never_reaches_outside_or_below_what_the_scan_could_see(
        tmp_path: Path, two: tuple[Device, Device], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two deletions from the server meet, here, (1) a folder the scan cannot sync (a name that
    is not UTF-8) created inside one with a thesis in it, and (2) a parent folder moved out of
    the sync folder and replaced by a symlink to its new place. Nothing of either is deleted."""
    a, b = two
    a.write("Mixed/f.txt", "f")
    a.write("P/Q/data.txt", "data")
    a.write("P/keep.txt", "keep")
    await converge(a, b)
    shutil.rmtree(a.folder / "Mixed")
    shutil.rmtree(a.folder / "P" / "Q")
    await a.sync()
    moved = tmp_path / "moved-P"

    def the_user_acts() -> None:
        bad = os.fsdecode(b"Mixed/caf\xe9")  # Latin-1, not UTF-8
        (b.folder / bad).mkdir()
        (b.folder / bad / "thesis.txt").write_text("chapter 1")
        (b.folder / "P").rename(moved)
        (b.folder / "P").symlink_to(moved)
    acted = act_after_planning(monkeypatch, the_user_acts)
    await b.cli("run", "--once")  # not in sync: the name and the symlink are reported
    assert acted
    assert (b.folder / os.fsdecode(b"Mixed/caf\xe9") / "thesis.txt").read_text() == "chapter 1"
    assert (moved / "Q" / "data.txt").read_text() == "data"


async def test_offline_device_converges(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data")
    port = server.port
    try:
        await server.register(EMAIL)
        a, b = make_devices(tmp_path, "laptop", "desktop")
        await a.init(server)
        await b.init(server)
        a.write("a.txt", "1")
        a.write("gone.txt", "x")
        await converge(a, b)
        await server.stop()
        # The server is down: the laptop keeps its local changes and says it is not in sync.
        a.write("a.txt", "edited offline")
        a.write("offline-new.txt", "made offline")
        (a.folder / "gone.txt").unlink()
        await a.sync(expect=1)
        server = await restart_server(tmp_path / "data", port)
        b.write("from-desktop.txt", "meanwhile")
        await b.sync()
        await converge(a, b)
        assert a.tree() == b.tree()
        assert b.read("a.txt") == b"edited offline"
        assert "gone.txt" not in b.tree()
        assert a.read("from-desktop.txt") == b"meanwhile"
    finally:
        await server.stop()


async def test_first_sync_into_non_empty_folder_loses_nothing(two: tuple[Device, Device],
                                                              tmp_path: Path,
                                                              srv: RunningServer) -> None:
    a, _ = two
    a.write("same.txt", "same")
    a.write("differs.txt", "server's")
    a.write("only-server.txt", "s")
    await a.sync()
    c = Device("old-pc", tmp_path / "c-config", tmp_path / "c-folder")
    c.write("same.txt", "same")
    c.write("differs.txt", "old pc's")
    c.write("only-local/x.txt", "local")
    await c.init(srv)
    await c.sync()
    await a.sync()
    tree = c.tree()
    assert tree == a.tree()
    assert tree["differs.txt"] == b"server's"
    copies = conflicted(c)
    assert len(copies) == 1 and tree[copies[0]] == b"old pc's"
    assert tree["only-local/x.txt"] == b"local"
    assert tree["only-server.txt"] == b"s"


async def test_missing_marker_stops_instead_of_deleting(two: tuple[Device, Device],
                                                        srv: RunningServer) -> None:
    a, b = two
    a.write("precious.txt", "data")
    await converge(a, b)
    (a.folder / "precious.txt").unlink()
    shutil.rmtree(a.folder / ".drive-sync")  # as if the disk were unmounted
    await a.sync(expect=1)
    await b.sync()
    assert b.read("precious.txt") == b"data"


async def test_mass_deletion_pauses_until_resume(two: tuple[Device, Device], capsys) -> None:
    a, b = two
    for i in range(12):
        a.write(f"f{i}.txt", str(i))
    await converge(a, b)
    for i in range(8):
        (a.folder / f"f{i}.txt").unlink()
    await a.sync(expect=1)
    await b.sync()
    assert len(b.tree()) == 12
    capsys.readouterr()
    assert await a.cli("status") == 0
    assert "paused" in capsys.readouterr().out.lower()
    assert await a.cli("resume") == 0
    await a.sync()
    await b.sync()
    assert len(b.tree()) == 4


async def test_dry_run_prints_plan_and_changes_nothing(two: tuple[Device, Device], capsys
                                                       ) -> None:
    a, b = two
    a.write("x.txt", "x")
    capsys.readouterr()
    assert await a.cli("run", "--once", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "upload" in out and "/x.txt" in out and "new in the folder" in out
    await b.sync()
    assert "x.txt" not in b.tree()


async def test_ignored_and_symlinks_are_not_synced(two: tuple[Device, Device]) -> None:
    a, b = two
    a.write("~$draft.docx", "lock")
    a.write(".~lock.x#", "lock")
    a.write("edit.swp", "swap")
    a.write("part.tmp", "partial")
    a.write(".DS_Store", "mac")
    a.write(".drivesyncignore", "build\n*.log\n")
    a.write("build/out.o", "obj")
    a.write("debug.log", "log")
    a.write("real.txt", "real")
    os.symlink("/etc/hostname", a.folder / "link")
    await converge(a, b)
    assert set(b.tree()) == {"real.txt", ".drivesyncignore"}


async def test_cli_versions_restore_trash_ls_logout(two: tuple[Device, Device], capsys) -> None:
    a, b = two
    a.write("doc.txt", "one")
    await a.sync()
    a.write("doc.txt", "two")
    await a.sync()
    a.write("bin.txt", "x")
    await a.sync()
    (a.folder / "bin.txt").unlink()
    await a.sync()
    capsys.readouterr()
    assert await a.cli("versions", "doc.txt") == 0
    out = capsys.readouterr().out
    assert "v1" in out and "v2" in out and "laptop" in out
    assert await a.cli("restore", "/doc.txt", "--version", "1") == 0
    await b.sync()
    assert b.read("doc.txt") == b"one"
    assert await a.cli("ls", "/") == 0
    assert "doc.txt" in capsys.readouterr().out
    assert await a.cli("trash") == 0
    assert "/bin.txt" in capsys.readouterr().out
    assert await a.cli("logout") == 0
    assert not (a.config_dir / "token").exists()
    assert await a.cli("ls") == 2


async def test_daemons_propagate_both_ways(two: tuple[Device, Device], tmp_path: Path) -> None:
    a, b = two
    a.start_daemon(tmp_path / "a.log")
    b.start_daemon(tmp_path / "b.log")
    try:
        a.write("hello.txt", "from the laptop")
        await wait_for(lambda: (b.folder / "hello.txt").exists()
                       and b.read("hello.txt") == b"from the laptop", within=30,
                       what="a new file in A to appear in B")
        b.write("sub/reply.txt", "from the desktop")
        await wait_for(lambda: (a.folder / "sub/reply.txt").exists()
                       and a.read("sub/reply.txt") == b"from the desktop", within=30,
                       what="a new file in B to appear in A")
        (a.folder / "hello.txt").unlink()
        await wait_for(lambda: not (b.folder / "hello.txt").exists(), within=30,
                       what="a deletion in A to reach B")
    finally:
        rcs = [d.stop_daemon(signal.SIGTERM) for d in (a, b) if d.daemon]
    assert rcs == [0, 0], (tmp_path / "a.log").read_text()[-2000:]
    status = (a.config_dir / "status.json").read_text()
    assert '"stopped"' in status
    assert time.time() > 0


async def test_race_on_a_new_path_becomes_a_conflict_not_an_overwrite(
        two: tuple[Device, Device]) -> None:
    """B plans an upload of a new file while A creates the same path: B's stale plan meets a
    409 (base version 0), and the next round keeps both contents."""
    a, b = two
    b.write("race.txt", "desktop's")

    async def stale_round(engine: Engine) -> None:
        await engine.pull()
        ops, local = await engine.plan()
        assert [o.kind for o in ops] == ["upload"]
        a.write("race.txt", "laptop's")
        assert await a.cli("run", "--once") == 0
        await engine.execute(ops, local)

    await with_engine(b, stale_round)
    await b.sync()
    await a.sync()
    assert a.tree() == b.tree()
    assert b.read("race.txt") == b"laptop's"
    assert [b.read(p) for p in conflicted(b)] == [b"desktop's"]


class Gate:
    """Wraps an async method of the server: the first ``free`` calls go through, later ones wait
    until :meth:`open`. Holding the server's side of a transfer is what lets a test kill the
    client *while* it is part-way through, instead of hoping the kill beats a fast transfer."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], free: int) -> None:
        self.fn, self.free = fn, free
        self.passed = 0  # calls let through (those past the gate included)
        self.held = 0  # calls waiting at the gate now
        self.active = 0  # calls inside the wrapper, waiting or running
        self.opened = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.active += 1
        try:
            if self.passed >= self.free:
                self.held += 1
                try:
                    await self.opened.wait()
                finally:
                    self.held -= 1
            self.passed += 1
            return await self.fn(*args, **kwargs)
        finally:
            self.active -= 1

    def open(self) -> None:
        self.opened.set()


def kept_receipts(d: Device) -> int:
    """How many block receipts the device's state database holds: blocks the server stored and
    the client recorded, which a restarted upload must not send again."""
    db = sqlite3.connect(f"file:{d.config_dir / STATE_FILE}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM receipts").fetchone()[0]
    finally:
        db.close()


async def test_kill_9_during_upload_and_download_then_converge(
        two: tuple[Device, Device], srv: RunningServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 lands mid-transfer, both ways, and is shown to: the server lets a few blocks
    through and holds the rest, the test kills once the client has recorded those few and is
    stuck on the next. The upload then resumes with only the blocks it had not sent; the
    download leaves a temp file, never a partial file under the real name, and the next run
    completes it and cleans up."""
    a, b = two
    through = 3
    payload = os.urandom(12 * BLOCK_SIZE)
    nblocks = len(chunk_lengths(payload))  # content-defined blocks, about 1.3 MiB each
    pipeline = srv.app[appkeys.PIPELINE]
    stores = Gate(pipeline.store_block, through)
    monkeypatch.setattr(pipeline, "store_block", stores)
    blocks_in = await metric(srv, "drive_blocks_total", "in")
    a.write("big.bin", payload)
    a.start_daemon(tmp_path / "a.log")
    try:
        await wait_for(lambda: stores.held >= 1 and kept_receipts(a) == through, within=60,
                       what=f"{through} blocks stored and recorded, the next held")
        a.stop_daemon(signal.SIGKILL)
        # The kill landed mid-upload (the gate still holds the rest): some blocks stored, not
        # all, nothing committed.
        assert await metric(srv, "drive_blocks_total", "in") == blocks_in + through
        assert "big.bin" not in await (await srv.login(EMAIL)).listdir("/")
        assert kept_receipts(a) == through
    finally:
        stores.open()
    await wait_for(lambda: stores.active == 0, within=30, what="the held stores to end")
    # (The server drops a request whose client is gone; whether or not the held ones ran,
    # ``passed`` is final now, and counts every block the restarted run stores.)
    resumed_from = stores.passed

    a.start_daemon(tmp_path / "a2.log")  # restarted: it converges on its own

    async def uploaded() -> bool:
        return "big.bin" in await (await srv.login(EMAIL)).listdir("/")

    await wait_for(uploaded, within=60, what="the upload to finish after the restart")
    a.stop_daemon()
    # Only what the killed run had not recorded was sent again; the receipts are spent.
    assert stores.passed - resumed_from == nblocks - through
    assert kept_receipts(a) == 0

    reads = Gate(pipeline.get_for_wire, through)
    monkeypatch.setattr(pipeline, "get_for_wire", reads)
    target = b.folder / "big.bin"
    b.start_daemon(tmp_path / "b.log")
    try:
        await wait_for(lambda: reads.held >= 1 and reads.passed == through
                       and bool(list(b.folder.glob(".~drive-sync-*"))), within=60,
                       what=f"{through} blocks served into a temp file, the next held")
        b.stop_daemon(signal.SIGKILL)
        # The kill landed mid-download: a few blocks served, the rest held; a partial temp
        # file, never a partial file under the real name.
        assert reads.passed == through
        assert not target.exists()
        [partial] = b.folder.glob(".~drive-sync-*")
        assert partial.stat().st_size < len(payload)
    finally:
        reads.open()
    await wait_for(lambda: reads.active == 0, within=30, what="the held reads to end")
    await b.sync()
    assert b.read("big.bin") == payload
    assert not list(b.folder.glob(".~drive-sync-*"))  # the killed run's temp file is gone too
    await a.sync()
    assert a.tree() == b.tree()


async def requests_to(server: RunningServer, route: str) -> float:
    r = await server.anonymous().get("/metrics", headers=METRICS_AUTH)
    text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("drive_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_many_small_files_use_the_batch_routes(two: tuple[Device, Device],
                                                     srv: RunningServer) -> None:
    a, b = two
    for i in range(300):
        a.write(f"many/{i % 7}/file{i}.txt", f"small file {i}\n" * (i % 5 + 1))
    single = await requests_to(srv, "/api/files/upload-init")
    await a.sync()
    assert await requests_to(srv, "/api/files/upload-init") == single
    # 100 files a batch (the grant in the URL must stay short); tiny blocks may need two bodies.
    assert await requests_to(srv, "/api/files/upload-init/batch") == 3
    assert 3 <= await requests_to(srv, "/blocks/batch") <= 6
    assert await requests_to(srv, "/api/files/complete/batch") == 3
    # B receives them 100 a request too; a file over the batch limit still comes on its own.
    a.write("many/big.bin", os.urandom(300 * 1024))
    await a.sync()
    await b.sync()
    assert b.tree() == a.tree()
    assert await requests_to(srv, "/api/files/content/batch") == 3
    assert await requests_to(srv, "/api/files/{file_id}/content") == 1


async def test_daemon_goes_offline_and_catches_up(tmp_path: Path) -> None:
    """The server disappears under a running daemon: it reports offline, keeps the local
    change, retries with backoff and uploads it once the server is back."""
    import json

    server = await start_server(tmp_path / "data")
    port = server.port
    a, b = make_devices(tmp_path, "laptop", "desktop")
    try:
        await server.register(EMAIL)
        await a.init(server)
        await b.init(server)
        a.start_daemon(tmp_path / "a.log")
        a.write("before.txt", "online")
        client = await server.login(EMAIL)

        async def on_server(name: str) -> bool:
            return name in await client.listdir("/")

        await wait_for(lambda: on_server("before.txt"), within=30, what="the first upload")
        await server.stop()
        a.write("during.txt", "written while the server was down")

        def offline() -> bool:
            try:
                status = json.loads((a.config_dir / "status.json").read_text())
            except (OSError, ValueError):
                return False
            return status.get("state") == "offline"

        await wait_for(offline, within=30, what="the daemon to say it is offline")
        server = await restart_server(tmp_path / "data", port)
        client = await server.login(EMAIL)
        await wait_for(lambda: on_server("during.txt"), within=40,
                       what="the offline change to be uploaded after the server returned")
        await b.sync()
        assert b.read("during.txt") == b"written while the server was down"
    finally:
        if a.daemon:
            assert a.stop_daemon() == 0
        await server.stop()


async def test_second_run_on_one_config_dir_is_refused(two: tuple[Device, Device],
                                                       tmp_path: Path, capsys) -> None:
    a, _ = two
    a.start_daemon(tmp_path / "a.log")
    try:
        await wait_for(lambda: (a.config_dir / "status.json").exists(), within=20,
                       what="the daemon to start")
        capsys.readouterr()
        assert await a.cli("run", "--once") == 1
        assert "already running" in capsys.readouterr().err
    finally:
        assert a.stop_daemon() == 0
    await a.sync()


async def test_shared_folder_syncs_between_two_accounts(tmp_path: Path, srv: RunningServer
                                                        ) -> None:
    owner, guest = make_devices(tmp_path, "owner-pc", "guest-pc")
    await srv.register("bob@example.com")
    await owner.init(srv)
    await guest.init(srv, email="bob@example.com")
    owner.write("Team/plan.txt", "plan")
    await owner.sync()
    assert await owner.cli("share", "Team", "--with", "bob@example.com") == 0
    await guest.sync()
    assert guest.read("Shared with me/Team/plan.txt") == b"plan"
    guest.write("Shared with me/Team/reply.txt", "from bob")
    await guest.sync()
    await owner.sync()
    assert owner.read("Team/reply.txt") == b"from bob"



async def test_a_server_without_the_batch_download_still_serves_small_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older server has no POST /api/files/content/batch (404): the files come one by one."""
    from aiohttp import web

    from driveserver.api import batch_download_routes

    monkeypatch.setattr(batch_download_routes, "routes", web.RouteTableDef())
    server = await start_server(tmp_path / "data")
    try:
        await server.register(EMAIL)
        a, b = make_devices(tmp_path, "a", "b")
        await a.init(server)
        await b.init(server)
        for i in range(5):
            a.write(f"f{i}.txt", f"file {i}")
        await a.sync()
        await b.sync()
        assert b.tree() == a.tree()
        assert await requests_to(server, "/api/files/{file_id}/content") == 5
    finally:
        await server.stop()


async def test_nfd_names_and_a_deep_tree(two: tuple[Device, Device]) -> None:
    """A name written in NFD (as macOS writes it) is the same name as its NFC form everywhere;
    a tree 100 folders deep syncs both ways."""
    import unicodedata

    a, b = two
    nfd = unicodedata.normalize("NFD", "résumé.txt")
    assert nfd != "résumé.txt"
    a.write(nfd, "mon CV")
    # ... and a folder so spelled: what is inside it is found under its on-disk name.
    nfd_folder = unicodedata.normalize("NFD", "Café")
    a.write(f"{nfd_folder}/menu.txt", "crêpes")
    deep = "/".join(f"level{i:03d}" for i in range(100))
    a.write(f"{deep}/bottom.txt", "far down")
    await a.sync()
    await b.sync()
    assert b.read("résumé.txt") == b"mon CV"  # B's disk has the NFC spelling
    assert b.read("Café/menu.txt") == "crêpes".encode()
    assert b.read(f"{deep}/bottom.txt") == b"far down"
    # B edits the deep file; A, whose disk still spells the name in NFD, gets the edit in place.
    b.write(f"{deep}/bottom.txt", "farther down")
    b.write("résumé.txt", "mon CV, v2")
    b.write("Café/menu.txt", "galettes")
    b.write("Café/sub/deep.txt", "new in a new folder")  # created into A's NFD folder
    b.write("Café/moved.txt", "moved in")
    await b.sync()
    await a.sync()
    assert a.read(nfd) == b"mon CV, v2" and not conflicted(a)
    assert a.read(f"{nfd_folder}/menu.txt") == b"galettes"
    assert a.read(f"{nfd_folder}/sub/deep.txt") == b"new in a new folder"
    (b.folder / "Café/moved.txt").rename(b.folder / "Café/sub/moved.txt")
    await b.sync()
    await a.sync()
    assert a.read(f"{nfd_folder}/sub/moved.txt") == b"moved in"
    assert sorted(n for n in os.listdir(a.folder) if n.startswith("Caf")) == [nfd_folder]
    assert [n for n in os.listdir(a.folder) if n.endswith(".txt")] == [nfd]
    assert a.read(f"{deep}/bottom.txt") == b"farther down"
    await converge(a, b)
    assert not conflicted(b)
