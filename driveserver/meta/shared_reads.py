"""One database read shared by the callers that ask for the same thing at once — never a cache.

Measured by bench/cache_bench.py (issue 18, docs/scale-out.md "Caching"): when one commit
wakes 500 long polls of a user on PostgreSQL, each poll reads the user's revoke mark
(:func:`.accounts.revocations_of`) before answering, and 500 identical reads queued on the
pool's 8 connections made the fan-out twice as slow as on SQLite. The mark cannot be cached:
it is there to see a revoke another process committed *before its notification arrives*, so a
copy invalidated by that notification would defeat it. What is safe is to share a read among
the callers that asked for it *before it was sent*: a read that starts after you asked sees
everything committed before you asked, exactly as your own read would. So a caller joins a
read that has not started yet, or starts a new one; it never gets the result of a read that
began before it asked. Callers of the same loop pass share one read (it is sent on the next
pass), which is how a fan-out asks.

One :class:`SharedReads` per database object (:class:`.pg.PgDatabase` holds it): keys name
what is read in that database, e.g. ``("revocations", user_id)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SharedReads:
    """Reads keyed by what they read; each caller gets a read sent after it asked."""

    def __init__(self) -> None:
        self.enabled = True  # bench/cache_bench.py measures with it off, beside
        self._waiting: dict[Hashable, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.reads = 0  # reads sent (tests and the bench read these two)
        self.joined = 0  # callers served by a read another caller asked for first

    async def read(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()``'s result, from a read that starts after this call: the one already
        waiting to be sent for ``key``, or a new one."""
        if not self.enabled:
            self.reads += 1
            return await fn()
        future = self._waiting.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            # An error nobody awaits any more (every caller cancelled) is not "never retrieved".
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._waiting[key] = future
            task = loop.create_task(self._send(key, future, fn))
            self._tasks.add(task)  # the loop keeps tasks only weakly
            task.add_done_callback(self._tasks.discard)
        else:
            self.joined += 1
        # Shielded: a caller that is cancelled leaves; the read goes on for the others.
        return await asyncio.shield(future)

    async def _send(self, key: Hashable, future: asyncio.Future[Any],
                    fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            await asyncio.sleep(0)  # the callers of this loop pass join first
            # From here on the read is being sent: whoever asks now must not join it.
            del self._waiting[key]
            self.reads += 1
            result = await fn()
        except asyncio.CancelledError:  # the loop is closing: nobody is left to answer
            future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001  (every caller gets it)
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            if self._waiting.get(key) is future:  # cancelled before it was sent
                del self._waiting[key]
