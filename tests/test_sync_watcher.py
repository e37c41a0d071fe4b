"""The watcher's filtering and debounce, fed synthetic watchdog events (no inotify timing)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirModifiedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from syncclient.engine import Engine
from syncclient.ignore import Ignore
from syncclient.watcher import Watcher
from tests.helpers import RunningServer, wait_for
from tests.sync_helpers import make_devices, with_engine


async def test_own_temp_files_and_editor_litter_do_not_wake(tmp_path: Path) -> None:
    (tmp_path / ".drivesyncignore").write_text("*.log\n")
    w = Watcher(tmp_path, Ignore(tmp_path), asyncio.get_running_loop())
    handler = w._handler
    for name in (".~drive-sync-abc.tmp", "~$doc.docx", ".~lock.a#", "x.swp", ".DS_Store",
                 "a.log", ".drive-sync/state"):
        handler.dispatch(FileCreatedEvent(str(tmp_path / name)))
    handler.dispatch(FileOpenedEvent(str(tmp_path / "real.txt")))
    await asyncio.sleep(0)
    assert not w.changed.is_set()
    # A download's temp file renamed onto a real name is a real change (of our own, which the
    # next scan finds already synced).
    handler.dispatch(FileMovedEvent(str(tmp_path / ".~drive-sync-abc.tmp"),
                                    str(tmp_path / "real.txt")))
    await asyncio.sleep(0)
    assert w.changed.is_set()


async def test_settled_waits_for_quiet_but_not_forever(tmp_path: Path) -> None:
    w = Watcher(tmp_path, Ignore(tmp_path), asyncio.get_running_loop(), quiet=0.1, max_wait=0.5)
    w._handler.dispatch(FileModifiedEvent(str(tmp_path / "a.txt")))
    await asyncio.sleep(0)
    event_at = w.last_event
    await asyncio.wait_for(w.settled(), 10)
    assert time.monotonic() - event_at >= 0.1  # returned only after a quiet period

    # A file written continuously still gets synced: settled() returns after max_wait. The
    # events come from a thread, as watchdog's do, so a busy loop does not pause them.
    w = Watcher(tmp_path, Ignore(tmp_path), asyncio.get_running_loop(), quiet=0.5, max_wait=1.5)
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.wait(0.02):
            w._handler.dispatch(FileModifiedEvent(str(tmp_path / "a.txt")))

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        await wait_for(lambda: w.last_event != 0.0, what="the first event")
        start = time.monotonic()
        await asyncio.wait_for(w.settled(), 10)
        assert time.monotonic() - start >= 1.5
    finally:
        stop.set()
        writer.join()


async def test_events_while_the_loop_is_busy_wake_it_once(tmp_path: Path) -> None:
    """watchdog calls from its own thread, thousands of times while a folder is copied in; the
    events that arrive before the loop gets round to them cost one wake-up, not one each."""
    loop = asyncio.get_running_loop()
    scheduled = 0

    class CountingLoop:
        def call_soon_threadsafe(self, fn, *args):  # type: ignore[no-untyped-def]
            nonlocal scheduled
            scheduled += 1
            return loop.call_soon_threadsafe(fn, *args)

    w = Watcher(tmp_path, Ignore(tmp_path), CountingLoop())  # type: ignore[arg-type]
    for i in range(2000):  # the loop is busy (here: running this very code)
        w._handler.dispatch(FileCreatedEvent(str(tmp_path / f"f{i}.txt")))
    assert not w.changed.is_set()
    await asyncio.sleep(0)
    assert w.changed.is_set() and scheduled == 1
    assert time.monotonic() - w.last_event < 5  # the debounce still sees the latest event
    w.changed.clear()
    await asyncio.to_thread(w._handler.dispatch, FileCreatedEvent(str(tmp_path / "later.txt")))
    await asyncio.sleep(0)
    assert w.changed.is_set() and scheduled == 2


async def test_folder_attribute_changes_do_not_wake(tmp_path: Path) -> None:
    w = Watcher(tmp_path, Ignore(tmp_path), asyncio.get_running_loop())
    w._handler.dispatch(DirModifiedEvent(str(tmp_path / "docs")))
    await asyncio.sleep(0)
    assert not w.changed.is_set()
    w._handler.dispatch(DirCreatedEvent(str(tmp_path / "docs")))
    await asyncio.sleep(0)
    assert w.changed.is_set()


async def test_the_daemons_own_downloads_do_not_wake_it(tmp_path: Path,
                                                       srv: RunningServer) -> None:
    """A real engine downloads files from a real server; the events its own writes cause are
    recognised (the file is exactly as the engine left it), a user's edit right after is not."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("docs/report.txt", "from a")
    a.write("gone.txt", "soon deleted")
    await a.sync()

    async def b_side(engine: Engine) -> None:
        w = Watcher(b.folder, Ignore(b.folder), asyncio.get_running_loop(),
                    own=engine.is_own_write)
        assert (await engine.sync_once()).in_sync
        target = b.folder / "docs" / "report.txt"
        assert target.read_bytes() == b"from a"
        tmp = str(b.folder / "docs" / ".~drive-sync-1.tmp")
        for event in (FileMovedEvent(tmp, str(target)),
                      DirCreatedEvent(str(b.folder / "docs"))):
            w._handler.dispatch(event)
        await asyncio.sleep(0)
        assert not w.changed.is_set()
        # Deleted by the engine (A deleted it): its event is ours too.
        (a.folder / "gone.txt").unlink()
        assert await a.cli("run", "--once") == 0
        assert (await engine.sync_once()).in_sync
        assert not (b.folder / "gone.txt").exists()
        w._handler.dispatch(FileDeletedEvent(str(b.folder / "gone.txt")))
        await asyncio.sleep(0)
        assert not w.changed.is_set()
        # The user edits the downloaded file: a real change.
        target.write_bytes(b"from a and b")
        w._handler.dispatch(FileModifiedEvent(str(target)))
        await asyncio.sleep(0)
        assert w.changed.is_set()

    await with_engine(b, b_side)


async def test_a_queue_overflow_wakes_a_full_rescan(tmp_path: Path) -> None:
    """The kernel dropped events: watchdog says so only in its log (this is its message), and
    the watcher turns that into a wake-up, i.e. a full rescan."""
    import logging

    w = Watcher(tmp_path, Ignore(tmp_path), asyncio.get_running_loop(), use_inotify=False)
    w.start()
    try:
        assert w.degraded is None
        await asyncio.sleep(0.1)
        w.changed.clear()
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        await asyncio.sleep(0)
        assert w.changed.is_set()
    finally:
        w.stop()
    w.changed.clear()
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed")
    await asyncio.sleep(0)
    assert not w.changed.is_set()  # a stopped watcher is unhooked


def folders(root: Path) -> list[tuple[Path, int]]:
    return [(p, p.stat().st_ino) for p in [root, *root.rglob("*")] if p.is_dir()]


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "watchdog"])
async def test_unwatched_folders_degrade_only_when_seen_twice(tmp_path: Path,
                                                              use_inotify: bool) -> None:
    tree = tmp_path / "tree"
    for i in range(5):
        (tree / f"d{i}" / "sub").mkdir(parents=True)
    w = Watcher(tree, Ignore(tree), asyncio.get_running_loop(), use_inotify=use_inotify)
    w.start()
    try:
        scanned = folders(tree)
        assert w.check_watches(scanned) is None and not w.recheck and w.degraded is None
        # A folder inotify does not watch (here: one outside the tree): once is a suspicion
        # (it may have been created a moment ago), twice in a row is a fault.
        outside = tmp_path / "outside"
        outside.mkdir()
        also = [*scanned, (outside, outside.stat().st_ino)]
        assert w.check_watches(also) is None and w.recheck
        # Deleted since the scan: not a fault.
        gone = tmp_path / "gone"
        gone.mkdir()
        gone_entry = (gone, gone.stat().st_ino)
        gone.rmdir()
        assert w.check_watches([*scanned, gone_entry]) is None and not w.recheck
        assert w.check_watches(also) is None and w.recheck
        warning = w.check_watches(also)
        assert warning is not None and "1 folder(s) are not watched" in warning
        assert "sudo sysctl fs.inotify.max_user_watches=" in warning and w.degraded == warning
    finally:
        w.stop()


def test_watchdogs_own_bookkeeping_warnings_are_not_logged() -> None:
    """The daemon silences watchdog's 'Callback with id ... for watch' RuntimeWarnings (83 KB
    log lines on a busy folder), and only those."""
    import warnings

    from syncclient.watcher import quiet_watchdog_warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_watchdog_warnings()
        warnings.warn("Callback with id 'x' already exists for watch <Watch wd=1 ...>. It "
                      "will be Overwritten.", RuntimeWarning, stacklevel=1)
        warnings.warn("something else", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]
