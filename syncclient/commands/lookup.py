"""What a command line path names: a path in the sync folder or on the server, and the live
item there (for the commands over the API)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from driveproto.replies import ListedEntry, PathEntry

from .. import config as cfg
from ..errors import ApiError, SyncClientError
from ..remote import Remote
from .display import shown


async def with_remote(config_dir: Path) -> tuple[cfg.Config, Remote]:
    conf = cfg.load(config_dir)
    return conf, Remote(conf.server, cfg.load_token(config_dir))


async def find_entry(remote: Remote, path: str) -> ListedEntry | None:
    """The live item at the server path ``path``, or None (its folder may be missing too)."""
    path = "/" + path.strip("/")
    parent, _, name = path.rpartition("/")
    try:
        entries = await remote.list_folder(parent or "/")
    except ApiError as exc:
        if exc.status != 404:
            raise
        return None
    return next((e for e in entries if e["name"] == name), None)


async def resolve_entry(remote: Remote, path: str) -> ListedEntry:
    entry = await find_entry(remote, path)
    if entry is None:
        raise ApiError(404, "not_found", f"{shown(path)} is not on the server")
    return entry


def file_id_of(entry: ListedEntry | PathEntry, path: str) -> str:
    """The server's id of the item ``entry`` lists at ``path``. The virtual ``/Shared with me``
    has none: the server lists it in the root of someone who has shares but stores nothing
    there, so it has no versions and nothing to restore (and asking the server about the id
    ``None`` would only say "not found")."""
    file_id = entry["file_id"]
    if file_id is None:
        raise SyncClientError(f"{shown(path)} only lists the folders shared with you; it has no "
                              "versions of its own (name a file inside one of them)")
    return file_id


def remote_path_of(conf: cfg.Config, path: str) -> str:
    """The server path a command line argument names. A path that lies inside the sync folder,
    absolute or relative to the current directory (``./Laptop/a.txt`` or ``Laptop/a.txt`` from
    the folder's parent, ``a.txt`` from inside it), names the item synced there; any other is a
    server path (``/Work/a.txt``, or ``a.txt`` for ``/a.txt``) — except ``./x`` and ``../x``,
    which can only mean a local path."""
    here = Path(os.path.abspath(Path(path).expanduser()))  # ".." folded, symlinks kept
    # The folder is stored resolved: also try the path with its parent's symlinks resolved.
    for candidate in (here, here.parent.resolve() / here.name):
        if candidate == conf.root or conf.root in candidate.parents:
            inside = candidate.relative_to(conf.root).as_posix()  # "." for the root
            return unicodedata.normalize("NFC", "/" if inside == "." else "/" + inside)
    if path in (".", "..") or path.startswith(("./", "../", "~")):
        raise SyncClientError(f"{shown(path)} is not inside the sync folder {shown(conf.folder)}")
    return unicodedata.normalize("NFC", "/" + path.strip("/"))
