"""watchdog → asyncio: file-system events become one coalesced "the folder changed" signal.

The engine always rescans the whole folder (cheap: unchanged files are not re-hashed), so the
watcher need not deliver exact event lists — which inotify cannot promise anyway (a folder
created and filled within milliseconds loses inner events; an overflowing queue loses all).
It only has to say *when* to look, and wait until the folder has settled (debounce) so that a
file being written is uploaded once, when complete.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

INOTIFY_HINT = ("inotify watches are exhausted: run `sudo sysctl fs.inotify.max_user_watches="
                "524288` (and add it to /etc/sysctl.conf); until then the folder is rescanned "
                "every few seconds instead of watched")


OwnCheck = Callable[[str], bool]


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, ignored: Callable[[str], bool], notify: Callable[[], None],
                 own: OwnCheck | None = None) -> None:
        self.root, self.ignored, self.notify = str(root), ignored, notify
        self.own = own

    def _rel(self, path: str | bytes) -> str:
        p = path.decode() if isinstance(path, bytes) else path
        return p[len(self.root):] if p.startswith(self.root) else p

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            # A folder's own mtime or attributes: its entries' changes have their own events.
            return
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        rels = [self._rel(p) for p in paths]
        if all(r in ("", "/") or self.ignored(r) or (self.own is not None and self.own(r))
               for r in rels):
            # Our own temp files and the daemon's own writes (a download renamed into place,
            # still as the engine left it), editors' swap files, the marker dir.
            return
        self.notify()


class Watcher:
    """Watches ``root``; :meth:`changed` is set when something changed, :meth:`settled` waits
    until nothing changed for ``quiet`` seconds (at most ``max_wait``).

    ``own(path)`` tells the daemon's own writes apart (see ``Engine.is_own_write``): without it
    every file a sync downloads would wake the next sync round, a full rescan for nothing.
    Events arrive in watchdog's thread, thousands a second while a folder is copied in; the loop
    is woken once per burst, not once per event.
    """

    def __init__(self, root: Path, ignored: Callable[[str], bool],
                 loop: asyncio.AbstractEventLoop, quiet: float = 0.25, max_wait: float = 3.0,
                 own: OwnCheck | None = None) -> None:
        self.root, self.loop = root, loop
        self.quiet, self.max_wait = quiet, max_wait
        self.changed = asyncio.Event()
        self.last_event = 0.0  # written by watchdog's thread (a float store is atomic)
        self.degraded: str | None = None  # why we fell back to periodic rescans
        self._observer: Observer | None = None
        self._wake_pending = False
        self._handler = _Handler(root, ignored, self._notify_threadsafe, own)

    def _notify_threadsafe(self) -> None:
        self.last_event = time.monotonic()
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        self._wake_pending = False
        self.changed.set()

    def start(self) -> None:
        observer = Observer()
        observer.schedule(self._handler, str(self.root), recursive=True)
        try:
            observer.start()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.degraded = INOTIFY_HINT
            else:
                self.degraded = f"cannot watch {self.root} ({exc}); rescanning periodically"
            log.error("%s", self.degraded)
            return
        self._observer = observer

    async def settled(self) -> None:
        """Wait until no event arrived for ``quiet`` seconds, or ``max_wait`` passed."""
        start = time.monotonic()
        while True:
            idle = time.monotonic() - self.last_event
            if idle >= self.quiet or time.monotonic() - start >= self.max_wait:
                return
            await asyncio.sleep(self.quiet - idle)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
