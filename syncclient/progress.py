"""Progress: of one long transfer (a bar on a terminal, else a log line every period) and of a
round (how many of its operations are done), both also sent to ``drive-sync status``.

A stage of its own because both reporters run beside the transfers they describe and must never
slow them: a reporter wakes on a timer, and only a count that moved is said again.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sized
from typing import Any

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 8 * 1024 * 1024
PROGRESS_LOG_SECONDS = 2.0  # how often progress reaches the log and `drive-sync status`
PROGRESS_FLOOR_SECONDS = 0.05  # the shortest period any setting can give a progress reporter

StatusSink = Callable[..., None]  # status(state, **extra): what `drive-sync status` shows


def progress_period() -> float:
    """The reporters' period, never below the floor: a reporter wakes on a timer, and a zero
    period would turn it into a loop that logs as fast as it can and starves every transfer."""
    return max(PROGRESS_LOG_SECONDS, PROGRESS_FLOOR_SECONDS)


class Progress:
    """Progress of one long transfer: a bar on a terminal, otherwise a log line every 2 s; and
    ``drive-sync status`` (read from another terminal) every 2 s either way. Called with the
    number of bytes each time some were sent or fetched."""

    def __init__(self, status: StatusSink, verb: str, path: str, total: int) -> None:
        self.status, self.verb, self.path, self.total = status, verb, path, total
        self.done = 0
        self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.total < PROGRESS_MIN_BYTES:
            return
        if self.tty:
            share = min(1.0, self.done / self.total)
            bar = "#" * int(share * 30)
            end = "\n" if self.done >= self.total else ""
            sys.stderr.write(f"\r{self.verb} {self.path} [{bar:<30}] {share:4.0%}{end}")
            sys.stderr.flush()
        now = time.monotonic()
        if now - self.last >= progress_period():
            self.last = now
            text = (f"{self.verb} {self.path}: {self.done / 2**20:.1f} of "
                    f"{self.total / 2**20:.1f} MiB transferred")
            if not self.tty:
                log.info("%s", text)
            self.status("syncing", progress=text)


async def report_round(done: Sized, total: int, status: StatusSink) -> None:
    """Say every period how many of a round's ``total`` operations are ``done`` (a list the
    executor appends to), until cancelled. Only a count that moved is reported: a round that
    waits on one big file says so once, not every period (the file's own progress says how it
    goes)."""
    reported = -1
    while True:
        await asyncio.sleep(progress_period())
        count = len(done)
        if count == reported:
            continue
        reported = count
        text = f"{count} of {total} operation(s) done"
        log.info("%s", text)
        status("syncing", progress=text)


def no_status(state: str, **extra: Any) -> None:
    """The status sink of an engine nobody watches."""
    del state, extra
