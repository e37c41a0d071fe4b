"""PROPFIND and PROPPATCH: live properties from the tree, dead ones from ``meta.dav_properties``.

Live properties (all in ``DAV:``) come from the item's row: ``resourcetype``,
``getcontentlength``, ``getcontenttype``, ``getetag`` (the ETag GET sends), ``getlastmodified``
(when its current version was made), ``creationdate``, ``displayname``, ``lockdiscovery``,
``supportedlock``, and RFC 4331's ``quota-used-bytes``/``quota-available-bytes`` (of the
workspace's owner; asked for by name only, as that RFC says). They are protected: PROPPATCH
cannot change them (403, and nothing else in the request is applied: 424).

A listing is written as one string with one query for the children (paged through the same
``list_children`` as the API), one for their dead properties and, only if any lock is held
anywhere, one per entry for its locks: Depth 1 of 10,000 entries is a few hundred ms.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import mimetypes
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

from aiohttp import web

from .. import appkeys
from ..api.common import principal
from ..meta import accounts, dav_locks, dav_properties, mounts, tree
from ..meta.db import Row, Tx
from ..permissions import Action, authorize
from .errors import DavError
from .locking import SUPPORTED_LOCK, covering_locks, lockdiscovery_xml, preconditions
from .resources import Target, etag, href_of, parts_of_request, resolve
from .xmlio import DAV, element_xml, multistatus, read_xml, split_tag, tag_xml, text, xml_response

Name = tuple[str, str]
LIVE = ("resourcetype", "getcontentlength", "getcontenttype", "getetag", "getlastmodified",
        "creationdate", "displayname", "lockdiscovery", "supportedlock")
QUOTA = ("quota-used-bytes", "quota-available-bytes")
PROTECTED = {(DAV, n) for n in LIVE + QUOTA}
LIVE_NAMES = frozenset(LIVE + QUOTA)
PAGE = 5000
OFFLOAD_ENTRIES = 200
MAX_NAMED = 1000  # properties one PROPFIND or PROPPATCH may name
OK, NOT_FOUND = "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"
# Types a browser would run if it ignored Content-Disposition: GET sends them as bytes.
ACTIVE_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml",
                "application/xml", "text/javascript", "application/javascript")


def content_type(name: str) -> str:
    return _type_of(name.rpartition(".")[2].lower() if "." in name else "")


@functools.lru_cache(maxsize=1024)
def _type_of(extension: str) -> str:
    """By extension only (what ``mimetypes`` looks at), once per extension."""
    found = mimetypes.guess_type(f"x.{extension}", strict=False)[0] if extension else None
    return found or "application/octet-stream"


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


class Entry:
    """One item of a PROPFIND answer: a row (or the virtual ``/Shared with me``), its href
    and the name it has there."""

    def __init__(self, href: str, row: Row | None, name: str,
                 dead: dict[Name, str] | None = None) -> None:
        self.href, self.row, self.name = href, row, name
        self.dead = dead or {}
        self.locks: list[dav_locks.Lock] = []

    @property
    def collection(self) -> bool:
        return self.row is None or bool(self.row["is_directory"])

    def live(self, name: str, quota: tuple[int, int] | None) -> str | None:
        """The inner XML of live property ``name``, or None when the item has none."""
        row = self.row
        if name == "resourcetype":
            return "<D:collection/>" if self.collection else ""
        if name == "displayname":
            return text(self.name)
        if name == "supportedlock":
            return SUPPORTED_LOCK[len("<D:supportedlock>"):-len("</D:supportedlock>")]
        if name == "lockdiscovery":
            return lockdiscovery_xml(self.locks)[len("<D:lockdiscovery>"):
                                                 -len("</D:lockdiscovery>")]
        if name in QUOTA:
            if not self.collection or quota is None:
                return None
            return str(quota[0] if name == "quota-used-bytes" else quota[1])
        if row is None:
            return None
        if name == "getlastmodified":
            return http_date(row["modified_at"])
        if name == "creationdate":
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["created_at"]))
        if self.collection:
            return None
        if name == "getcontentlength":
            return str(row["size"])
        if name == "getcontenttype":
            return text(content_type(row["name"]))
        if name == "getetag":
            return text(etag(row) or "")
        return None

    def response(self, mode: str, names: list[Name], quota: tuple[int, int] | None) -> str:
        found: list[str] = []
        missing: list[str] = []
        if mode == "propname":
            found = [tag_xml(DAV, n) for n in LIVE if self.live(n, None) is not None]
            found += [tag_xml(ns, n) for ns, n in self.dead]
        else:
            wanted: Iterable[Name] = names
            if mode == "allprop":
                wanted = [*((DAV, n) for n in LIVE), *self.dead,
                          *(n for n in names if n not in self.dead)]
            for ns, n in dict.fromkeys(wanted):
                value = self.live(n, quota) if ns == DAV and n in LIVE_NAMES else None
                if value is not None:
                    found.append(tag_xml(ns, n, value))
                elif (ns, n) in self.dead:
                    found.append(self.dead[(ns, n)])
                elif mode != "allprop" or (ns, n) in names:
                    missing.append(tag_xml(ns, n))
        out = f"<D:response><D:href>{text(self.href)}</D:href>"
        if found or not missing:
            out += f"<D:propstat><D:prop>{''.join(found)}</D:prop><D:status>{OK}</D:status>" \
                   "</D:propstat>"
        if missing:
            out += f"<D:propstat><D:prop>{''.join(missing)}</D:prop>" \
                   f"<D:status>{NOT_FOUND}</D:status></D:propstat>"
        return out + "</D:response>"


def _propfind_request(body: Any) -> tuple[str, list[Name]]:
    """(mode, names) of a PROPFIND body: allprop (with any ``include``d names), propname, or
    prop with the names asked for."""
    if body is None:
        return "allprop", []
    if split_tag(body.tag) != (DAV, "propfind"):
        raise DavError(400, "a PROPFIND body must be a DAV:propfind")
    mode, names = "", []
    for child in body:
        tag = split_tag(child.tag)
        if tag == (DAV, "allprop"):
            mode = "allprop"
        elif tag == (DAV, "propname"):
            mode = "propname"
        elif tag == (DAV, "prop"):
            mode = mode or "prop"
            names += [split_tag(p.tag) for p in child]
        elif tag == (DAV, "include"):
            names += [split_tag(p.tag) for p in child]
    if not mode:
        raise DavError(400, "a propfind names allprop, propname or prop")
    if len(names) > MAX_NAMED:
        raise DavError(413, f"a PROPFIND may name at most {MAX_NAMED} properties")
    return mode, names


async def propfind(request: web.Request) -> web.StreamResponse:
    depth = request.headers.get("Depth", "infinity").strip().lower()
    if depth == "infinity":
        raise DavError(403, "Depth: infinity is not supported; ask with Depth 0 or 1",
                       "propfind-finite-depth")
    if depth not in ("0", "1"):
        raise DavError(400, "Depth must be 0, 1 or infinity")
    mode, names = _propfind_request(await read_xml(request))
    p = principal(request)
    db = request.app[appkeys.DB]
    parts = parts_of_request(request)
    target = await resolve(db, p.user_id, parts)
    if not target.exists:
        raise DavError(404, "no such resource")
    wants_quota = any(ns == DAV and n in QUOTA for ns, n in names)
    memo: dict[str, tuple[int, int]] = {}
    locked = await dav_locks.any_live(db, time.time())

    async def rendered(entries: list[Entry]) -> str:
        quotas: dict[str, tuple[int, int] | None] = {}
        for e in entries:
            if locked and e.row is not None:
                # Someone else's lock names its root as the asker sees this item: the path
                # it was taken at is the locker's view (their names for a share's mounts).
                e.locks = [lk if lk.user_id == p.user_id else replace(lk, root=e.href)
                           for lk in await covering_locks(db, e.row["id"], time.time())]
            if wants_quota and e.collection:  # a file has no quota properties
                quotas[e.href] = await _quota(db, p.user_id, e.row, memo)

        def render() -> str:
            return "".join(e.response(mode, names, quotas.get(e.href)) for e in entries)

        # ~20 µs of string work per entry: a page of thousands is written off the loop.
        return render() if len(entries) < OFFLOAD_ENTRIES else await asyncio.to_thread(render)

    first = await rendered([await _self_entry(db, target)])
    if depth == "0" or not target.is_collection:
        return xml_response(multistatus([first]))
    # A folder's entries go out a page at a time: memory stays bounded by a page however
    # many entries it has (the status and headers are settled by then).
    resp = web.StreamResponse(status=207, headers={"Content-Type":
                                                   "application/xml; charset=utf-8"})
    await resp.prepare(request)
    head, _, tail = multistatus(["\0"]).partition("\0")
    await resp.write((head + first).encode())
    async for page in _children(db, p.user_id, target):
        await resp.write((await rendered(page)).encode())
    await resp.write(tail.encode())
    await resp.write_eof()
    return resp


async def _self_entry(db: Any, target: Target) -> Entry:
    name = target.parts[-1] if target.parts else ""
    if target.row is None:
        return Entry(target.href, None, name)
    dead = (await dav_properties.properties_of(db, [target.row["id"]])).get(target.row["id"])
    return Entry(target.href, target.row, name, dead)


async def _children(db: Any, user_id: str, target: Target) -> AsyncIterator[list[Entry]]:
    """The entries of a folder (or of ``/Shared with me``), a page at a time."""
    parts = target.parts
    if target.virtual:
        out = []
        for m in (await mounts.mounts_for(db, user_id)).values():
            if m.share_id is None or m.mount_name is None:
                continue
            root = await tree.get_file(db, m.root_id)
            if root is not None:
                out.append(Entry(href_of([*parts, m.mount_name], True), root, m.mount_name))
        yield out
        return
    assert target.row is not None
    folder_id = target.row["id"]
    after = None
    while True:
        rows = await tree.list_children(db, folder_id, PAGE, after)
        dead = await dav_properties.properties_of(db, [r["id"] for r in rows])
        yield [Entry(href_of([*parts, r["name"]], bool(r["is_directory"])), r, r["name"],
                     dead.get(r["id"])) for r in rows]
        if len(rows) < PAGE:
            break
        after = rows[-1]["name_key"]
    if not parts and any(m.share_id for m in (await mounts.mounts_for(db, user_id)).values()):
        yield [Entry(href_of([mounts.SHARED_ROOT], True), None, mounts.SHARED_ROOT)]


async def _quota(db: Any, user_id: str, row: Row | None,
                 memo: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    """(used, available) bytes of the owner whose quota ``row`` counts against."""
    if row is None:
        owner_id, quota = user_id, None
    else:
        owner = await accounts.workspace_owner(db, row["workspace_id"])
        if owner is None:
            return None
        owner_id, quota = owner["id"], int(owner["quota_bytes"])
    if owner_id not in memo:
        if quota is None:
            user = await accounts.user_by_id(db, owner_id)
            quota = int(user["quota_bytes"]) if user is not None else 0
        used = await accounts.used_bytes(db, owner_id)
        memo[owner_id] = (used, max(0, quota - used))
    return memo[owner_id]


# --- PROPPATCH ----------------------------------------------------------------------------------

def _updates(body: Any) -> list[tuple[str, Name, str]]:
    """The ordered (``set``/``remove``, name, element XML) of a ``propertyupdate``."""
    if body is None or split_tag(body.tag) != (DAV, "propertyupdate"):
        raise DavError(400, "a PROPPATCH body must be a DAV:propertyupdate")
    out = []
    for op in body:
        kind = split_tag(op.tag)
        if kind not in ((DAV, "set"), (DAV, "remove")):
            continue
        for prop in op:
            if split_tag(prop.tag) != (DAV, "prop"):
                continue
            for elem in prop:
                out.append((kind[1], split_tag(elem.tag), element_xml(elem)))
    if not out:
        raise DavError(400, "a propertyupdate sets or removes at least one property")
    if len(out) > MAX_NAMED:
        raise DavError(413, f"a PROPPATCH may name at most {MAX_NAMED} properties")
    return out


async def proppatch(request: web.Request) -> web.Response:
    updates = _updates(await read_xml(request))
    p = principal(request)
    parts = parts_of_request(request)

    async def unit(tx: Tx) -> str:
        target = await resolve(tx, p.user_id, parts)
        if target.row is None:
            raise DavError(404 if not target.virtual else 403, "no such resource")
        row = await authorize(tx, p.user_id, Action.WRITE, target.row["id"])
        await preconditions(tx, request, target, [(row, False)])
        names = [tag_xml(ns, n) for _, (ns, n), _ in updates]
        refused = [(ns, n) in PROTECTED for _, (ns, n), _ in updates]
        if any(refused):
            stats = [("HTTP/1.1 403 Forbidden" if r else "HTTP/1.1 424 Failed Dependency", x)
                     for r, x in zip(refused, names, strict=True)]
            return _patch_response(target.href, stats)
        for kind, (ns, n), value in updates:
            if kind == "set":
                await dav_properties.set_property(tx, row["id"], ns, n, value)
            else:
                await dav_properties.remove_property(tx, row["id"], ns, n)
        if await dav_properties.count_properties(tx, row["id"]) > dav_properties.MAX_PER_ITEM:
            raise DavError(507, f"an item may carry at most {dav_properties.MAX_PER_ITEM}"
                           " dead properties")
        return _patch_response(target.href, [(OK, x) for x in names])

    return xml_response(multistatus([await request.app[appkeys.DB].write(unit)]))


def _patch_response(href: str, stats: list[tuple[str, str]]) -> str:
    out = f"<D:response><D:href>{text(href)}</D:href>"
    for status, prop in stats:
        out += f"<D:propstat><D:prop>{prop}</D:prop><D:status>{status}</D:status></D:propstat>"
    return out + "</D:response>"
