"""The daemon's own inotify reader against the real kernel: paths, new and moved folders, a
folder moved away, a queue overflow, and the watcher's filter over real download events."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from syncclient import inotify
from syncclient.engine import Engine
from syncclient.ignore import Ignore
from syncclient.watcher import Watcher, watched_inodes
from tests.helpers import RunningServer, wait_for
from tests.sync_helpers import make_devices, with_engine

pytestmark = pytest.mark.skipif(not inotify.available(), reason="inotify is Linux's")


class Recorder:
    def __init__(self, root: Path) -> None:
        self.changes: list[tuple[str, bool]] = []
        self.overflows = 0
        self.tree = inotify.InotifyTree(root, asyncio.get_running_loop(), self.changes.extend,
                                        self.overflowed)

    def overflowed(self) -> None:
        self.overflows += 1

    async def seen(self, rel: str, what: str = "") -> None:
        await wait_for(lambda: any(r == rel for r, _ in self.changes),
                       what=what or f"an event for {rel}")


async def test_paths_of_files_and_new_folders_at_any_depth(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    rec = Recorder(tmp_path)
    rec.tree.start()
    try:
        (tmp_path / "a.txt").write_text("a")
        (tmp_path / "old" / "b.txt").write_text("b")
        await rec.seen("/old/b.txt")
        assert ("/a.txt", False) in rec.changes
        # A folder made now is watched as it appears, and so are those made inside it.
        (tmp_path / "new").mkdir()
        await rec.seen("/new")
        assert ("/new", True) in rec.changes
        # "deeper" is made before "deep" has a watch (its event is lost: the rescan that
        # /new/deep wakes finds it), but the walk that watches "deep" watches it too.
        (tmp_path / "new" / "deep" / "deeper").mkdir(parents=True)
        await rec.seen("/new/deep")
        (tmp_path / "new" / "deep" / "deeper" / "c.txt").write_text("c")
        await rec.seen("/new/deep/deeper/c.txt")
        (tmp_path / "a.txt").unlink()
        await wait_for(lambda: rec.changes.count(("/a.txt", False)) >= 3,
                       what="create, write and delete of a.txt")
    finally:
        rec.tree.stop()


async def test_a_folder_moved_inside_keeps_watching_under_its_new_name(tmp_path: Path) -> None:
    (tmp_path / "x" / "sub").mkdir(parents=True)
    (tmp_path / "y").mkdir()
    rec = Recorder(tmp_path)
    rec.tree.start()
    try:
        (tmp_path / "x").rename(tmp_path / "y" / "x2")
        await rec.seen("/y/x2")
        assert ("/x", True) in rec.changes  # moved from, under the old name
        (tmp_path / "y" / "x2" / "sub" / "f.txt").write_text("after the move")
        await rec.seen("/y/x2/sub/f.txt", "the moved folder's file under its new path")
        assert not any(r.startswith("/x/") for r, _ in rec.changes)
    finally:
        rec.tree.stop()


async def test_a_folder_moved_out_of_the_tree_is_no_longer_watched(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "gone" / "sub").mkdir(parents=True)
    outside.mkdir()
    rec = Recorder(root)
    rec.tree.start()
    try:
        gone_inodes = {(root / "gone").stat().st_ino, (root / "gone" / "sub").stat().st_ino}
        assert gone_inodes <= (watched_inodes() or set())
        (root / "gone").rename(outside / "gone")
        await rec.seen("/gone")
        await wait_for(lambda: not (gone_inodes & (watched_inodes() or set())),
                       what="the moved-out folders' watches to go")
        (outside / "gone" / "sub" / "f.txt").write_text("not ours any more")
        (root / "marker.txt").write_text("m")
        await rec.seen("/marker.txt")
        assert not any("f.txt" in r for r, _ in rec.changes)
    finally:
        rec.tree.stop()


def _max_queued_events() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


async def test_a_queue_overflow_is_reported_and_the_watches_renewed(tmp_path: Path) -> None:
    """The kernel keeps max_queued_events per instance; more while the loop is busy (here: the
    test writes without yielding) are dropped, and the reader says so instead of going on as if
    it had seen everything. A folder made in the flood is watched afterwards."""
    limit = _max_queued_events()
    rec = Recorder(tmp_path)
    rec.tree.start()
    try:
        for i in range(limit // 2 + 100):  # create + close_write each: past the limit
            (tmp_path / f"f{i}").touch()
        (tmp_path / "made-in-the-flood").mkdir()
        await wait_for(lambda: rec.overflows >= 1, what="the overflow to be reported")
        inode = (tmp_path / "made-in-the-flood").stat().st_ino
        assert inode in (watched_inodes() or set())
    finally:
        rec.tree.stop()


async def test_watcher_on_inotify_ignores_the_daemons_own_downloads(
        tmp_path: Path, srv: RunningServer) -> None:
    """A real engine downloads into a folder watched through inotify: none of the events its own
    writes cause (temp files, renames into place, new folders) wakes the watcher; the user's
    edit right after does. A file written last shows when everything before it was read."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    for i in range(20):
        a.write(f"docs/d{i % 3}/f{i}.txt", f"from a {i}")
    await a.sync()

    async def b_side(engine: Engine) -> None:
        loop = asyncio.get_running_loop()
        w = Watcher(b.folder, Ignore(b.folder), loop, own=engine.is_own_write, use_inotify=True)
        delivered: list[tuple[str, bool]] = []
        real = w._changes

        def spy(changes: list[tuple[str, bool]]) -> None:
            delivered.extend(changes)
            real(changes)

        w._changes = spy  # type: ignore[method-assign]
        w.start()
        try:
            assert (await engine.sync_once()).in_sync
            assert (b.folder / "docs/d1/f19.txt").read_text() == "from a 19"
            # A path the filter ignores, written last: once it is delivered, so is all before.
            (b.folder / "last.swp").write_text("x")
            await wait_for(lambda: any(r == "/last.swp" for r, _ in delivered),
                           what="the watcher to read the download's events")
            assert any(r.endswith("/f19.txt") for r, _ in delivered)  # it did see them
            assert not w.real_change(), "the daemon's own downloads count as a change"
            w.changed.clear()
            (b.folder / "docs/d1/f19.txt").write_text("edited on b")
            await wait_for(w.changed.is_set, what="the user's edit to be seen")
            assert w.real_change()
            assert not w.real_change()  # told once
        finally:
            w.stop()

    await with_engine(b, b_side)


async def test_a_missing_root_is_an_error_not_silence(tmp_path: Path) -> None:
    tree = inotify.InotifyTree(tmp_path / "nope", asyncio.get_running_loop(),
                               lambda c: None, lambda: None)
    with pytest.raises(FileNotFoundError):
        tree.start()
    assert tree._fd == -1  # nothing left open


@pytest.mark.parametrize("how", ["mkdir", "move_in_from_outside", "rename_inside"])
async def test_a_folder_replaced_at_the_same_path_stays_watched(tmp_path: Path,
                                                               how: str) -> None:
    """`mv docs /backup && mv docs-new docs` before the loop reads: the folder moved out loses
    its watches, the one that took its path keeps them."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "docs" / "old").mkdir(parents=True)
    (root / "docs-new" / "sub").mkdir(parents=True)
    (outside / "incoming" / "sub").mkdir(parents=True)
    rec = Recorder(root)
    rec.tree.start()
    try:
        old_inode = (root / "docs").stat().st_ino
        (root / "docs").rename(outside / "archived")  # both steps within one read
        if how == "mkdir":
            (root / "docs" / "sub").mkdir(parents=True)
        elif how == "move_in_from_outside":
            (outside / "incoming").rename(root / "docs")
        else:
            (root / "docs-new").rename(root / "docs")
        await rec.seen("/docs")
        await wait_for(lambda: (root / "docs" / "sub").stat().st_ino in
                       (watched_inodes() or set()), what="the new folder's subfolder watched")
        assert (root / "docs").stat().st_ino in (watched_inodes() or set())
        (root / "docs" / "sub" / "report.txt").write_text("the user's work")
        await rec.seen("/docs/sub/report.txt")
        await wait_for(lambda: old_inode not in (watched_inodes() or set()),
                       what="the folder moved out to lose its watch")
    finally:
        rec.tree.stop()


def _over_path_max(base: Path, depth: int = 20) -> Path:
    """A folder chain of about 5 KB below ``base`` (each name 250 bytes): legal on Linux, past
    PATH_MAX for any call that takes the whole path."""
    fd = os.open(base, os.O_RDONLY)
    rel = base
    for i in range(depth):
        name = f"{i:02d}" + "a" * 248
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
        rel = rel / name
    os.close(fd)
    return rel


async def test_a_folder_that_cannot_be_watched_is_skipped_not_its_siblings(
        tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "normal" / "sub").mkdir(parents=True)
    (root / "deep").mkdir()
    _over_path_max(root / "deep")
    (outside / "big").mkdir(parents=True)
    _over_path_max(outside / "big")
    for i in range(5):
        (outside / "big" / f"s{i}").mkdir()
    rec = Recorder(root)
    rec.tree.start()  # not an error: the over-long chain is skipped, the rest watched
    try:
        assert rec.tree.unwatched > 0
        assert (root / "normal" / "sub").stat().st_ino in (watched_inodes() or set())
        (outside / "big").rename(root / "big")
        await rec.seen("/big")
        watched = watched_inodes() or set()
        assert all((root / "big" / f"s{i}").stat().st_ino in watched for i in range(5))
    finally:
        rec.tree.stop()
