"""``drive-sync run``: the daemon. A watcher, a long poll and one sync loop, in one event loop.

* The **watcher** says when the folder changed (debounced); the **long poll** on the change feed
  says when the server did. Either wakes the **sync loop**, which runs ``Engine.sync_once``
  (rescan + pull + plan + execute). A full rescan also runs at start-up, periodically, and as
  the fallback when the folder cannot be watched, so nothing changed while the daemon was
  stopped or while events were lost is missed.
* The long poll only *detects* changes; the sync loop applies them under the engine's lock, so
  the remote tree is written by one task at a time.
* Offline: connection errors set the state to ``offline`` and retry with exponential backoff
  (1 s … 30 s); local changes simply wait in the folder and are reconciled on return.
* SIGINT/SIGTERM: the loop stops; a transfer in flight is abandoned safely (a download's temp
  file is removed, an upload that did not ``complete`` changes nothing on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

from .cli import write_status
from .config import STATUS_FILE, Config
from .engine import Engine, Paused
from .errors import AuthError, FolderMissing, Offline
from .ignore import Ignore
from .watcher import Watcher

log = logging.getLogger(__name__)

RESCAN_SECONDS = 60.0
DEGRADED_RESCAN_SECONDS = 5.0
WATCH_RECHECK_SECONDS = 2.0  # a folder found unwatched is looked at again after this
LONGPOLL_SECONDS = 30.0


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
                asyncio.get_running_loop().call_later(self.backoff, self.wake.set)
                self.backoff = min(self.backoff * 2, 30.0)
                continue
            except Paused as exc:
                self.set_status(state="paused", last_error=str(exc))
                log.error("paused: %s", exc)
                asyncio.get_running_loop().call_later(2.0, self.wake.set)
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
                asyncio.get_running_loop().call_later(self.backoff, self.wake.set)
                self.backoff = min(self.backoff * 2, 30.0)
                continue
            self.backoff = 1.0
            if watcher.check_watches(self.engine.scanned_folders):
                self.set_status(warning=watcher.degraded)
            elif watcher.recheck:
                asyncio.get_running_loop().call_later(WATCH_RECHECK_SECONDS, self.wake.set)
            for op in result.done:
                log.info("%s", op.describe())
            if result.errors:
                for path, why in result.errors.items():
                    log.warning("%s: %s", path, why)
                # Per-file problems (unreadable, permission) are retried later.
                asyncio.get_running_loop().call_later(10.0, self.wake.set)
            self.set_status(state="idle" if result.in_sync else "error",
                            pending=len(result.pending), last_error=None)
        return 0
