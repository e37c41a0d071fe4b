"""The database meter of bench/cache_bench.py: every statement the server runs in this process,
counted and timed, and charged to the route of the request it ran for.

The backends' statement methods (``Tx``/``PgTx`` execute, executemany, fetchone, fetchall; the
``Database``/``PgDatabase`` reads; a snapshot's begin and end) and whole write transactions
(``db.write``) are wrapped with a timer, and aiohttp's ``Application._handle`` with a label
naming the route (a context variable, so the tasks a handler starts carry it too). A statement
outside a write transaction is one a cache could answer instead; one inside cannot be.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from driveserver.meta import db as sqlite_db

# --- the meter -------------------------------------------------------------------------------

LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("bench_label", default="other")
_ROUTES = ((re.compile(r"^/api/files$"), "list"), (re.compile(r"^/api/files/upload-init$"), "init"),
           (re.compile(r"^/blocks/upload$"), "blocks"),
           (re.compile(r"^/api/files/[^/]+/complete$"), "complete"),
           (re.compile(r"^/api/sync/changes$"), "longpoll"))


@dataclass
class Stat:
    count: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds


@dataclass
class Meter:
    """Per route label: requests handled, statements (outside / inside write transactions),
    write transactions, and each read statement's text."""

    handled: dict[str, Stat] = field(default_factory=lambda: defaultdict(Stat))
    reads: dict[str, Stat] = field(default_factory=lambda: defaultdict(Stat))
    in_tx: dict[str, Stat] = field(default_factory=lambda: defaultdict(Stat))
    writes: dict[str, Stat] = field(default_factory=lambda: defaultdict(Stat))
    texts: dict[tuple[str, str], Stat] = field(default_factory=lambda: defaultdict(Stat))

    def reset(self) -> None:
        for table in (self.handled, self.reads, self.in_tx, self.writes, self.texts):
            table.clear()

    def statement(self, sql: str, seconds: float) -> None:
        label = LABEL.get()
        if sqlite_db.writing():
            self.in_tx[label].add(seconds)
        else:
            self.reads[label].add(seconds)
            self.texts[(label, " ".join(sql.split())[:90])].add(seconds)


METER = Meter()


# The reads of metadata that every request repeats and that change only when a session,
# share or folder changes: the session, the owner of a workspace, the user's mounts (their
# own and shared workspaces, the paths of their shared folders), the user's root, the GC
# epoch. With ``IDEAL`` on, such a read outside a write transaction is answered from a dict
# that is never invalidated (nothing changes these rows while it is on): the most any cache
# of them could save, with no invalidation cost at all.
CACHEABLE = ("SELECT s.id, s.user_id, s.device_id, s.expires_at, u.workspace_id, d.removed_at",
             "SELECT owner_id FROM workspaces WHERE id = ?",
             "SELECT root_id FROM workspaces WHERE id = ?",
             "SELECT w.id, w.kind, w.root_id, f.trashed_at FROM workspaces w",
             "SELECT s.id, s.permission, s.mount_name, s.granted_seq",
             "WITH RECURSIVE up(id, parent_id, name, depth)",
             "SELECT f.* FROM users u JOIN workspaces w ON w.id = u.workspace_id",
             "SELECT dropped FROM gc_epoch")
IDEAL: dict[tuple[str, str, str, tuple[Any, ...]], Any] = {}
IDEAL_ON = [False]


def _timed_statement(orig: Callable[..., Any]) -> Callable[..., Any]:
    name = orig.__name__

    async def timed(self: Any, sql: str, params: Any = (), *args: Any, **kw: Any) -> Any:
        key = None
        if (IDEAL_ON[0] and name.startswith("fetch") and not sqlite_db.writing()
                and sql.startswith(CACHEABLE)):
            key = (type(self).__name__, name, sql, tuple(params))
            if key in IDEAL:
                return IDEAL[key]
        start = time.perf_counter()
        try:
            result = await orig(self, sql, params, *args, **kw)
        finally:
            METER.statement(sql, time.perf_counter() - start)
        if key is not None:
            IDEAL[key] = result
        return result
    return timed




def _timed_write(orig: Callable[..., Any]) -> Callable[..., Any]:
    async def timed(self: Any, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return await orig(self, *args, **kw)
        finally:
            METER.writes[LABEL.get()].add(time.perf_counter() - start)
    return timed


def _timed_snapshot(orig: Callable[..., Any]) -> Callable[..., Any]:
    @asynccontextmanager
    async def timed(self: Any) -> AsyncIterator[Any]:
        cm = orig(self)
        start = time.perf_counter()
        tx = await cm.__aenter__()
        METER.statement("(snapshot begin)", time.perf_counter() - start)
        try:
            yield tx
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            start = time.perf_counter()
            await cm.__aexit__(None, None, None)
            METER.statement("(snapshot end)", time.perf_counter() - start)
    return timed


def install_meter() -> None:
    """Wrap both backends' statement methods and aiohttp's request entry (see the docstring).
    ``fetchval`` is left alone: it calls ``fetchone``, which counts it once."""
    from driveserver.meta import pg

    for cls in (sqlite_db.Tx, pg.PgTx, sqlite_db.Database, pg.PgDatabase):
        for name in ("execute", "executemany", "fetchone", "fetchall"):
            if name in vars(cls):
                setattr(cls, name, _timed_statement(vars(cls)[name]))
    for dbcls in (sqlite_db.Database, pg.PgDatabase):
        dbcls.write = _timed_write(vars(dbcls)["write"])  # type: ignore[method-assign]
        dbcls.snapshot = _timed_snapshot(vars(dbcls)["snapshot"])  # type: ignore[method-assign]
    handle = web.Application._handle

    async def labelled(self: web.Application, request: web.Request) -> web.StreamResponse:
        label = next((name for pattern, name in _ROUTES if pattern.match(request.path)), "other")
        token = LABEL.set(label)
        start = time.perf_counter()
        try:
            return await handle(self, request)
        finally:
            METER.handled[label].add(time.perf_counter() - start)
            LABEL.reset(token)

    web.Application._handle = labelled  # type: ignore[method-assign]


