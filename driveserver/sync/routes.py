"""The change feed over HTTP (cursor, long poll, snapshot) and ``setup_sync``, which wires it.

The long poll registers its waiter *before* it reads the journal, so a commit that lands between
the read and the wait still wakes it; the waiter is removed in ``finally``, so a client that
disconnects (the app runs with handler cancellation) frees it at once.

What the user sees (their mounts) and what changed in that since a cursor is
:mod:`driveserver.sync.views`; the feed's reads are :mod:`driveserver.sync.feed`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import appkeys
from ..api.common import principal, query_int
from ..config import Config
from ..errors import BadRequest, NotFound
from ..meta.accounts import Principal
from ..meta.mounts import SHARED_ROOT, Mount
from ..permissions import own_device
from . import notifications, views
from .cursor import (
    SNAPSHOT_CURSOR,
    Cursor,
    DeviceCursors,
    decode_cursor,
    encode_cursor,
)
from .entries import Change
from .feed import Feed, Page, in_view, snapshot_page
from .hub import Hub
from .notifications import Notifier

FEED: web.AppKey[Feed] = web.AppKey("sync.feed", Feed)
DEVICE_CURSORS: web.AppKey[DeviceCursors] = web.AppKey("sync.device_cursors", DeviceCursors)
NOTIFIER: web.AppKey[Notifier] = web.AppKey("sync.notifier", Notifier)
# The other processes' commits, heard on PostgreSQL (meta.pg_listen.JournalListener); None on
# SQLite. Typed loosely: asyncpg, which it needs, is not installed with SQLite alone.
PG_LISTENER: web.AppKey[Any] = web.AppKey("sync.pg_listener", object)

PAGE_DEFAULT, PAGE_MAX = 1000, 5000
RESET: dict[str, Any] = {"reset": True, "changes": [], "next_cursor": "0", "has_more": True}

routes = web.RouteTableDef()


def _listener_for(app: web.Application, hub: Hub) -> Any:
    """On PostgreSQL, what makes the commits of other server processes wake this one's long
    polls (:mod:`..meta.pg_listen`); on SQLite, one process serves the database: None."""
    origin = getattr(app[appkeys.DB], "origin", None)
    url = app[appkeys.CONFIG].database_url
    if not url or origin is None:
        return None
    from ..meta.pg_listen import JournalListener  # asyncpg: only with the postgres extra

    return JournalListener(url, origin, hub.notify, hub.wake_all)


def setup_sync(app: web.Application) -> None:
    """Create the hub, feed, device cursors and notifier, subscribe them to the journal, and
    register the sync and notification routes with their startup and shutdown hooks."""
    db = app[appkeys.DB]
    hub = Hub()
    app[appkeys.HUB] = hub
    app[FEED] = Feed(db)
    app[DEVICE_CURSORS] = cursors = DeviceCursors(db)
    app[NOTIFIER] = notifier = Notifier(db)
    journal = app[appkeys.JOURNAL]
    journal.subscribe(hub.notify)
    journal.subscribe(notifier.on_commit)
    app[PG_LISTENER] = listener = _listener_for(app, hub)

    async def wake_waiters(app: web.Application) -> None:
        # Shutdown waits for running handlers: answer long polls now, not at their timeout.
        hub.close()

    async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
        await notifier.start()
        if listener is not None:
            await listener.start()
        yield
        if listener is not None:
            await listener.close()
        # Registered after the database context, so this runs while the database is open.
        await notifier.close()
        await cursors.close()

    app.on_shutdown.append(wake_waiters)
    app.cleanup_ctx.append(sync_ctx)
    app.add_routes(routes)
    app.add_routes(notifications.routes)


# --- request parsing --------------------------------------------------------------------------

async def _device(request: web.Request, p: Principal) -> str | None:
    """The device the request speaks for: ``device_id`` if given (one of the user's), else the
    device the token is bound to, else None."""
    device_id = request.query.get("device_id")
    if device_id is None:
        return p.device_id
    if not await own_device(request.app[appkeys.DB], p.user_id, device_id):
        raise NotFound("no such device")
    return device_id


def _timeout(request: web.Request, config: Config) -> float:
    raw = request.query.get("timeout")
    if raw is None:
        return config.longpoll_default_seconds
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise BadRequest("timeout must be a number of seconds", code="invalid_query",
                         field="timeout")
    return max(0.0, min(config.longpoll_max_seconds, value))


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest(f"{name} must be true or false", code="invalid_query", field=name)
    return raw in ("true", "1")


# --- reading for a request -------------------------------------------------------------------

async def _snapshot(request: web.Request, p: Principal, cursor: Cursor, limit: int
                    ) -> tuple[list[Change], str, bool]:
    result = await views.in_one_view(request.app[appkeys.HUB], p.workspace_id,
                                     lambda: _snapshot_page(request, p, cursor, limit),
                                     views.share_marker(request.app[appkeys.DB], p.user_id))
    if result is None:  # the user's shares kept changing: nothing this time, ask again
        same = SNAPSHOT_CURSOR if cursor.positions is None else encode_cursor(
            request.app[appkeys.SIGNER], cursor)
        return [], same, True
    return result


async def _snapshot_page(request: web.Request, p: Principal, cursor: Cursor, limit: int
                         ) -> tuple[list[Change], str, bool]:
    db = request.app[appkeys.DB]
    view, seqs = await views.read_view(db, p.user_id)
    roots = {ws: m.root_id for ws, m in view.items()}
    entries: list[Change] = []
    if cursor.positions is None:
        # Taken before the tree is read: whatever changes from here on reaches the client
        # through the journal, even what the listing misses while it is paged.
        positions = dict(seqs)
        # The mount points of folders shared with the user come first, as folders.
        shared = [m for m in view.values() if m.share_id is not None]
        if shared:
            now = time.time()
            entries.append(views.synthetic(shared[0].workspace_id, views.SHARED_ROOT_ID,
                                           f"/{SHARED_ROOT}", "create", now))
            entries += [views.synthetic(m.workspace_id, m.root_id, m.prefix, "create", now)
                        for m in shared]
        mounts = views.grantee_mounts(view)
    elif cursor.listing:
        # The contents of folders newly shared with the user, after their mount folders came
        # (views.view_changes). One taken back meanwhile is left out; its delete follows.
        mounts = dict(cursor.mounts or {})
        roots = {ws: view[ws].root_id for ws in cursor.listing if ws in view}
        positions = {ws: p for ws, p in cursor.positions.items() if ws in view}
    else:
        # A folder shared with the user while the listing is paged is not listed in it (the
        # listing's order may have passed it already, and its position would be 0, the whole
        # journal of the folder): it comes after the listing, as a new mount. One gone
        # meanwhile stays in ``mounts``, so its delete comes after the listing too.
        mounts = dict(cursor.mounts or {})
        roots = {ws: r for ws, r in roots.items()
                 if view[ws].share_id is None or ws in mounts}
        positions = views.visible_positions(cursor.positions, roots)
    # The listing must show each tree as it is at (or after) the position its journal
    # continues from, and a shared folder as it is since it was shared with the user: never
    # from an older state the reading connection may still hold.
    fresh = {ws: max(positions.get(ws, 0), view[ws].granted_seq) for ws in roots}
    page, mark = await snapshot_page(db, roots, cursor.snapshot, limit, fresh)
    entries += [in_view(c, view[c.workspace_id]) for c in page]
    listing = cursor.listing if mark is not None else None
    next_cursor = encode_cursor(request.app[appkeys.SIGNER],
                                Cursor(p.user_id, positions, mark, mounts, listing))
    # The end of a new mount's listing is not the end of the answer: the journal entries made
    # while it was paged follow at once.
    return entries, next_cursor, mark is not None or bool(cursor.listing)


async def _long_poll(app: web.Application, positions: dict[str, int], own: str | None,
                     limit: int, seconds: float,
                     view_changed: Callable[[], Awaitable[bool]] | None = None,
                     ) -> tuple[Page, list[Change], float | None]:
    """Read the feed after ``positions``; if nothing is there for this device, wait for a commit
    (or ``seconds``) and read again. Returns the last page read, its changes for the device
    (``own`` device's own left out), and when the waking commit was announced."""
    hub, feed, metrics = app[appkeys.HUB], app[FEED], app[appkeys.METRICS]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    woke_at: float | None = None
    last_read = False
    waiter = hub.add(positions, own)  # before the first read, so no commit slips through
    metrics.open_longpolls.inc()
    try:
        while True:
            waiter.arm()
            page = await feed.page(positions, limit, hub.generation)
            if page.reset:
                return page, [], None
            out = [c for c in page.changes if not c.only_from(own)]
            positions = page.positions
            if out or last_read or hub.closed:
                return page, out, woke_at
            if page.has_more:
                continue  # a full page of this device's own changes: read on
            remaining = deadline - loop.time()
            if remaining > 0 and await waiter.wait(remaining):
                woke_at = waiter.woken_at
                if view_changed is not None and await view_changed():
                    return page, out, woke_at
            elif own is None or remaining <= 0:
                return page, out, woke_at
            else:
                # Timed out. The device's own commits did not wake it, so read once more to
                # move its cursor past them (they would otherwise come back next time).
                last_read = True
    finally:
        hub.remove(waiter)
        metrics.open_longpolls.dec()


# --- routes -----------------------------------------------------------------------------------

@routes.get("/api/sync/cursor")
async def get_cursor(request: web.Request) -> web.Response:
    """The current position ("start from now")."""
    p = principal(request)
    db = request.app[appkeys.DB]
    view, positions = await views.read_view(db, p.user_id)
    return web.json_response({"cursor": encode_cursor(
        request.app[appkeys.SIGNER],
        Cursor(p.user_id, positions, None, views.grantee_mounts(view)))})


@routes.get("/api/sync/changes")
async def get_changes(request: web.Request) -> web.Response:
    """Changes after a cursor: at once if there are any, else when one commits, else at the
    timeout. Without ``cursor``, the device's stored (acknowledged) cursor is used."""
    p = principal(request)
    app = request.app
    device_id = await _device(request, p)
    include_own = _flag(request, "include_own")
    timeout = _timeout(request, app[appkeys.CONFIG])
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    signer, cursors = app[appkeys.SIGNER], app[DEVICE_CURSORS]
    token = request.query.get("cursor")
    if token is None:
        if device_id is None:
            raise BadRequest("cursor is required when the token is not bound to a device",
                             code="missing_field", field="cursor")
        token = await cursors.stored(device_id)
        if token is None:
            raise BadRequest("this device has no stored cursor: start with cursor=0",
                             code="no_cursor", field="cursor")
        cursor = decode_cursor(signer, token, p.user_id)
    else:
        cursor = decode_cursor(signer, token, p.user_id)
        if device_id is not None:
            cursors.ack(device_id, token)  # polling with a cursor acknowledges it
    if cursor.in_snapshot:
        entries, next_cursor, more = await _snapshot(request, p, cursor, limit)
        return web.json_response({"changes": [c.to_json() for c in entries],
                                  "next_cursor": next_cursor, "has_more": more})

    assert cursor.positions is not None
    db = app[appkeys.DB]
    hub = app[appkeys.HUB]
    unsettled = web.json_response({"changes": [], "next_cursor": token, "has_more": True})

    marker = views.share_marker(db, p.user_id)  # several processes: see views.in_one_view

    async def read_view() -> tuple[int, object, dict[str, Mount], views.ViewChange | None]:
        # The epoch is taken before the view is read: either the view shows a share change
        # (revoke, leave, re-share), or the epoch differs by the time the journal page below
        # is read, and the view is read again before anything is answered (views.in_one_view).
        epoch = hub.view_epoch(p.workspace_id)
        mark = await marker() if marker is not None else None
        view, seqs = await views.read_view(db, p.user_id)
        return epoch, mark, view, await views.view_changes(db, cursor, view, seqs)

    settled = await views.in_one_view(hub, p.workspace_id, read_view, marker)
    if settled is None:
        return unsettled
    epoch, mark, view, shared_change = settled
    if shared_change is not None:
        return web.json_response({
            "changes": [c.to_json() for c in shared_change.changes], "has_more": True,
            "next_cursor": encode_cursor(signer, shared_change.cursor(p.user_id, view))})
    start = positions = views.visible_positions(cursor.positions, view)

    async def view_changed() -> bool:  # no database query: thousands of polls wake at once
        return hub.view_epoch(p.workspace_id) != epoch

    own = None if include_own else device_id
    page, out, woke_at = await _long_poll(app, positions, own, limit, timeout, view_changed)
    if page.reset:
        return web.json_response(RESET)
    positions = page.positions
    out = [in_view(c, view[c.workspace_id]) for c in out if c.workspace_id in view]
    shared_change = None
    # Before answering, with several processes, the database too: a revoke committed by another
    # process whose announcement has not arrived yet (the page may hold entries from after it).
    if await view_changed() or (marker is not None and await marker() != mark):
        async def read_new_view() -> tuple[dict[str, Mount], views.ViewChange | None]:
            new_view, seqs = await views.read_view(db, p.user_id)
            return new_view, await views.view_changes(
                db, Cursor(p.user_id, positions, None, cursor.mounts), new_view, seqs,
                since=start)

        changed = await views.in_one_view(hub, p.workspace_id, read_new_view, marker)
        if changed is None:
            return unsettled  # the page is read again next time, with a settled view
        new_view, shared_change = changed
    if shared_change is not None:  # a folder was shared or unshared while this poll waited
        # What the page holds of a mount gone or given anew is not the user's to see any more
        # (it may be from after the revoke): the delete and the fresh listing replace it.
        out = [c for c in out if c.workspace_id not in shared_change.dropped]
        return web.json_response({
            "changes": [c.to_json() for c in out + shared_change.changes], "has_more": True,
            "next_cursor": encode_cursor(signer, shared_change.cursor(p.user_id, new_view))})
    if positions == cursor.positions:
        text = json.dumps({"changes": [c.to_json() for c in out], "next_cursor": token,
                           "has_more": page.has_more})
    else:
        # Everyone who shared this page and asks for the same user and device gets the same
        # answer: build it once.
        key = (p.user_id, own, tuple(sorted(positions.items())))
        text = page.answers.get(key) or page.answers.setdefault(key, json.dumps({
            "changes": [c.to_json() for c in out],
            "next_cursor": encode_cursor(signer, Cursor(p.user_id, positions, None,
                                                        views.grantee_mounts(view))),
            "has_more": page.has_more}))
    if out and woke_at is not None:
        app[appkeys.METRICS].wake_latency.observe(time.monotonic() - woke_at)
    return web.json_response(text=text)


@routes.get("/api/sync/snapshot")
async def get_snapshot(request: web.Request) -> web.Response:
    """The whole live tree, paged; the last page's ``next_cursor`` continues with changes."""
    p = principal(request)
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    token = request.query.get("cursor", "").strip() or "0"
    cursor = decode_cursor(request.app[appkeys.SIGNER], token, p.user_id)
    if not cursor.in_snapshot:
        raise BadRequest("not a snapshot cursor: pass it to /api/sync/changes",
                         code="invalid_cursor", field="cursor")
    entries, next_cursor, more = await _snapshot(request, p, cursor, limit)
    return web.json_response({"entries": [c.to_json() for c in entries],
                              "next_cursor": next_cursor, "has_more": more})
