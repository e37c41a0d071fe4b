"""The long-poll hub: waiting requests, woken by journal commits.

A waiting long poll costs one small object and one :class:`asyncio.Event`: there is no polling
loop and no thread per request. Waiters are kept in per-workspace sets, so a commit touches only
the waiters of its workspace. The journal calls :meth:`Hub.notify` after the commit (never
before), so a woken request always finds the change when it reads the journal.

Everything here is in-process. With several server processes on PostgreSQL, the commits of the
others reach ``notify`` through :class:`~driveserver.meta.pg_listen.JournalListener`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable


class Waiter:
    """One waiting long poll, registered on every workspace it can see.

    ``ignore_device`` is the device the request speaks for: its own commits do not wake it (it
    made them, so it knows). ``woken_at`` is when the first waking commit was announced
    (``time.monotonic``), for the commit-to-answer latency metric.
    """

    __slots__ = ("workspaces", "ignore_device", "event", "woken_at")

    def __init__(self, workspaces: tuple[str, ...], ignore_device: str | None) -> None:
        self.workspaces = workspaces
        self.ignore_device = ignore_device
        self.event = asyncio.Event()
        self.woken_at: float | None = None

    def arm(self) -> None:
        """Forget earlier wake-ups; call before reading the journal, so none is missed."""
        self.event.clear()
        self.woken_at = None

    def wake(self, at: float) -> None:
        if not self.event.is_set():
            self.woken_at = at
            self.event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait until woken (True) or until ``seconds`` pass (False)."""
        if self.event.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.event.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    """Per-workspace sets of waiters; :meth:`notify` is the journal's post-commit listener."""

    def __init__(self) -> None:
        self._by_workspace: dict[str, set[Waiter]] = {}
        self._count = 0
        # Bumped by every notify. A journal read that started at generation g has seen every
        # commit announced before g, which lets waiters share one read (see feed.Feed.page).
        self.generation = 0
        self.closed = False
        # Bumped by Journal.touch (seq 0): what a workspace's owner can see changed (a folder was
        # shared with them or unshared). A woken poll compares it instead of asking the database.
        self._view_epochs: dict[str, int] = {}

    def view_epoch(self, workspace_id: str) -> int:
        return self._view_epochs.get(workspace_id, 0)

    def add(self, workspaces: Iterable[str], ignore_device: str | None) -> Waiter:
        waiter = Waiter(tuple(workspaces), ignore_device)
        for ws in waiter.workspaces:
            self._by_workspace.setdefault(ws, set()).add(waiter)
        self._count += 1
        if self.closed:
            waiter.wake(time.monotonic())
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Unregister; safe to call twice (handlers call it in ``finally``)."""
        removed = False
        for ws in waiter.workspaces:
            waiters = self._by_workspace.get(ws)
            if waiters is not None and waiter in waiters:
                waiters.discard(waiter)
                removed = True
                if not waiters:
                    del self._by_workspace[ws]
        if removed:
            self._count -= 1

    def notify(self, workspace_id: str, seq: int, device_id: str | None) -> None:
        """A change to ``workspace_id`` committed: wake its waiters except the device's own."""
        self.generation += 1
        if seq == 0:
            self._view_epochs[workspace_id] = self._view_epochs.get(workspace_id, 0) + 1
        waiters = self._by_workspace.get(workspace_id)
        if not waiters:
            return
        now = time.monotonic()
        for waiter in waiters:
            if device_id is None or waiter.ignore_device != device_id:
                waiter.wake(now)

    def wake_all(self) -> None:
        """Wake every waiter to read the journal again: this process may have missed commits of
        others (its PostgreSQL listening connection was down, see :mod:`..meta.pg_listen`)."""
        self.generation += 1
        # A share change among what was missed must be read too: every view counts as changed.
        for workspace_id in {*self._view_epochs, *self._by_workspace}:
            self._view_epochs[workspace_id] = self._view_epochs.get(workspace_id, 0) + 1
        now = time.monotonic()
        for waiters in self._by_workspace.values():
            for waiter in waiters:
                waiter.wake(now)

    def waiter_count(self) -> int:
        return self._count

    def close(self) -> None:
        """Server shutdown: answer every waiting request now instead of at its timeout."""
        self.closed = True
        now = time.monotonic()
        for waiters in self._by_workspace.values():
            for waiter in waiters:
                waiter.wake(now)
