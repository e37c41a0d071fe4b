"""File-system events (inotify on Linux, watchdog elsewhere) become one coalesced "the folder
changed" signal.

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
import os
import re
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from . import inotify

log = logging.getLogger(__name__)

WATCHES_SYSCTL = Path("/proc/sys/fs/inotify/max_user_watches")


def inotify_hint(unwatched: int | None = None) -> str:
    """What to do when inotify watches run out: the exact setting, with a value above today's."""
    try:
        current = int(WATCHES_SYSCTL.read_text())
    except (OSError, ValueError):
        current = 8192
    wanted = max(524288, 2 * current)
    what = f"{unwatched} folder(s) are not watched" if unwatched else "the folder is not watched"
    return (f"inotify watches are exhausted (fs.inotify.max_user_watches is {current}), so "
            f"{what}: run `sudo sysctl fs.inotify.max_user_watches={wanted}`, add "
            f"`fs.inotify.max_user_watches={wanted}` to /etc/sysctl.conf, and restart "
            "drive-sync; until then the folder is rescanned every 5 seconds instead")


def watched_inodes() -> set[int] | None:
    """The inodes this process's inotify instances watch, from ``/proc/self/fdinfo`` (Linux);
    None where that cannot be told. watchdog skips a subfolder it cannot watch without a word
    (it logs nothing when the watch limit is reached below the root), so the daemon compares
    this with the folders it scanned."""
    found: set[int] | None = None
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                lines = info.read().splitlines()
        except OSError:
            continue  # closed meanwhile
        found = found or set()
        for line in lines:
            if line.startswith("inotify wd:"):
                m = _INO.search(line)
                if m:
                    found.add(int(m.group(1), 16))
    return found


_INO = re.compile(r"\bino:([0-9a-fA-F]+)")


def _is_folder(path: Path, inode: int) -> bool:
    """Is ``path`` still the folder with this inode (not deleted or replaced since a scan)?"""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_ino == inode and stat.S_ISDIR(st.st_mode)


class _OverflowSignal(logging.Handler):
    """watchdog tells of a kernel queue overflow (events were lost) only in its log; a full
    rescan is the cure, so the log record wakes the sync like any event."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.notify = notify

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            log.warning("inotify queue overflowed: rescanning the whole folder")
            self.notify()


OwnCheck = Callable[[str], bool]
MAX_PENDING = 100_000  # changed paths kept to be judged; past this, a rescan without judging


def quiet_watchdog_warnings() -> None:
    """watchdog's inotify code warns (``RuntimeWarning``, with a whole watch descriptor in the
    text) whenever a folder is moved or re-created under a watch it already has: harmless
    bookkeeping of its own, but a busy folder turned it into 83 KB lines in the daemon's log.
    The daemon does not act on it (it rescans, and checks its watches after every sync)."""
    warnings.filterwarnings("ignore", message=r"Callback with id .* for watch ",
                            category=RuntimeWarning)
IgnoreCheck = Callable[..., bool]  # (path, is_dir=None) -> ignored?, as ``ignore.Ignore``


def _outside_sync(rel: str, is_dir: bool, ignored: IgnoreCheck) -> bool:
    """The root itself, or an ignored path (our own temp files, editors' swap files, the
    marker dir): never a reason to sync."""
    return rel in ("", "/") or ignored(rel, is_dir=is_dir)


def _wakes(rel: str, is_dir: bool, ignored: IgnoreCheck, own: OwnCheck | None) -> bool:
    """Does a change at ``rel`` call for a sync? Not one :func:`_outside_sync`, not the daemon's
    own write (a download renamed into place, still as the engine left it)."""
    return not (_outside_sync(rel, is_dir, ignored) or (own is not None and own(rel)))


class _Handler(FileSystemEventHandler):
    """watchdog's events (on systems without :mod:`syncclient.inotify`, and in tests)."""

    def __init__(self, root: Path, ignored: IgnoreCheck, notify: Callable[[], None],
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
        if any(_wakes(self._rel(p), event.is_directory, self.ignored, self.own) for p in paths):
            self.notify()


class Watcher:
    """Watches ``root``; :meth:`changed` is set when something changed, :meth:`settled` waits
    until nothing changed for ``quiet`` seconds (at most ``max_wait``).

    ``own(path)`` tells the daemon's own writes apart (see ``Engine.is_own_write``): without it
    every file a sync downloads would wake the next sync round, a full rescan for nothing.
    On Linux the events are read on the loop by :class:`~syncclient.inotify.InotifyTree` (each
    read's burst filtered path by path, once each); elsewhere, or with ``use_inotify=False``,
    they arrive in watchdog's thread, thousands a second while a folder is copied in. Either
    way the loop is woken once per burst, not once per event.
    """

    def __init__(self, root: Path, ignored: IgnoreCheck,
                 loop: asyncio.AbstractEventLoop, quiet: float = 0.25, max_wait: float = 3.0,
                 own: OwnCheck | None = None, use_inotify: bool | None = None) -> None:
        self.root, self.loop = root, loop
        self.quiet, self.max_wait = quiet, max_wait
        self.changed = asyncio.Event()
        self.last_event = 0.0  # written by watchdog's thread (a float store is atomic)
        self.degraded: str | None = None  # why we fell back to periodic rescans
        self._observer: BaseObserver | None = None  # Observer is the platform's subclass
        self._use_inotify = inotify.available() if use_inotify is None else use_inotify
        self._tree: inotify.InotifyTree | None = None
        self._ignored, self._own = ignored, own
        self._pending: set[str] = set()  # changed paths the inotify reader saw, to be judged
        self._real = False  # a change known to be real since the last real_change()
        self._wake_pending = False
        self._handler = _Handler(root, ignored, self._notify_threadsafe, own)
        self._overflow = _OverflowSignal(self._notify_threadsafe)
        self._suspects: set[int] = set()  # folders (inodes) found unwatched by the last check
        self.recheck = False  # the last check found some: look again shortly

    def _notify_threadsafe(self) -> None:
        self.last_event = time.monotonic()
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        self._wake_pending = False
        self._real = True  # judged already in watchdog's thread, or an overflow
        self.changed.set()

    def _changes(self, changes: list[inotify.Change]) -> None:
        """A burst read by the inotify tree, on the loop. Paths that are not ignored are kept
        for :meth:`real_change` to judge: whether a path is the daemon's own write is asked only
        once the folder has settled, because the reader runs on the loop and can see a folder
        the engine just made before the engine, a thread hop later, has recorded it."""
        ignored, pending = self._ignored, self._pending
        for rel, is_dir in changes:
            if rel in pending or _outside_sync(rel, is_dir, ignored):
                continue
            if len(pending) >= MAX_PENDING:
                self._real = True  # more than worth judging one by one: a rescan is due anyway
                break
            pending.add(rel)
        if pending or self._real:
            self._seen_now()

    def _overflowed(self) -> None:
        log.warning("inotify queue overflowed: rescanning the whole folder")
        self._real = True
        self._seen_now()

    def _seen_now(self) -> None:
        self.last_event = time.monotonic()
        self.changed.set()

    def real_change(self) -> bool:
        """Since the last call: did anything change that is not the daemon's own write? (The
        watchdog handler judges each event as it comes; the inotify reader leaves it to here.)"""
        real, pending = self._real, self._pending
        self._real, self._pending = False, set()
        if real:
            return True
        own = self._own
        return any(own is None or not own(rel) for rel in pending)

    def start(self) -> None:
        if self._use_inotify:
            tree = inotify.InotifyTree(self.root, self.loop, self._changes, self._overflowed)
            try:
                tree.start()
            except OSError as exc:
                self._cannot_watch(exc)
                return
            self._tree = tree
            return
        observer = Observer()
        observer.schedule(self._handler, str(self.root), recursive=True)
        try:
            observer.start()
        except OSError as exc:
            self._cannot_watch(exc)
            return
        self._observer = observer
        logging.getLogger("watchdog.observers").addHandler(self._overflow)

    def _cannot_watch(self, exc: OSError) -> None:
        if exc.errno == errno.ENOSPC:
            self.degraded = inotify_hint()
        else:
            self.degraded = f"cannot watch {self.root} ({exc}); rescanning periodically"
        log.error("%s", self.degraded)

    def check_watches(self, folders: list[tuple[Path, int]]) -> str | None:
        """After a scan: are the scanned folders (path, inode) all watched? A folder found
        unwatched twice in a row, still there, means the watch limit was reached: fall back to
        periodic rescans and say what to set (returned). Found once, it may be one created a
        moment ago whose watch is being added: :attr:`recheck` asks the daemon to look again
        shortly. A folder deleted since the scan does not count."""
        self.recheck = False
        if self.degraded or (self._observer is None and self._tree is None):
            return None
        watched = watched_inodes()
        if watched is None:
            return None
        unwatched = {ino for path, ino in folders if ino not in watched and _is_folder(path, ino)}
        confirmed = unwatched & self._suspects
        self._suspects = unwatched
        if confirmed:
            self.degraded = inotify_hint(len(unwatched))
            log.error("%s", self.degraded)
            return self.degraded
        self.recheck = bool(unwatched)
        return None

    async def settled(self) -> None:
        """Wait until no event arrived for ``quiet`` seconds, or ``max_wait`` passed."""
        start = time.monotonic()
        while True:
            idle = time.monotonic() - self.last_event
            if idle >= self.quiet or time.monotonic() - start >= self.max_wait:
                return
            await asyncio.sleep(self.quiet - idle)

    def stop(self) -> None:
        if self._tree is not None:
            self._tree.stop()
            self._tree = None
        logging.getLogger("watchdog.observers").removeHandler(self._overflow)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
