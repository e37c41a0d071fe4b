"""The watcher's filtering and debounce, fed synthetic watchdog events (no inotify timing)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from watchdog.events import FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileOpenedEvent

from syncclient.ignore import Ignore
from syncclient.watcher import Watcher


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
    start = time.monotonic()
    await w.settled()
    assert 0.05 <= time.monotonic() - start < 0.3

    async def keep_writing() -> None:
        for _ in range(20):
            w._handler.dispatch(FileModifiedEvent(str(tmp_path / "a.txt")))
            await asyncio.sleep(0.05)

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.01)
    start = time.monotonic()
    await w.settled()  # a file written continuously still gets synced after max_wait
    assert time.monotonic() - start < 0.8
    await writer
