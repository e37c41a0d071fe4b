"""Edits that size, mtime and inode cannot see: a file written again within one mtime tick.

The scan believes a file unchanged when its size, mtime and inode equal its synced record. On a
file system with coarse timestamps (FAT: 2 s; HFS+, ext3, many network mounts: 1 s) a second
save of the same size, in the same tick as the daemon's read, keeps all three. These tests make
such a tick by hand (``os.utime`` back to the same nanosecond) against a real server.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from syncclient.state import UNVERIFIED_MTIME
from tests.helpers import RunningServer
from tests.sync_helpers import Device, make_devices, with_engine


def rewrite_in_the_same_tick(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place (same inode) and give it back its mtime to the nanosecond."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == \
        (before.st_size, before.st_mtime_ns, before.st_ino)


async def record_mtime(d: Device, rel: str) -> int:
    async def read(engine):  # type: ignore[no-untyped-def]
        return engine.state.synced_entries()[rel].mtime_ns
    return await with_engine(d, read)


async def test_a_same_size_edit_in_the_same_tick_is_still_uploaded(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(srv)
    await b.init(srv)
    notes = a.write("notes.txt", "draft one")
    await a.sync()
    # Just read and sent: its mtime cannot be trusted yet.
    assert await record_mtime(a, "/notes.txt") == UNVERIFIED_MTIME
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
    await b.sync()  # downloads it: written by the daemon, also in a fresh tick
    rewrite_in_the_same_tick(b.folder / "thesis.txt", b"chapter B")
    a.write("thesis.txt", "chapter A")
    await a.sync()
    await b.sync()  # the remote edit meets an edit the stat cannot see: keep both
    contents = sorted(v for v in b.tree().values() if v is not None)
    assert contents == [b"chapter A", b"chapter B"], b.tree()
    await a.sync()
    assert a.tree() == b.tree()


async def test_a_file_whose_mtime_is_old_enough_is_trusted_again(
        tmp_path: Path, srv: RunningServer) -> None:
    """An unverified record is verified by the next scan, which then keeps the file's stat, so
    it is not hashed on every scan; a touched file (same content, new mtime) likewise."""
    (a,) = make_devices(tmp_path, "laptop")
    await a.init(srv)
    report = a.write("report.txt", "final")
    await a.sync()
    assert await record_mtime(a, "/report.txt") == UNVERIFIED_MTIME
    old = time.time_ns() - 10 * 10**9
    os.utime(report, ns=(old, old))  # as if written ten seconds ago (or touched back)
    await a.sync()
    assert await record_mtime(a, "/report.txt") == old
    older = old - 10**9
    os.utime(report, ns=(older, older))  # touched: same content, another mtime
    await a.sync()
    assert await record_mtime(a, "/report.txt") == older
