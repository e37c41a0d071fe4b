"""``ls``, ``versions``, ``restore`` and ``trash``: the server's files, their versions and the
trash, over the API."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from driveproto.replies import ListedEntry, PathEntry

from ..errors import ApiError, NotConfigured, SyncClientError
from ..remote import Remote
from .display import shown
from .lookup import file_id_of, find_entry, remote_path_of, resolve_entry, with_remote


async def cmd_ls(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await with_remote(config_dir)
    async with remote:
        for e in await remote.list_folder(remote_path_of(conf, args.path)):
            kind = "d" if e["is_directory"] else "-"
            print(f"{kind} {e['size']:>12} v{e['version']:<4} {shown(e['name'])}")
    return 0


async def cmd_versions(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await with_remote(config_dir)
    async with remote:
        path = remote_path_of(conf, args.path)
        entry = await resolve_entry(remote, path)
        for v in await remote.versions(file_id_of(entry, path)):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["modified_at"]))
            extra = f" (restored from {v['restored_from']})" if v.get("restored_from") else ""
            print(f"v{v['version']:<4} {when} {v['size']:>12} bytes  "
                  f"{shown(v.get('device') or '-')}{extra}")
    return 0


async def cmd_restore(args: argparse.Namespace, config_dir: Path) -> int:
    """``restore PATH``: a deleted item back from the trash (the latest deletion at PATH);
    ``restore PATH --version N``: an old version of a file as its newest (also of a deleted
    file: it comes back from the trash first); ``restore --trash-id ID``: the trash item ID."""
    if (args.path is None) == (args.trash_id is None):
        raise NotConfigured("give the PATH to restore, or --trash-id ID (see `drive-sync trash`)")
    conf, remote = await with_remote(config_dir)
    async with remote:
        entry: PathEntry | ListedEntry | None
        if args.trash_id is not None:
            entry = await remote.restore_from_trash(args.trash_id)
            where = entry["path"]
            print(f"Restored {shown(where)} from the trash; the folders get it at their "
                  "next sync.")
        else:
            where = remote_path_of(conf, args.path)
            entry = await find_entry(remote, where)
            if entry is None:
                entry = await _untrash(remote, where)
                where = entry["path"]  # another name if the old one was taken meanwhile
            elif args.version is None:
                raise SyncClientError(
                    f"{shown(where)} is not deleted: give --version N to restore an old version "
                    f"(`drive-sync versions {shown(where)}` lists them)")
        if args.version is not None:
            out = await remote.restore(file_id_of(entry, where), args.version)
            print(f"Restored {shown(where)} to the content of v{args.version} as "
                  f"v{out['version']}; the folders get it at their next sync.")
    return 0


async def _untrash(remote: Remote, path: str) -> PathEntry:
    """Restore the latest deletion at ``path`` from the trash; the restored entry."""
    trash = await remote.trash()  # newest first
    item = next((e for e in trash if e["path"] == path), None)
    if item is None:
        folder = next((e for e in trash if path.startswith(e["path"].rstrip("/") + "/")), None)
        if folder is not None:
            raise SyncClientError(f"{shown(path)} was deleted with its folder: restore that "
                                  f"with `drive-sync restore {shown(folder['path'])}`")
        raise ApiError(404, "not_found", f"{shown(path)} is neither on the server nor in the "
                       "trash (`drive-sync trash` lists what can be restored)")
    entry = await remote.restore_from_trash(item["file_id"])
    moved = f" as {shown(entry['path'])} (the name was taken)" if entry["path"] != path else ""
    print(f"Restored {shown(path)} from the trash{moved}; the folders get it at their next "
          "sync.")
    return entry


async def cmd_trash(args: argparse.Namespace, config_dir: Path) -> int:
    """One deleted item a line (not what was below a deleted folder): when, size, the id for
    ``restore --trash-id`` and where it was; ``restore PATH`` brings back the latest."""
    _, remote = await with_remote(config_dir)
    async with remote:
        entries = await remote.trash()
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["trashed_at"]))
        kind = "d" if e["is_directory"] else "-"
        print(f"{when}  {kind} {e['size']:>12}  {e['file_id']}  "
              f"{shown(e['path'] + ('/' if e['is_directory'] else ''))}")
    if entries:
        print("Restore one with `drive-sync restore PATH` (its latest deletion) or "
              "`drive-sync restore --trash-id ID`.", file=sys.stderr)
    else:
        print("The trash is empty.")
    return 0
