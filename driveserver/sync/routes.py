"""The change feed over HTTP (cursor, long poll, snapshot) and ``setup_sync``, which wires it.

The long poll registers its waiter *before* it reads the journal, so a commit that lands between
the read and the wait still wakes it; the waiter is removed in ``finally``, so a client that
disconnects (the app runs with handler cancellation) frees it at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from .. import appkeys
from ..api.common import principal, query_int
from ..config import Config
from ..errors import BadRequest, NotFound
from ..meta.accounts import Principal
from ..meta.changes import current_positions
from ..meta.db import Database
from ..meta.mounts import SHARED_ROOT, Mount, mounts_for
from ..meta.tree import get_file
from ..permissions import own_device
from . import notifications
from .cursor import (
    SNAPSHOT_CURSOR,
    Cursor,
    DeviceCursors,
    SnapshotMark,
    decode_cursor,
    encode_cursor,
)
from .entries import Change
from .feed import Feed, Page, StaleRead, in_view, snapshot_page
from .hub import Hub
from .notifications import Notifier

FEED: web.AppKey[Feed] = web.AppKey("sync.feed", Feed)
DEVICE_CURSORS: web.AppKey[DeviceCursors] = web.AppKey("sync.device_cursors", DeviceCursors)
NOTIFIER: web.AppKey[Notifier] = web.AppKey("sync.notifier", Notifier)

PAGE_DEFAULT, PAGE_MAX = 1000, 5000
# How often a read is done again when the user's shares change while it runs (_in_one_view).
VIEW_TRIES = 3
RESET: dict[str, Any] = {"reset": True, "changes": [], "next_cursor": "0", "has_more": True}

routes = web.RouteTableDef()
T = TypeVar("T")


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

    async def wake_waiters(app: web.Application) -> None:
        # Shutdown waits for running handlers: answer long polls now, not at their timeout.
        hub.close()

    async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
        await notifier.start()
        yield
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


def _visible(positions: Mapping[str, int], roots: Mapping[str, Any]) -> dict[str, int]:
    """Positions for exactly the workspaces the user sees now (a new one starts at 0)."""
    return {ws: positions.get(ws, 0) for ws in roots}


async def _read_view(db: Database, user_id: str) -> tuple[dict[str, Mount], dict[str, int]]:
    """The user's mounts and each one's current journal position, read fresh and together.

    Read on the database's snapshot connection, in one read transaction begun now: the shared
    reading connection may still serve an older state (its read transaction lasts while any of
    the statements interleaved on it is unfinished), and a view older than a revoke whose hook
    has run would let a journal page or listing read after the revoke through (_in_one_view).
    The lookups are indexed and few (one per folder the user owns that is shared)."""
    async with db.snapshot() as q:
        view = await mounts_for(q, user_id)
        return view, await current_positions(q, view)


def _grantee_mounts(view: Mapping[str, Mount]) -> dict[str, tuple[str, str]]:
    return {ws: (m.root_id, m.prefix) for ws, m in view.items() if m.share_id is not None}


def _synthetic(ws: str, file_id: str, path: str, action: str, at: float) -> Change:
    return Change(seq=None, workspace_id=ws, file_id=file_id, path=path, old_path=None,
                  action=action, version=0, size=0, checksum=None, is_directory=True,
                  device_id=None, user_id=None, modified_at=at)


SHARED_ROOT_ID = "virtual:shared-with-me"


async def _mount_folder(db: Any, mount: Mount, first: bool) -> list[Change]:
    """A folder newly shared with the user, as creates: ``/Shared with me`` (if ``first``) and
    the mount folder. What is in it follows in pages (``Cursor.listing``)."""
    now = time.time()
    root = await get_file(db, mount.root_id)
    assert root is not None, mount  # it was mounted (not in the trash) when the view was read
    out = [_synthetic(mount.workspace_id, SHARED_ROOT_ID, f"/{SHARED_ROOT}", "create", now)] \
        if first else []
    out.append(dataclasses.replace(
        _synthetic(mount.workspace_id, mount.root_id, mount.prefix, "create", now),
        version=root["version"], modified_at=root["modified_at"]))
    return out


@dataclasses.dataclass(frozen=True)
class ViewChange:
    """What changed in which folders are shared with the user: the changes that say so (deletes
    of mounts gone, listings of mounts new), the positions after them, and the workspaces whose
    journal entries must not reach the user from before (a mount gone or given anew)."""

    changes: list[Change]
    positions: dict[str, int]
    dropped: frozenset[str]
    listing: tuple[str, ...] = ()  # mounts new to the user, whose contents follow in pages

    def cursor(self, user_id: str, view: Mapping[str, Mount]) -> Cursor:
        """Where the holder stands after these changes: listing the new mounts, if any."""
        mark = SnapshotMark(self.listing[0], 0, "") if self.listing else None
        return Cursor(user_id, self.positions, mark, _grantee_mounts(view),
                      self.listing or None)


def _renewed(view: Mapping[str, Mount], had: Mapping[str, tuple[str, str]],
             since: Mapping[str, int]) -> set[str]:
    """Mounts the holder has that were given anew since: revoked (or left) and shared again.

    A position taken while the current share existed is never behind its ``granted_seq`` (the
    share's transaction read it, and positions are read after the share is seen), so a
    position behind it comes from an earlier grant. The journal between would show the holder
    what happened while they had no access; the new grant is a new mount instead."""
    return {ws for ws, m in view.items() if m.share_id is not None and ws in had
            and (since.get(ws, -1) < m.granted_seq or had[ws][1] != m.prefix)}


async def _view_changes(db: Any, cursor: Cursor, view: Mapping[str, Mount],
                        seqs: Mapping[str, int], since: Mapping[str, int] | None = None
                        ) -> ViewChange | None:
    """What changed in *which folders are shared with the user* since ``cursor``: a folder
    shared since comes as a full listing (its journal does not hold what was there before:
    here its mount folder, then its contents in pages, see ``Cursor.listing``), one unshared
    since as a delete, one shared anew (revoked, then shared again) as both, so that nothing of
    the time between reaches the user. None when nothing changed.

    ``seqs`` are the journal positions read with ``view`` (_read_view): a new mount's journal
    continues from there. ``since`` are the positions to judge renewals by (default: the
    cursor's); a long poll passes the ones it started from, since the page it read may have
    moved past a re-grant.
    """
    assert cursor.positions is not None
    had = cursor.mounts or {}
    renewed = _renewed(view, had, cursor.positions if since is None else since)
    added = [m for ws, m in view.items()
             if m.share_id is not None and (ws not in had or ws in renewed)]
    gone = [ws for ws in had if ws not in view or ws in renewed]
    if not added and not gone:
        return None
    now = time.time()
    out = [_synthetic(ws, had[ws][0], had[ws][1], "delete", now) for ws in gone]
    positions = {ws: p for ws, p in cursor.positions.items() if ws in view and ws not in gone}
    first = not any(m.share_id is not None for ws, m in view.items()
                    if ws in had and ws not in renewed)
    for m in added:
        positions[m.workspace_id] = seqs[m.workspace_id]  # taken before the listing
        out += await _mount_folder(db, m, first)
        first = False
    return ViewChange(out, positions, frozenset(gone),
                      tuple(sorted(m.workspace_id for m in added)))


async def _in_one_view(hub: Hub, workspace_id: str, read: Callable[[], Awaitable[T]]
                       ) -> T | None:
    """``read()`` (which reads the user's mounts, then trees or journal below them), again
    while a share change of the user's (share, revoke, leave) commits during it; None if one
    did every time. A share change bumps the hub's view epoch after its commit and before any
    later write begins (post-commit hooks run under the write lock), and ``read`` reads the
    mounts fresh (_read_view) after the epoch is taken, so an unchanged epoch means that
    nothing ``read`` saw was written after a change its mounts do not show: no listing of a
    folder taken back meanwhile, no page of what happened after a revoke. Listings check that
    they are not older than the view (``StaleRead``)."""
    for _ in range(VIEW_TRIES):
        epoch = hub.view_epoch(workspace_id)
        try:
            result = await read()
        except StaleRead:  # a listing older than the view it lists for: read again
            continue
        if hub.view_epoch(workspace_id) == epoch:
            return result
    return None


async def _snapshot(request: web.Request, p: Principal, cursor: Cursor, limit: int
                    ) -> tuple[list[Change], str, bool]:
    result = await _in_one_view(request.app[appkeys.HUB], p.workspace_id,
                                lambda: _snapshot_page(request, p, cursor, limit))
    if result is None:  # the user's shares kept changing: nothing this time, ask again
        same = SNAPSHOT_CURSOR if cursor.positions is None else encode_cursor(
            request.app[appkeys.SIGNER], cursor)
        return [], same, True
    return result


async def _snapshot_page(request: web.Request, p: Principal, cursor: Cursor, limit: int
                         ) -> tuple[list[Change], str, bool]:
    db = request.app[appkeys.DB]
    view, seqs = await _read_view(db, p.user_id)
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
            entries.append(_synthetic(shared[0].workspace_id, SHARED_ROOT_ID,
                                      f"/{SHARED_ROOT}", "create", now))
            entries += [_synthetic(m.workspace_id, m.root_id, m.prefix, "create", now)
                        for m in shared]
        mounts = _grantee_mounts(view)
    elif cursor.listing:
        # The contents of folders newly shared with the user, after their mount folders came
        # (_view_changes). One taken back meanwhile is left out; its delete follows.
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
        positions = _visible(cursor.positions, roots)
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
    view, positions = await _read_view(db, p.user_id)
    return web.json_response({"cursor": encode_cursor(
        request.app[appkeys.SIGNER], Cursor(p.user_id, positions, None, _grantee_mounts(view)))})


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

    async def read_view() -> tuple[int, dict[str, Mount], ViewChange | None]:
        # The epoch is taken before the view is read: either the view shows a share change
        # (revoke, leave, re-share), or the epoch differs by the time the journal page below
        # is read, and the view is read again before anything is answered (_in_one_view).
        epoch = hub.view_epoch(p.workspace_id)
        view, seqs = await _read_view(db, p.user_id)
        return epoch, view, await _view_changes(db, cursor, view, seqs)

    settled = await _in_one_view(hub, p.workspace_id, read_view)
    if settled is None:
        return unsettled
    epoch, view, shared_change = settled
    if shared_change is not None:
        return web.json_response({
            "changes": [c.to_json() for c in shared_change.changes], "has_more": True,
            "next_cursor": encode_cursor(signer, shared_change.cursor(p.user_id, view))})
    start = positions = _visible(cursor.positions, view)

    async def view_changed() -> bool:  # no database query: thousands of polls wake at once
        return hub.view_epoch(p.workspace_id) != epoch

    own = None if include_own else device_id
    page, out, woke_at = await _long_poll(app, positions, own, limit, timeout, view_changed)
    if page.reset:
        return web.json_response(RESET)
    positions = page.positions
    out = [in_view(c, view[c.workspace_id]) for c in out if c.workspace_id in view]
    shared_change = None
    if await view_changed():
        async def read_new_view() -> tuple[dict[str, Mount], ViewChange | None]:
            new_view, seqs = await _read_view(db, p.user_id)
            return new_view, await _view_changes(
                db, Cursor(p.user_id, positions, None, cursor.mounts), new_view, seqs,
                since=start)

        changed = await _in_one_view(hub, p.workspace_id, read_new_view)
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
                                                        _grantee_mounts(view))),
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
