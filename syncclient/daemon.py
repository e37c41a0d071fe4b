"""``drive-sync run``: the daemon. A watcher, a long poll and one sync loop, in one event loop.

* The **watcher** says when the folder changed (debounced); the **long poll** on the change feed
  says when the server did. Either wakes the **sync loop**, which runs ``Engine.sync_once``
  (rescan + pull + plan + execute). A full rescan also runs at start-up, periodically, and as
  the fallback when the folder cannot be watched, so nothing changed while the daemon was
  stopped or while events were lost is missed.
* The long poll only *detects* changes; the sync loop applies them under the engine's lock, so
  the remote tree is written by one task at a time.
* Offline: connection errors set the state to ``offline`` and retry with exponential backoff
  (1 s … 30 s), and no wake-up (an event, the long poll) retries sooner than the log said; local
  changes simply wait in the folder and are reconciled on return.
* Idle means idle: there is one retry schedule (a retry asked for replaces the pending one, so
  timers never pile up); per-file problems are retried after 10 s, then less and less often
  (up to 5 min) while they stay the same, and each is logged once per change; a paused mass
  deletion is logged once and waits for ``drive-sync resume`` with a cheap look at one flag a
  second, not a sync round.
* SIGINT/SIGTERM: the loop stops; a transfer in flight is abandoned safely (a download's temp
  file is removed, an upload that did not ``complete`` changes nothing on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .config import STATUS_FILE, Config
from .engine import Engine
from .errors import AuthError, FolderMissing, Offline
from .guards import Paused
from .ignore import Ignore
from .planner import Op
from .status import write_status
from .watcher import Watcher, quiet_watchdog_warnings

log = logging.getLogger(__name__)

RESCAN_SECONDS = 60.0
DEGRADED_RESCAN_SECONDS = 5.0
WATCH_RECHECK_SECONDS = 2.0  # a folder found unwatched is looked at again after this
LONGPOLL_SECONDS = 30.0
PROBLEM_RETRY_SECONDS = 10.0  # per-file problems (unreadable, permission): first retry
PROBLEM_RETRY_MAX_SECONDS = 300.0  # ... doubling while they stay the same
RESUME_CHECK_SECONDS = 1.0  # while paused: how often the resume flag is looked at


class Daemon:
    def __init__(self, config: Config, config_dir: Path, engine: Engine) -> None:
        self.config, self.engine = config, engine
        self.status_path = config_dir / STATUS_FILE
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.synced = asyncio.Event()  # set after every sync attempt
        self.backoff = 1.0
        self.status: dict[str, Any] = {"state": "starting"}
        engine.on_status = self._engine_status
        self._retry: asyncio.TimerHandle | None = None
        self._not_before = 0.0  # offline: no sync before this (monotonic), whatever wakes us
        self._problems: dict[str, str] = {}  # per-file problems as last logged
        self._problem_delay = PROBLEM_RETRY_SECONDS
        self._paused: str | None = None  # the pause reason last logged
        self._resume_watch: asyncio.Task[None] | None = None

    def _retry_in(self, seconds: float) -> None:
        """Wake the sync loop in ``seconds``. One schedule: this replaces any pending retry
        (each round decides anew what it needs), so rounds cannot multiply."""
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(seconds, self.wake.set)

    def _backing_off(self, seconds: float) -> None:
        self._not_before = time.monotonic() + seconds
        self._retry_in(seconds)

    async def _wait_for_resume(self) -> None:
        """While paused: wake the sync loop once ``drive-sync resume`` set its flag."""
        while True:
            if self.engine.state.get("resume") == "1":
                self.wake.set()
                return
            await asyncio.sleep(RESUME_CHECK_SECONDS)

    def _log_problems(self, errors: dict[str, str]) -> None:
        """Each per-file problem once per change (a new one, or a new reason), and a retry
        that backs off while nothing changes."""
        for path, why in errors.items():
            if self._problems.get(path) != why:
                log.warning("%s: %s", path, why)
        if errors and errors == self._problems:
            self._problem_delay = min(self._problem_delay * 2, PROBLEM_RETRY_MAX_SECONDS)
        else:
            self._problem_delay = PROBLEM_RETRY_SECONDS
        self._problems = dict(errors)

    def _engine_status(self, status: dict[str, Any]) -> None:
        self.set_status(**status)

    def set_status(self, **status: Any) -> None:
        if "errors" in status:
            status["errors"] = len(status["errors"])
        self.status = {**self.status, **status}
        write_status(self.status_path, self.status)

    def stop(self) -> None:
        log.info("stopping")
        self.stopping.set()
        self.wake.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.engine.check_folder()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        ignore = Ignore(self.config.root)
        quiet_watchdog_warnings()
        watcher = Watcher(self.config.root, ignore, loop, own=self.engine.is_own_write)
        watcher.start()
        if watcher.degraded:
            self.set_status(warning=watcher.degraded)
        tasks = [asyncio.create_task(self._watch(watcher)),
                 asyncio.create_task(self._poll()),
                 asyncio.create_task(self._tick(watcher))]
        log.info("watching %s", self.config.root)
        rc = 0
        try:
            rc = await self._sync_loop(watcher)
        finally:
            if self._retry is not None:
                self._retry.cancel()
            if self._resume_watch is not None:
                tasks.append(self._resume_watch)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            watcher.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self.set_status(state="stopped")
        return rc

    async def _watch(self, watcher: Watcher) -> None:
        while True:
            await watcher.changed.wait()
            watcher.changed.clear()
            await watcher.settled()
            if watcher.real_change():
                self.wake.set()

    async def _tick(self, watcher: Watcher) -> None:
        """Periodic full rescans: every minute, every 5 s once watching fell back (which may
        happen at any sync, so the interval is looked at every second)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            every = DEGRADED_RESCAN_SECONDS if watcher.degraded else RESCAN_SECONDS
            if time.monotonic() - last >= every:
                last = time.monotonic()
                self.wake.set()

    async def _poll(self) -> None:
        """Long-poll the change feed; wake the sync loop when something arrives."""
        backoff = 1.0
        while True:
            cursor = self.engine.state.get("cursor")
            if cursor is None or cursor == "0":
                await asyncio.sleep(0.5)  # the first sync lists everything; wait for it
                continue
            try:
                answer = await self.engine.remote.changes(cursor, LONGPOLL_SECONDS)
            except Offline:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self.wake.set()
                continue
            except AuthError as exc:
                self.set_status(state="error", last_error=str(exc))
                await asyncio.sleep(30)
                continue
            backoff = 1.0
            if answer.get("changes") or answer.get("has_more") or answer.get("reset"):
                # Let the sync loop consume it before polling again with the same cursor.
                self.synced.clear()
                self.wake.set()
                await self.synced.wait()
            elif answer.get("next_cursor") not in (None, cursor):
                async with self.engine.lock:
                    if self.engine.state.get("cursor") == cursor:
                        self.engine.state.set("cursor", answer["next_cursor"])

    async def _sync_loop(self, watcher: Watcher) -> int:
        self.wake.set()  # the start-up rescan
        while not self.stopping.is_set():
            await self.wake.wait()
            self.wake.clear()
            if self.stopping.is_set():
                break
            wait = self._not_before - time.monotonic()
            if wait > 0:  # backing off: woken early (an event, the poll); keep our word
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), wait)
                if self.stopping.is_set():
                    break
            sync = asyncio.create_task(self.engine.sync_once())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({sync, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            self.synced.set()
            if not sync.done():
                sync.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sync
                break
            try:
                result = sync.result()
            except Offline as exc:
                self.set_status(state="offline", last_error=str(exc))
                log.warning("offline: %s (retrying in %.0f s)", exc, self.backoff)
                self._backing_off(self.backoff)
                self.backoff = min(self.backoff * 2, 30.0)
                continue
            except Paused as exc:
                self.set_status(state="paused", last_error=str(exc))
                if self._paused != str(exc):
                    self._paused = str(exc)
                    log.error("paused: %s", exc)
                if self._resume_watch is None or self._resume_watch.done():
                    self._resume_watch = asyncio.create_task(self._wait_for_resume())
                continue
            except FolderMissing as exc:
                self.set_status(state="error", last_error=str(exc))
                log.error("%s", exc)
                return 1
            except AuthError as exc:
                self.set_status(state="error", last_error=str(exc))
                log.error("%s", exc)
                return 1
            except Exception as exc:  # a bug or a full disk: keep the daemon alive, retry
                log.exception("sync failed")
                self.set_status(state="error", last_error=f"{type(exc).__name__}: {exc}")
                self._backing_off(self.backoff)
                self.backoff = min(self.backoff * 2, 30.0)
                continue
            self.backoff = 1.0
            self._paused = None
            newly_degraded = watcher.check_watches(self.engine.scanned_folders)
            if newly_degraded:
                self.set_status(warning=watcher.degraded)
            _log_done(result.done)
            self._log_problems(result.errors)
            if watcher.recheck and not newly_degraded:
                self._retry_in(WATCH_RECHECK_SECONDS)
            elif result.errors:
                # Per-file problems (unreadable, permission) are retried later.
                self._retry_in(self._problem_delay)
            self.set_status(state="idle" if result.in_sync else "error",
                            pending=len(result.pending), last_error=_summary(result.errors))
        return 0


LOGGED_OPS = 100  # operations of one sync logged one per line; the rest are counted


def _log_done(done: list[Op]) -> None:
    """What a sync did, one line per operation, up to ``LOGGED_OPS``; beyond that one line
    counts the rest by kind (10,000 new files made 10,000 lines, a tenth of the daemon's time)."""
    for op in done[:LOGGED_OPS]:
        log.info("%s", op.describe())
    if len(done) > LOGGED_OPS:
        kinds = Counter(op.kind for op in done[LOGGED_OPS:])
        log.info("... and %d more: %s", len(done) - LOGGED_OPS,
                 ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))


def _summary(errors: dict[str, str]) -> str | None:
    """One line for ``status``: an error state never comes without a word on what is wrong."""
    if not errors:
        return None
    path, why = next(iter(errors.items()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {why}{more}"
