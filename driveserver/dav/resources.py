"""What a ``/dav/...`` URL names: a path in the asker's view of the drive (their own files at
``/``, folders shared with them under ``/Shared with me``, as in the API), resolved through the
same look-ups the API uses (``meta.mounts``, ``meta.tree``), and the hrefs and ETags WebDAV
answers carry."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from driveproto.names import SHARED_ROOT

from ..errors import ApiError, NotFound
from ..meta import mounts, tree
from ..meta.db import Row
from ..paths import split_path
from ..permissions import Action, authorize
from .errors import DavError

PREFIX = "/dav"


@dataclass
class Target:
    """A request URL resolved for one user.

    ``row`` is the live item there (a file whose first upload is still pending counts as
    absent: ``pending`` holds it), ``virtual`` marks ``/Shared with me`` itself, and
    ``parent`` is the folder the item is or would be in (None when that does not exist)."""

    parts: list[str]
    row: Row | None = None
    parent: Row | None = None
    virtual: bool = False
    pending: Row | None = None

    @property
    def exists(self) -> bool:
        return self.row is not None or self.virtual

    @property
    def is_collection(self) -> bool:
        return self.virtual or (self.row is not None and bool(self.row["is_directory"]))

    @property
    def href(self) -> str:
        return href_of(self.parts, self.is_collection)


def href_of(parts: list[str], collection: bool) -> str:
    path = "/".join(urllib.parse.quote(p, safe="") for p in parts)
    href = f"{PREFIX}/{path}" if path else f"{PREFIX}/"
    return href + "/" if collection and path else href


def parts_of_path(raw_path: str) -> list[str]:
    """The view path parts of a raw (percent-encoded) URL path under ``/dav``; 400 for a path
    outside it or one the API would refuse, 404 for one above it (``..``)."""
    if raw_path != PREFIX and not raw_path.startswith(PREFIX + "/"):
        raise DavError(403, "the URL is not under /dav/")
    segments = [urllib.parse.unquote(s, errors="strict")
                for s in raw_path[len(PREFIX):].split("/") if s not in ("", ".")]
    if ".." in segments:
        raise NotFound("no such resource")
    try:
        return split_path("/" + "/".join(segments))
    except ApiError as exc:
        raise DavError(400, exc.message) from None


def parts_of_request(request: web.Request) -> list[str]:
    try:
        return parts_of_path(request.rel_url.raw_path)
    except UnicodeDecodeError:
        raise DavError(400, "the URL is not UTF-8") from None


def parts_of_url(url: str) -> list[str]:
    """The view path of a ``Destination`` header or ``If`` tag: an absolute URL or path. Only
    the path counts: behind a reverse proxy the host a client names is rarely the one this
    process sees in ``Host``, and a copy to another server is nothing a client asks of us."""
    split = urllib.parse.urlsplit(url.strip())
    if not split.path.startswith("/"):
        raise DavError(400, "the URL must be absolute")
    try:
        return parts_of_path(split.path)
    except UnicodeDecodeError:
        raise DavError(400, "the URL is not UTF-8") from None


def is_shared_root(parts: list[str]) -> bool:
    return mounts.is_shared_root(parts) and len(parts) == 1


async def resolve(q: Any, user_id: str, parts: list[str]) -> Target:
    """The target at ``parts`` for ``user_id``, read-authorised: an item they cannot read is
    absent, as for the API (404, never a hint that it exists)."""
    target = Target(parts)
    if is_shared_root(parts):
        target.virtual = True
        return target
    try:
        base, rest = await mounts.view_base(q, user_id, parts)
    except NotFound:
        return target
    if base is None:
        target.virtual = True
        return target
    chain = await tree.walk(q, base["id"], rest)
    if rest and len(chain) >= len(rest) and chain[len(rest) - 1]["is_directory"]:
        target.parent = chain[len(rest) - 1]
    if len(chain) == len(rest) + 1:
        row = chain[-1]
        if not row["is_directory"] and int(row["version"]) == 0:
            target.pending = row
        else:
            target.row = row
    if target.row is not None:
        await authorize(q, user_id, Action.READ, target.row["id"])
    elif target.parent is not None:
        await authorize(q, user_id, Action.READ, target.parent["id"])
    return target


ETAG_CHARS = 32  # hex digits of the checksum: 128 bits, and If headers stay short


def etag(row: Row) -> str | None:
    """A file's ETag: the start of its content checksum (the current version's). Folders have
    none. Shorter than the API's (the whole checksum): clients build ``If`` headers of two
    lock tokens and two ETags, and litmus, for one, cuts such a header at 200 bytes."""
    if row["is_directory"] or not row["checksum"]:
        return None
    return f'"{str(row["checksum"])[:ETAG_CHARS]}"'


def shared_root_parts() -> list[str]:
    return [SHARED_ROOT]
