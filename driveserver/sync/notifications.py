"""Notifications for people: what others did to files you own or can see.

They are derived from the journal rather than written by each route: every change is already
there, in order, with who made it. After a commit the :class:`Notifier` reads the workspace's new
journal entries and, for each one, notifies those who follow that workspace (its owner, and the
people a shared folder is shared with) other than who made the change. A recipient hears only
of entries after their share was given (``shares.granted_seq``), at the entry's path under their
mount: what happened before they had access, or above the folder they were given, is never
theirs to hear of. How far it has read each journal is kept in ``notify_marks``, written in the
same transaction as the notifications, so a crash neither loses nor duplicates any: the next run
reads on from the mark.

While nobody but the owner touches a workspace (no sharing yet), entries produce nothing, and
the mark is then stored only now and then, so the common case costs no extra write.

Repeated unread notifications of one kind (Bob edits the same file ten times) are folded into
one, with a ``count``, moved to the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from aiohttp import web

from .. import appkeys
from ..api.common import field, principal, query_int, read_json
from ..errors import BadRequest
from ..meta import notifications as notes_db
from ..meta.db import Database, Row

log = logging.getLogger("driveserver.notifications")

# Journal action → what the notification says happened.
NOTE_FOR_ACTION = {"create": "added", "modify": "edited", "move": "moved", "delete": "deleted",
                   "restore": "restored", "share": "shared", "unshare": "unshared"}
# Written by the sharing routes themselves, not derived from the journal: "shared" (to the
# recipient) and "left" (to the owner, when a recipient leaves a shared folder).
BATCH = 500
MARK_EVERY = 1000  # store a mark that produced nothing at least this often (bounds catch-up)
PAGE_DEFAULT, PAGE_MAX = 50, 500
MAX_IDS = 1000

routes = web.RouteTableDef()


class Notifier:
    """Turns journal entries into notifications, after their commit, one workspace at a time."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dirty: set[str] = set()
        self._marks: dict[str, int] = {}
        self._stored_marks: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def on_commit(self, workspace_id: str, seq: int, device_id: str | None) -> None:
        """The journal's post-commit listener: remember the workspace and start the worker."""
        if self._closed:
            return
        self._dirty.add(workspace_id)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def start(self) -> None:
        """Catch up on what a previous run (a crash) left unread."""
        for workspace_id in await notes_db.unread_workspaces(self._db):
            self.on_commit(workspace_id, 0, None)

    async def _drain(self) -> None:
        while self._dirty and not self._closed:
            workspace_id = self._dirty.pop()
            try:
                await self.process(workspace_id)
            except Exception:
                log.exception("notifications for workspace %s failed; will retry on its next"
                              " change", workspace_id)

    async def _mark(self, workspace_id: str) -> int:
        if workspace_id not in self._marks:
            value = await notes_db.notify_mark(self._db, workspace_id)
            self._marks[workspace_id] = self._stored_marks[workspace_id] = value
        return self._marks[workspace_id]

    async def process(self, workspace_id: str) -> int:
        """Read the workspace's unread journal entries; return how many notifications resulted."""
        created = 0
        async with self._lock:
            while True:
                mark = await self._mark(workspace_id)
                entries = await notes_db.entries_after(self._db, workspace_id, mark, BATCH)
                if not entries:
                    return created
                notes = await self._notes_for(workspace_id, entries)
                through = int(entries[-1]["seq"])
                if notes or through - self._stored_marks[workspace_id] >= MARK_EVERY:
                    await self._db.write(functools.partial(
                        notes_db.record_notifications, workspace_id=workspace_id, notes=notes,
                        through=through))
                    self._stored_marks[workspace_id] = through
                    created += len(notes)
                self._marks[workspace_id] = through
                if len(entries) < BATCH:
                    return created

    async def _notes_for(self, workspace_id: str, entries: list[Row]) -> list[dict[str, Any]]:
        owner_id = entries[0]["owner_id"]
        if all(e["user_id"] == owner_id for e in entries) and not (
                await notes_db.is_shared_workspace(self._db, workspace_id)):
            return []  # the owner alone in their own drive: nobody to tell
        audience = await notes_db.audience(self._db, workspace_id, owner_id)
        notes: list[dict[str, Any]] = []
        for e in entries:
            for viewer in audience:
                # Not of one's own changes, nor of what happened before one had access.
                if viewer.user_id == e["user_id"] or e["seq"] <= viewer.after_seq:
                    continue
                notes.append({
                    "user_id": viewer.user_id, "actor_id": e["user_id"],
                    "action": NOTE_FOR_ACTION.get(e["action"], e["action"]),
                    "file_id": e["file_id"], "workspace_id": workspace_id,
                    "path": (viewer.prefix + e["path"]) or "/",
                    "is_directory": bool(e["is_directory"]), "seq": e["seq"]})
        return notes

    async def close(self) -> None:
        """Stop the worker and store every mark that moved, so a clean restart reads nothing."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        moved = {ws: seq for ws, seq in self._marks.items()
                 if seq > self._stored_marks.get(ws, 0)}
        if moved:
            await self._db.write(functools.partial(notes_db.store_marks, marks=moved))
            self._stored_marks.update(moved)


# --- routes -----------------------------------------------------------------------------------

def _note_json(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "action": row["action"], "file_id": row["file_id"],
            "path": row["path"], "is_directory": bool(row["is_directory"]),
            "actor": {"user_id": row["actor_id"], "email": row["email"]},
            "count": row["count"], "created_at": row["created_at"],
            "read": row["read_at"] is not None, "read_at": row["read_at"]}


@routes.get("/api/notifications")
async def list_notifications(request: web.Request) -> web.Response:
    """Newest first, paged by ``before`` (an id); ``unread=true`` lists only unread ones."""
    p = principal(request)
    db = request.app[appkeys.DB]
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    before = query_int(request, "before", 2**62, 0, 2**62)
    unread = request.query.get("unread", "false").lower()
    if unread not in ("true", "false", "1", "0"):
        raise BadRequest("unread must be true or false", code="invalid_query", field="unread")
    rows = await notes_db.list_for(db, p.user_id, before, limit + 1,
                                   only_unread=unread in ("true", "1"))
    more = len(rows) > limit
    rows = rows[:limit]
    body: dict[str, Any] = {"notifications": [_note_json(r) for r in rows], "has_more": more,
                            "unread_count": await notes_db.unread_count(db, p.user_id)}
    if more:
        body["next_before"] = rows[-1]["id"]
    return web.json_response(body)


@routes.post("/api/notifications/read")
async def mark_read(request: web.Request) -> web.Response:
    """``{"ids": [...]}`` marks those (the caller's own only), ``{"all": true}`` marks all."""
    p = principal(request)
    body = await read_json(request)
    mark_all = field(body, "all", bool, default=False)
    ids = field(body, "ids", list, default=None)
    if mark_all == (ids is not None):
        raise BadRequest("give either 'ids' or 'all': true", code="missing_field", field="ids")
    if ids is not None and (len(ids) > MAX_IDS or not all(
            type(i) is int and 0 <= i < 2**63 for i in ids)):
        raise BadRequest(f"ids must be a list of at most {MAX_IDS} integers",
                         code="invalid_field", field="ids")
    db = request.app[appkeys.DB]
    marked = await db.write(functools.partial(notes_db.mark_read, user_id=p.user_id, ids=ids))
    return web.json_response({"marked": marked,
                              "unread_count": await notes_db.unread_count(db, p.user_id)})
