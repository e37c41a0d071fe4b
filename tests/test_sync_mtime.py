"""Edits that size, mtime and inode cannot see: a file saved again within one mtime tick.

The scan believes a file unchanged when its size, mtime and inode equal its synced record. On a
file system with coarse timestamps (FAT: 2 s; HFS+, ext3, many network mounts: 1 s) a second
save of the same size, in the same tick as the daemon's read, keeps all three. These tests make
such a tick by hand (``os.utime`` back to the same nanosecond), against a real server, and widen
the tick to an hour so that no test depends on how fast this machine syncs.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from syncclient import batch_download, down, localtree
from syncclient.context import SyncContext
from syncclient.engine import Engine
from syncclient.state import State
from tests.helpers import RunningServer
from tests.sync_helpers import act_after_planning, make_devices

HOUR = 3600 * 10**9


@pytest.fixture(autouse=True)
def hour_long_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localtree, "RACY_NS", HOUR)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the scan hashes (rather than trusting their stat)."""
    seen: list[str] = []
    real = localtree.hash_local

    def counting(path: Path, like: str | None = None) -> Any:
        seen.append(path.name)
        return real(path, like)
    monkeypatch.setattr(localtree, "hash_local", counting)
    return seen


def rewrite_in_the_same_tick(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place (same inode) and give it back its mtime to the nanosecond."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == \
        (before.st_size, before.st_mtime_ns, before.st_ino)


async def test_a_same_size_edit_in_the_same_tick_is_still_uploaded(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    notes = a.write("notes.txt", "draft one")
    await a.sync()
    rewrite_in_the_same_tick(notes, b"draft two")
    await a.sync()
    await b.sync()
    assert b.read("notes.txt") == b"draft two"


async def test_a_remote_edit_does_not_overwrite_a_same_tick_local_edit(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    a.write("thesis.txt", "chapter 1")
    await a.sync()
    await b.sync()  # downloaded: written by the daemon a moment ago
    rewrite_in_the_same_tick(b.folder / "thesis.txt", b"chapter B")
    a.write("thesis.txt", "chapter A")
    await a.sync()
    await b.sync()  # the remote edit meets an edit the stat cannot see: keep both
    assert sorted(v for v in b.tree().values() if v) == [b"chapter A", b"chapter B"], b.tree()
    await a.sync()
    assert a.tree() == b.tree()


async def test_a_same_tick_edit_during_the_download_is_not_overwritten(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan saw the old content; the user saves again (same size, same tick) while the new
    version downloads. The check before the rename must not trust the stat either."""
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    a.write("budget.csv", "q1,100")
    await a.sync()
    await b.sync()
    a.write("budget.csv", "q1,200")
    await a.sync()
    real_fetch = down.fetch
    edited: list[bool] = []

    async def fetch_while_the_user_saves(ctx: SyncContext, *args: Any) -> Any:
        got = await real_fetch(ctx, *args)
        if not edited:
            edited.append(True)
            rewrite_in_the_same_tick(b.folder / "budget.csv", b"q1,300")
        return got
    monkeypatch.setattr(down, "fetch", fetch_while_the_user_saves)
    # A small file comes in a batch and is written by the batch writer (issue 15): the user
    # saves once its bytes are in the temp file, just before the check and the rename.
    real_rename = batch_download._rename_into_place

    def rename_while_the_user_saves(ctx: SyncContext, *args: Any) -> Any:
        if not edited:
            edited.append(True)
            rewrite_in_the_same_tick(b.folder / "budget.csv", b"q1,300")
        return real_rename(ctx, *args)
    monkeypatch.setattr(batch_download, "_rename_into_place", rename_while_the_user_saves)
    await b.sync()
    assert edited
    assert sorted(v for v in b.tree().values() if v) == [b"q1,200", b"q1,300"], b.tree()


async def test_a_file_is_hashed_until_its_mtime_can_vouch_for_it(
        tmp_path: Path, srv: RunningServer, hashed: list[str]) -> None:
    """Within a tick of its last read, a file is hashed at every scan; once its mtime is older
    than a tick, the next scan records it and later ones trust it. A file dated in the future
    vouches for nothing: it is hashed every time."""
    (a,) = make_devices(tmp_path, "laptop")
    await a.init(srv)
    report = a.write("report.txt", "final")
    await a.sync()
    hashed.clear()
    await a.sync()
    assert hashed == ["report.txt"]  # read a moment ago: the stat cannot vouch for it yet
    old = time.time_ns() - 2 * HOUR
    os.utime(report, ns=(old, old))  # as if written long ago, or touched back
    hashed.clear()
    await a.sync()
    assert hashed == ["report.txt"]
    hashed.clear()
    await a.sync()
    assert hashed == []
    ahead = time.time_ns() + 2 * HOUR
    os.utime(report, ns=(ahead, ahead))
    for _ in range(2):
        hashed.clear()
        await a.sync()
        assert hashed == ["report.txt"]


async def test_mtimes_are_judged_on_the_file_system_clock_to_the_tick(
        tmp_path: Path, srv: RunningServer, hashed: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's clock (a network file system's server, say) is a day behind this computer's:
    an mtime 3 s older than the read, on that clock, vouches; 1 s older does not."""
    monkeypatch.setattr(localtree, "RACY_NS", 2 * 10**9)
    day = 24 * HOUR
    monkeypatch.setattr(Engine, "_fs_clock", lambda self: time.time_ns() - day)
    (a,) = make_devices(tmp_path, "laptop")
    await a.init(srv)
    for name, age in (("old.txt", 3), ("fresh.txt", 1)):
        path = a.write(name, name)
        mtime = time.time_ns() - day - age * 10**9
        os.utime(path, ns=(mtime, mtime))
    await a.sync()
    hashed.clear()
    await a.sync()
    assert hashed == ["fresh.txt"]


async def test_a_same_tick_edit_before_a_local_deletion_is_kept(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    a.write("draft.txt", "keep me")
    await a.sync()
    await b.sync()
    (a.folder / "draft.txt").unlink()
    await a.sync()  # deleted on the server; b will delete its copy ...
    # ... but the user saves it again, same size, same tick
    edited = act_after_planning(
        monkeypatch, lambda: rewrite_in_the_same_tick(b.folder / "draft.txt", b"kept! !"))
    await b.sync()
    assert edited
    assert b.read("draft.txt") == b"kept! !"
    await a.sync()
    assert a.read("draft.txt") == b"kept! !"  # edit-vs-delete keeps the edit


async def test_without_a_clock_nothing_is_trusted_and_a_dry_run_writes_nothing(
        tmp_path: Path, srv: RunningServer, hashed: list[str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    (a,) = make_devices(tmp_path, "laptop")
    await a.init(srv)
    old = a.write("old.txt", "from last year")
    mtime = time.time_ns() - 2 * HOUR * 24 * 365
    os.utime(old, ns=(mtime, mtime))
    clock = a.folder / ".drive-sync" / "clock"
    assert await a.cli("run", "--dry-run") == 0
    assert not clock.exists()
    real_utime = os.utime

    def refuse_the_clock(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == "clock":
            raise PermissionError(13, "Permission denied")
        real_utime(path, *args, **kwargs)
    monkeypatch.setattr(os, "utime", refuse_the_clock)
    await a.sync()
    assert "cannot write" in caplog.text
    hashed.clear()
    await a.sync()
    assert hashed == ["old.txt"]  # recorded without a clock: not trusted


def test_a_state_database_from_before_verified_ns_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE synced (path TEXT PRIMARY KEY, is_dir INTEGER NOT NULL, file_id"
               " TEXT, version INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT"
               " NULL, inode INTEGER, checksum TEXT, blocks TEXT NOT NULL DEFAULT '[]')")
    db.execute("INSERT INTO synced VALUES ('/a.txt', 0, 'f_1', 3, 5, 7, 9, 'c', '[\"h\"]')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    state = State(path)
    try:
        [entry] = state.synced_entries().values()
        assert (entry.path, entry.version, entry.mtime_ns, entry.verified_ns) == \
            ("/a.txt", 3, 7, 0)  # kept, and verified by the next scan
    finally:
        state.close()
