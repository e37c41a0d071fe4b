"""The password-check throttle's state, in the database so that every server process shares it.

With several processes behind a proxy, a throttle kept in each process's memory gave an
attacker one set of guesses per process. The policy (free failures, back-off, what a success
resets) is :class:`driveserver.auth.LoginThrottle`'s; this module only reads and writes the two
tables of migration 13, named by *key* (``acct:…``, ``link:…``, ``pwd:…``, ``addr:…``):

* ``throttle_failures``: per key, the failures since its last success and when the last one
  was. A row older than the throttle's ``forget_after`` counts as nothing and is pruned.
* ``throttle_checks``: the password checks running now, one row per key each counts against.
  Each is a *lease* that ends at ``expires_at``: a process killed between reserving and
  finishing leaves rows that stop counting when the lease ends, so nobody is locked out for
  good, and are deleted later (:func:`prune`).

Every function takes ``now`` (wall-clock seconds, the same clock on every process) instead of
reading a clock, so the caller decides and tests can move time. The statements are written
once for both backends; on PostgreSQL the units of work that call them run SERIALIZABLE, so two
processes reserving the last slot of a key cannot both succeed (one is retried, sees the
other's row and is refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .db import Tx

# What a table of failures may hold. An attacker who sprays addresses and emails adds at most
# two rows per password check (~50 ms of scrypt each), and rows past ``forget_after`` go; at
# the cap the oldest failures are forgotten first (see :func:`trim`).
MAX_ROWS = 100_000


@dataclass(frozen=True)
class KeyState:
    """What the throttle knows of one key at ``now``."""

    failures: int = 0  # since the last success, 0 when the last one is forgotten
    last_failed_at: float = 0.0
    in_flight: int = 0  # checks running (live leases)


def _marks(n: int) -> str:
    return ",".join("?" * n)


async def states(q: Any, keys: Sequence[str], now: float,
                 forget_after: float) -> dict[str, KeyState]:
    """Each key's state; ``q`` is a transaction or the database's reader (two indexed reads)."""
    marks = _marks(len(keys))
    failed = {r[0]: (int(r[1]), float(r[2])) for r in await q.fetchall(
        f"SELECT name, failures, last_failed_at FROM throttle_failures WHERE name IN ({marks})"
        " AND last_failed_at >= ?", (*keys, float(now - forget_after)))}
    running = {r[0]: int(r[1]) for r in await q.fetchall(
        f"SELECT name, COUNT(*) FROM throttle_checks WHERE name IN ({marks})"
        " AND expires_at > ? GROUP BY name", (*keys, float(now)))}
    return {k: KeyState(*failed.get(k, (0, 0.0)), running.get(k, 0)) for k in keys}


async def reserve(tx: Tx, keys: Sequence[str], check_id: str, expires_at: float,
                  now: float) -> None:
    """Count the check ``check_id`` as running on every key until ``expires_at`` (dropping
    these keys' ended leases on the way: the common leftovers of a killed process)."""
    await tx.execute(f"DELETE FROM throttle_checks WHERE name IN ({_marks(len(keys))})"
                     " AND expires_at <= ?", (*keys, float(now)))
    await tx.executemany("INSERT INTO throttle_checks (name, check_id, expires_at)"
                         " VALUES (?, ?, ?)", [(k, check_id, float(expires_at)) for k in keys])


async def release(tx: Tx, keys: Sequence[str], check_id: str, now: float) -> int:
    """The check is over: its leases go (nothing, if they ended and were pruned already). How
    many of them were still live at ``now`` (one per key when the check kept its count)."""
    marks = _marks(len(keys))
    live = int(await tx.fetchval(
        f"SELECT COUNT(*) FROM throttle_checks WHERE name IN ({marks}) AND check_id = ?"
        " AND expires_at > ?", (*keys, check_id, float(now))))
    await tx.execute(f"DELETE FROM throttle_checks WHERE name IN ({marks})"
                     " AND check_id = ?", (*keys, check_id))
    return live


async def record_failure(tx: Tx, keys: Sequence[str], now: float, forget_after: float) -> None:
    """One more failure on every key; a key whose last failure is forgotten starts at 1."""
    await tx.executemany(
        "INSERT INTO throttle_failures (name, failures, last_failed_at) VALUES (?, 1, ?)"
        " ON CONFLICT (name) DO UPDATE SET failures = CASE"
        " WHEN throttle_failures.last_failed_at < ? THEN 1"
        " ELSE throttle_failures.failures + 1 END,"
        # Never moved back: a process whose clock runs behind must not shorten the back-off
        # the others compute from it.
        " last_failed_at = CASE WHEN excluded.last_failed_at > throttle_failures.last_failed_at"
        " THEN excluded.last_failed_at ELSE throttle_failures.last_failed_at END",
        [(k, float(now), float(now - forget_after)) for k in keys])


async def forget(tx: Tx, key: str) -> None:
    """A success: ``key`` starts over."""
    await tx.execute("DELETE FROM throttle_failures WHERE name = ?", (key,))


async def prune(tx: Tx, now: float, forget_after: float, limit: int) -> int:
    """Delete at most ``limit`` forgotten failures and ``limit`` ended leases (bounded work,
    the oldest first); how many rows went."""
    gone = (await tx.execute(
        "DELETE FROM throttle_failures WHERE name IN (SELECT name FROM throttle_failures"
        " WHERE last_failed_at < ? ORDER BY last_failed_at LIMIT ?)",
        (float(now - forget_after), limit))).rowcount
    gone += (await tx.execute(
        "DELETE FROM throttle_checks WHERE (name, check_id) IN (SELECT name, check_id"
        " FROM throttle_checks WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
        (float(now), limit))).rowcount
    return max(0, gone)


async def trim(tx: Tx, cap: int, limit: int, free: int) -> int:
    """Past ``cap`` rows of failures, forget some (at most ``limit`` this time): first those
    with fewer than ``free`` failures, which hold no back-off, oldest first; only then the
    oldest others. Filling the table with fresh keys (two per failed check) so pushes out
    the attacker's own rows before any key that is backing off. How many rows went."""
    # Counting a full table takes milliseconds: off the event loop's thread (SQLite).
    rows = int(await tx.fetchval("SELECT COUNT(*) FROM throttle_failures", offload=True))
    if rows <= cap:
        return 0
    return max(0, (await tx.execute(
        "DELETE FROM throttle_failures WHERE name IN (SELECT name FROM throttle_failures"
        " ORDER BY CASE WHEN failures >= ? THEN 1 ELSE 0 END, last_failed_at LIMIT ?)",
        (free, min(rows - cap, limit)), offload=True)).rowcount)


async def row_counts(q: Any) -> tuple[int, int]:
    """Rows of failures and of leases (for tests and ``drive-server check``-style reports)."""
    return (int(await q.fetchval("SELECT COUNT(*) FROM throttle_failures")),
            int(await q.fetchval("SELECT COUNT(*) FROM throttle_checks")))
