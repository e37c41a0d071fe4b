"""Conditional requests and write locks: ``If-Match``/``If-None-Match``, the ``If`` header,
and LOCK/UNLOCK (RFC 4918 sections 6, 7, 9.10, 9.11 and 10.4).

Every WebDAV write runs :func:`preconditions` inside its unit of work, before changing
anything: a false condition is 412, a lock whose token the request does not carry is 423.
The locks themselves are rows of ``meta.dav_locks``; what a lock covers is decided here: a
lock on an item covers it, a depth-infinity lock on a folder everything below it, and any lock
on a folder its membership (adding or removing a member needs its token).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .. import appkeys
from ..api.common import actor, principal
from ..meta import dav_locks, tree
from ..meta.dav_locks import INFINITY, Lock
from ..meta.db import Row, Tx
from ..permissions import Action, authorize, writable_base
from .errors import DavError
from .ifheader import IfList, etag_matches, parse_if, submitted_tokens
from .resources import Target, etag, parts_of_request, parts_of_url, resolve
from .xmlio import DAV, element_xml, read_xml, split_tag, text, xml_response

DEFAULT_TIMEOUT = 3600.0
MAX_TIMEOUT = 7 * 86400.0
MAX_LOCKS_PER_USER = 1000


def _token_of(lock: Lock) -> str:
    return f"opaquelocktoken:{lock.token}"


def _bare(token: str) -> str:
    return token.removeprefix("opaquelocktoken:")


async def covering_locks(q: Any, file_id: str, now: float) -> list[Lock]:
    """The live locks that cover ``file_id``: its own, and depth-infinity ones above it."""
    return [lock for lock, level in await dav_locks.locks_above(q, file_id, now)
            if level == 0 or lock.depth == INFINITY]


async def _if_lists_hold(q: Any, user_id: str, target: Target,
                         lists: list[IfList]) -> bool:
    """Whether at least one list of the ``If`` header is true (each list is all its
    conditions): a state token is true of a resource a live lock with that token covers, an
    entity tag of a resource whose ETag it is."""
    now = time.time()
    resolved: dict[str, Target] = {}
    for lst in lists:
        res = target
        if lst.resource is not None:
            if lst.resource not in resolved:
                try:
                    resolved[lst.resource] = await resolve(
                        q, user_id, parts_of_url(lst.resource))
                except DavError:
                    resolved[lst.resource] = Target([])
            res = resolved[lst.resource]
        row = res.row
        # A new name is covered by the locks of the folder it would be made in.
        covered = row if row is not None else res.parent
        held = {_token_of(lock) for lock in await covering_locks(q, covered["id"], now)} \
            if covered is not None else set()
        current = etag(row) if row is not None else None
        ok = True
        for c in lst.conditions:
            hit = c.value in held if c.kind == "token" else etag_matches(c.value, current)
            if hit == c.negated:
                ok = False
                break
        if ok:
            return True
    return False


async def preconditions(q: Any, request: web.Request, target: Target,
                        writes: Iterable[tuple[Row | None, bool]] = ()) -> set[str]:
    """Check the request's conditions against ``target`` and the locks on what it changes.

    ``writes`` lists the items the request changes, each with whether the change reaches
    everything below it (a DELETE or MOVE of a folder); a folder whose membership changes is
    listed as itself. 412 for a false ``If-Match``/``If-None-Match``/``If``, 423 for a lock
    whose token is missing. Returns the lock tokens the request submitted."""
    user_id = principal(request).user_id
    row = target.row
    current = etag(row) if row is not None else None
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        tags = [t.strip() for t in if_match.split(",")]
        if not target.exists or ("*" not in tags and current not in tags):
            raise DavError(412, "If-Match: the resource is not at that version")
    if_none = request.headers.get("If-None-Match")
    if if_none is not None and request.method not in ("GET", "HEAD"):
        tags = [t.strip() for t in if_none.split(",")]
        if ("*" in tags and target.exists) or (current is not None and current in tags):
            raise DavError(412, "If-None-Match: the resource exists at that version")
    tokens: set[str] = set()
    header = request.headers.get("If")
    if header is not None:
        lists = parse_if(header)
        if not await _if_lists_hold(q, user_id, target, lists):
            raise DavError(412, "the If header's conditions do not hold")
        tokens = submitted_tokens(lists)
    await require_unlocked(q, user_id, tokens, writes)
    return tokens


async def require_unlocked(q: Any, user_id: str, tokens: set[str],
                           writes: Iterable[tuple[Row | None, bool]]) -> None:
    """423 unless the request holds a token for every lock on what it changes (for shared
    locks on one item, one of them), taken by this user."""
    now = time.time()
    items = [(r, deep) for r, deep in writes if r is not None]
    if not items or not await dav_locks.any_live(q, now):
        return
    found: dict[str, Lock] = {}
    for row, deep in items:
        for lock in await covering_locks(q, row["id"], now):
            found[lock.token] = lock
        if deep and row["is_directory"]:
            for lock in await dav_locks.locks_below(q, row["id"], now):
                found[lock.token] = lock
    held = {t for t in found if _token_of(found[t]) in tokens and found[t].user_id == user_id}
    for lock in found.values():
        if lock.token in held:
            continue
        if lock.scope == "shared" and any(
                found[t].file_id == lock.file_id and found[t].scope == "shared" for t in held):
            continue
        raise DavError(423, "the resource is locked; send its lock token in an If header",
                       "lock-token-submitted")


def activelock_xml(lock: Lock) -> str:
    remaining = max(0, int(lock.expires_at - time.time()))
    owner = lock.owner
    return ("<D:activelock><D:locktype><D:write/></D:locktype>"
            f"<D:lockscope><D:{lock.scope}/></D:lockscope>"
            f"<D:depth>{'infinity' if lock.depth == INFINITY else '0'}</D:depth>"
            f"{owner}<D:timeout>Second-{remaining}</D:timeout>"
            f"<D:locktoken><D:href>{_token_of(lock)}</D:href></D:locktoken>"
            f"<D:lockroot><D:href>{text(lock.root)}</D:href></D:lockroot></D:activelock>")


def lockdiscovery_xml(locks: list[Lock]) -> str:
    return f"<D:lockdiscovery>{''.join(activelock_xml(lock) for lock in locks)}</D:lockdiscovery>"


SUPPORTED_LOCK = ("<D:supportedlock>"
                  "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope>"
                  "<D:locktype><D:write/></D:locktype></D:lockentry>"
                  "<D:lockentry><D:lockscope><D:shared/></D:lockscope>"
                  "<D:locktype><D:write/></D:locktype></D:lockentry></D:supportedlock>")


def _timeout(request: web.Request) -> float:
    """The first timeout of the ``Timeout`` header we can honour, capped at a week."""
    for part in request.headers.get("Timeout", "").split(","):
        part = part.strip()
        if part.lower() == "infinite":
            return MAX_TIMEOUT
        if part.lower().startswith("second-"):
            try:
                return float(min(MAX_TIMEOUT, max(1, int(part[7:]))))
            except ValueError:
                continue
    return DEFAULT_TIMEOUT


def _lock_response(lock: Lock, status: int) -> web.Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?>\n<D:prop xmlns:D="DAV:">'
            f"{lockdiscovery_xml([lock])}</D:prop>")
    return xml_response(body, status, {"Lock-Token": f"<{_token_of(lock)}>"})


def _lockinfo(root: Any) -> tuple[str, str]:
    """(scope, owner XML) of a ``lockinfo`` body; 400 for anything else."""
    if split_tag(root.tag) != (DAV, "lockinfo"):
        raise DavError(400, "a LOCK body must be a DAV:lockinfo")
    scope, owner, write = None, "", False
    for child in root:
        name = split_tag(child.tag)
        if name == (DAV, "lockscope"):
            for s in child:
                if split_tag(s.tag) in ((DAV, "exclusive"), (DAV, "shared")):
                    scope = split_tag(s.tag)[1]
        elif name == (DAV, "locktype"):
            write = any(split_tag(t.tag) == (DAV, "write") for t in child)
        elif name == (DAV, "owner"):
            owner = element_xml(child)
    if scope is None or not write:
        raise DavError(400, "a lock needs a lockscope (exclusive or shared) and locktype write")
    return scope, owner


async def lock(request: web.Request) -> web.Response:
    body = await read_xml(request)
    parts = parts_of_request(request)
    user_id = principal(request).user_id
    db = request.app[appkeys.DB]
    depth_header = request.headers.get("Depth", "infinity").strip().lower()
    if depth_header not in ("0", "infinity"):
        raise DavError(400, "a LOCK's Depth is 0 or infinity")
    timeout = _timeout(request)
    if body is None:
        return await _refresh(request, parts, timeout)
    scope, owner = _lockinfo(body)

    async def unit(tx: Tx) -> tuple[Lock, int]:
        target = await resolve(tx, user_id, parts)
        if target.virtual:
            raise DavError(403, "/Shared with me is managed by sharing and cannot be locked")
        status = 200
        if target.row is None:  # an unmapped URL: lock it as a new empty file (RFC 4918 7.3)
            if target.parent is None:
                raise DavError(409, "the parent folder does not exist")
            await preconditions(tx, request, target, [(target.parent, False)])
            target.row = await create_empty_file(request, tx, parts)
            status = 201
        else:
            await authorize(tx, user_id, Action.WRITE, target.row["id"])
            await preconditions(tx, request, target)
        row = target.row
        depth = INFINITY if depth_header == "infinity" and row["is_directory"] else 0
        existing = await covering_locks(tx, row["id"], tx.now)
        if depth == INFINITY:
            existing += await dav_locks.locks_below(tx, row["id"], tx.now)
        if any(e.scope == "exclusive" for e in existing) or (scope == "exclusive" and existing):
            raise DavError(423, "the resource is locked already", "no-conflicting-lock")
        if await dav_locks.live_locks_of(tx, user_id, tx.now) >= MAX_LOCKS_PER_USER:
            raise DavError(403, f"you hold {MAX_LOCKS_PER_USER} locks; unlock some first")
        new = Lock(uuid.uuid4().hex, row["id"], user_id, scope, depth, owner, target.href,
                   timeout, tx.now + timeout)
        await dav_locks.add_lock(tx, new)
        return new, status

    new, status = await db.write(unit)
    return _lock_response(new, status)


async def create_empty_file(request: web.Request, tx: Tx, parts: list[str]) -> Row:
    """A new empty file at ``parts`` (version 1, no blocks), through the tree and versions."""
    user_id = principal(request).user_id
    base, rest = await writable_base(tx, user_id, parts)
    file = await request.app[appkeys.TREE].create_file(tx, base, rest, actor(request))
    await request.app[appkeys.VERSIONS].commit(tx, file["id"], actor(request), [], 0, {})
    row = await tree.get_file(tx, file["id"])
    assert row is not None
    return row


async def _refresh(request: web.Request, parts: list[str], seconds: float) -> web.Response:
    user_id = principal(request).user_id
    header = request.headers.get("If")
    if header is None:
        raise DavError(400, "a LOCK without a body refreshes a lock: send its token in If")
    tokens = {_bare(t) for t in submitted_tokens(parse_if(header))}

    async def unit(tx: Tx) -> Lock:
        target = await resolve(tx, user_id, parts)
        if target.row is None:
            raise DavError(404 if not target.virtual else 403, "no such resource")
        for held in await covering_locks(tx, target.row["id"], tx.now):
            if held.token in tokens and held.user_id == user_id:
                await dav_locks.refresh_lock(tx, held.token, seconds)
                refreshed = await dav_locks.lock_by_token(tx, held.token, tx.now)
                assert refreshed is not None
                return refreshed
        raise DavError(412, "no lock of yours with that token covers this resource",
                       "lock-token-matches-request-uri")

    return _lock_response(await request.app[appkeys.DB].write(unit), 200)


async def unlock(request: web.Request) -> web.Response:
    raw = request.headers.get("Lock-Token", "").strip()
    if not (raw.startswith("<") and raw.endswith(">")):
        raise DavError(400, "UNLOCK needs a Lock-Token header: <opaquelocktoken:...>")
    token = _bare(raw[1:-1])
    parts = parts_of_request(request)
    user_id = principal(request).user_id

    async def unit(tx: Tx) -> None:
        target = await resolve(tx, user_id, parts)
        if target.row is None:
            raise DavError(404, "no such resource")
        held = {lk.token: lk for lk in await covering_locks(tx, target.row["id"], tx.now)}
        if token not in held:
            raise DavError(409, "that lock does not cover this resource",
                           "lock-token-matches-request-uri")
        if held[token].user_id != user_id:
            raise DavError(403, "that lock is someone else's")
        await dav_locks.remove_lock(tx, token)

    await request.app[appkeys.DB].write(unit)
    return web.Response(status=204)
