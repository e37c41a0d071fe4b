"""Links: anyone holding the URL may view (and, if allowed, download) a file or folder, without an
account.

Why it is built this way:

* The URL's token is a random secret (192 bits). Only its SHA-256 is stored, so a copy of the
  database (or a backup) does not hand out working links, and the owner's list never shows one.
* A link never grants more than its creator has: every use asks :func:`permissions.link_root`
  again whether the creator may still ``SHARE`` the file. Revoking the link, trashing the file
  (or a folder above it) or purging it (the row goes with it: the foreign key cascades) ends it.
* A link password is hashed with scrypt like an account password. It is sent once, to
  ``POST /s/{token}/unlock``, which trades it for a short-lived signed access token (its own
  purpose salt, bound to the link id and to the password hash), so guessing can happen only at
  ``unlock``, and ``unlock`` is throttled per link and per client address with the login
  back-off.
* Unknown, revoked or trashed → 404 ``link_not_found`` (a stranger learns nothing); expired →
  410 ``link_expired`` (the holder had a working URL; saying it expired reveals nothing new and
  lets a client show a useful message).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .. import appkeys
from ..auth import MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, hash_password
from ..connections import client_key
from ..errors import BadRequest, Forbidden, Gone, NotFound, Unauthorized
from ..forwarded import client_of
from ..meta import links, tree
from ..meta.archive import Member
from ..meta.db import Row, Tx
from ..meta.versions import version_row
from ..paths import join_path, split_path
from ..permissions import Action, authorize, authorize_link_admin, link_root
from ..previews.inline import inline_headers, inline_type
from .common import base_url, decode_page, encode_page, field, principal, query_int, read_json
from .download_routes import stream_version
from .web_routes import link_page, wants_page
from .zip_routes import folder_members, send_archive

routes = web.RouteTableDef()

ACCESS_PURPOSE = "link-access"   # TokenSigner salt: an access token is worthless anywhere else
ACCESS_SECONDS = 3600
PAGE_DEFAULT, PAGE_MAX = 200, 1000
# Link responses are for whoever holds the URL: no shared caches (a 304 still revalidates here,
# so a revoked link stops at once), no Referer carrying the token to other sites, no indexing.
PUBLIC_HEADERS = {"Cache-Control": "private, no-cache", "Referrer-Policy": "no-referrer",
                  "X-Robots-Tag": "noindex, nofollow"}


# --- input and output -------------------------------------------------------------------------

def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with ``Z`` — the form ``expires_at`` is given in."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_expiry(raw: object, now: float) -> float | None:
    """``expires_at`` as Unix seconds. It must name its time zone (``Z`` or ``+hh:mm``): a naive
    time is refused rather than guessed, because a wrong guess moves a security boundary by
    hours."""
    if raw is None:
        return None
    bad = BadRequest("expires_at must be an ISO 8601 date-time with a time zone, like"
                     " 2030-01-31T12:00:00Z", code="invalid_field", field="expires_at")
    if not isinstance(raw, str):
        raise bad
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise bad from None
    try:
        utc = when.astimezone(UTC) if when.tzinfo is not None else None
    except OverflowError:  # 0001-01-01 ahead of UTC or 9999-12-31 behind it (found by fuzzing)
        raise bad from None
    if utc is None or not 1970 < utc.year < 9999:
        raise bad
    ts = when.timestamp()
    if ts <= now:
        raise BadRequest("expires_at is in the past", code="invalid_field", field="expires_at")
    return ts


def _password(body: dict[str, Any]) -> str | None:
    password = field(body, "password", str, default=None)
    if password is None:
        return None
    if len(password) < MIN_PASSWORD_CHARS:
        raise BadRequest(f"password must have at least {MIN_PASSWORD_CHARS} characters",
                         code="weak_password", field="password")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise BadRequest(f"password may be at most {MAX_PASSWORD_BYTES} bytes",
                         code="invalid_field", field="password")
    return password


def _link_json(link: Row, now: float) -> dict[str, Any]:
    expires_at = link["expires_at"]
    return {"link_id": link["id"], "file_id": link["file_id"],
            "created_at": iso(link["created_at"]), "expires_at": iso(expires_at),
            "expired": expires_at is not None and expires_at <= now,
            "has_password": link["password_hash"] is not None,
            "allow_download": bool(link["allow_download"])}


# --- the owner's routes -----------------------------------------------------------------------

@routes.post("/api/files/{file_id}/links")
async def create_link(request: web.Request) -> web.Response:
    """A new link to a file or folder; only someone who may SHARE it (the owner) may."""
    p = principal(request)
    body = await read_json(request, allow_empty=True)
    now = time.time()
    expires_at = parse_expiry(body.get("expires_at"), now)
    password = _password(body)
    allow_download = field(body, "allow_download", bool, default=True)
    db = request.app[appkeys.DB]
    file_id = request.match_info["file_id"]
    # Check before hashing (scrypt costs ~50 ms), and hash outside the write transaction.
    file = await authorize(db, p.user_id, Action.SHARE, file_id)
    if file["trashed_at"] is not None:
        raise NotFound("no such file")
    cost = request.app[appkeys.CONFIG].password_hash_cost
    password_hash = await asyncio.to_thread(hash_password, password, cost) if password else None
    token = secrets.token_urlsafe(24)

    async def unit(tx: Tx) -> str:
        file = await authorize(tx, p.user_id, Action.SHARE, file_id)
        if file["trashed_at"] is not None:
            raise NotFound("no such file")
        return await links.insert_link(tx, file_id, p.user_id, token, now, expires_at,
                                       password_hash, allow_download)

    link_id = await db.write(unit)
    return web.json_response({
        "link_id": link_id, "url": f"{base_url(request)}/s/{token}", "file_id": file_id,
        "created_at": iso(now), "expires_at": iso(expires_at),
        "has_password": password_hash is not None, "allow_download": allow_download,
    }, status=201)


@routes.get("/api/files/{file_id}/links")
async def list_links(request: web.Request) -> web.Response:
    """The file's links that are not revoked (expired ones included, flagged); never a URL."""
    p = principal(request)
    db = request.app[appkeys.DB]
    file = await authorize(db, p.user_id, Action.SHARE, request.match_info["file_id"])
    now = time.time()
    return web.json_response({"file_id": file["id"], "links": [
        _link_json(link, now) for link in await links.live_links(db, file["id"])]})


@routes.delete("/api/links/{link_id}")
async def revoke_link(request: web.Request) -> web.Response:
    """Revoke a link. Anyone who may not SHARE its file gets 404: link ids are not theirs to
    learn about, even if they can see the file."""
    p = principal(request)

    async def unit(tx: Tx) -> None:
        link = await links.link_by_id(tx, request.match_info["link_id"])
        if link is None:
            raise NotFound("no such link")
        await authorize_link_admin(tx, p.user_id, link)
        await links.mark_revoked(tx, link["id"])

    await request.app[appkeys.DB].write(unit)
    return web.Response(status=204)


# --- the public routes (no account; the token in the path is the credential) ------------------

@dataclass(frozen=True)
class OpenLink:
    link: Row
    root: Row  # the linked file or folder


async def _open(request: web.Request) -> OpenLink:
    """The link named by the URL, if it still works; 404 or 410 otherwise."""
    db = request.app[appkeys.DB]
    link = await links.link_by_token(db, request.match_info["token"])
    not_found = NotFound("this link does not exist or was removed", code="link_not_found")
    root = None if link is None else await link_root(db, link)
    if link is None or root is None:
        raise not_found
    if link["expires_at"] is not None and link["expires_at"] <= time.time():
        raise Gone("this link has expired", code="link_expired")
    return OpenLink(link, root)


def _password_tag(link: Row) -> str:
    """Ties an access token to the password it was unlocked with, so a new password (or removing
    the link's row) voids the tokens minted for the old one."""
    return hashlib.sha256(str(link["password_hash"]).encode()).hexdigest()[:16]


def _require_access(request: web.Request, link: Row) -> None:
    """A password-protected link needs an access token from ``unlock`` on every request."""
    if link["password_hash"] is None:
        return
    token = request.headers.get("X-Link-Access") or request.query.get("access")
    if not token:
        raise Unauthorized("this link needs a password: POST {password} to its /unlock URL and"
                           " send the access_token as X-Link-Access", code="password_required")
    payload = request.app[appkeys.SIGNER].load(ACCESS_PURPOSE, token, max_age=ACCESS_SECONDS)
    if not isinstance(payload, dict) or payload.get("lid") != link["id"] \
            or payload.get("pw") != _password_tag(link):
        raise Unauthorized("the access token is invalid or expired; unlock the link again",
                           code="password_required")


async def _target(request: web.Request, opened: OpenLink) -> tuple[Row, list[str]]:
    """The item at ``?path=`` (relative to the linked folder; ``/`` by default).

    ``split_path`` refuses ``..`` and ``.``, and the walk goes only down through live children,
    so no path reaches outside the linked folder.
    """
    parts = split_path(request.query.get("path", "/"))
    if not parts:
        return opened.root, parts
    if not opened.root["is_directory"]:
        raise BadRequest("this link is to a file; it has no paths inside", code="not_a_folder")
    node = await tree.resolve(request.app[appkeys.DB], opened.root["id"], parts)
    if node is None or (not node["is_directory"] and node["version"] == 0):
        raise NotFound("no such file in this shared folder")
    return node, parts


def _public_entry(row: Row) -> dict[str, Any]:
    """What a link holder sees of an item: no ids, no owner, no history."""
    return {"name": row["name"], "is_directory": bool(row["is_directory"]), "size": row["size"],
            "modified_at": row["modified_at"]}


@routes.get("/s/{token}")
async def link_info(request: web.Request) -> web.Response:
    """What the link points at; for a folder, a page of its live children. A browser opening
    the link gets the link page instead, which asks this route for the JSON."""
    if wants_page(request):
        return link_page(request, PUBLIC_HEADERS)
    opened = await _open(request)
    _require_access(request, opened.link)
    node, parts = await _target(request, opened)
    link = opened.link
    body: dict[str, Any] = {**_public_entry(node), "path": join_path(parts),
                            "allow_download": bool(link["allow_download"]),
                            "expires_at": iso(link["expires_at"]),
                            "has_password": link["password_hash"] is not None}
    if node["is_directory"]:
        limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        after = decode_page(request.query["cursor"]) if "cursor" in request.query else None
        rows = await tree.list_children(request.app[appkeys.DB], node["id"], limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        body.update(entries=[_public_entry(r) for r in rows], has_more=more)
        if more:
            body["next_cursor"] = encode_page(rows[-1]["name_key"])
    return web.json_response(body, headers=PUBLIC_HEADERS)


@routes.get("/s/{token}/content")
async def link_content(request: web.Request) -> web.StreamResponse:
    """The linked file (or, for a folder link, the file at ``?path=``), streamed exactly like
    ``GET /api/files/{file_id}/content`` (current version only)."""
    opened = await _open(request)
    _require_access(request, opened.link)
    if not opened.link["allow_download"]:
        raise Forbidden("the owner turned off downloads for this link",
                        code="download_not_allowed")
    node, _ = await _target(request, opened)
    if node["is_directory"]:
        raise BadRequest("a folder has no content; name a file inside it with ?path=",
                         code="not_a_file")
    version = await version_row(request.app[appkeys.DB], node["id"], None)
    if version is None:
        raise NotFound("no such file in this shared folder")
    shown = inline_type(node["name"]) if request.query.get("inline") == "1" else None
    return await stream_version(request, node["name"], version,
                                {**PUBLIC_HEADERS, **(inline_headers(shown) if shown else {})})


@routes.get("/s/{token}/zip")
async def link_zip(request: web.Request) -> web.StreamResponse:
    """A folder link (or the folder at ``?path=`` inside it) as one zip, streamed like
    ``GET /api/files/zip``; counted against the link's own limit of downloads at once."""
    opened = await _open(request)
    _require_access(request, opened.link)
    if not opened.link["allow_download"]:
        raise Forbidden("the owner turned off downloads for this link",
                        code="download_not_allowed")
    node, parts = await _target(request, opened)
    if not node["is_directory"]:
        raise BadRequest("only a folder downloads as a zip; this is a file", code="not_a_folder")
    name = parts[-1] if parts else (node["name"] or "shared")

    async def plan() -> tuple[list[Member], str]:
        return await folder_members(request, node["id"], name), f"{name}.zip"
    return await send_archive(request, f"link:{opened.link['id']}", plan, PUBLIC_HEADERS)


@routes.post("/s/{token}/unlock")
async def unlock(request: web.Request) -> web.Response:
    """Trade the link's password for an access token. Wrong passwords are throttled per link and
    per client address (after 3, an exponential back-off; then even the right one waits)."""
    opened = await _open(request)
    link = opened.link
    body = await read_json(request, allow_empty=True)
    if link["password_hash"] is not None:
        password = field(body, "password", str)
        throttle = request.app[appkeys.THROTTLE]
        # Own key prefixes: failing at a link must not lock the same address out of logging in.
        keys = (f"link:{link['id']}", f"link-addr:{client_key(client_of(request))}")
        if not await throttle.check(password, link["password_hash"], keys,
                                    "too many wrong passwords for this link; try again later"):
            raise Forbidden("wrong password", code="wrong_password")
    token = request.app[appkeys.SIGNER].sign(
        ACCESS_PURPOSE, {"lid": link["id"], "pw": _password_tag(link)})
    return web.json_response({"access_token": token, "expires_in": ACCESS_SECONDS},
                             headers=PUBLIC_HEADERS)
