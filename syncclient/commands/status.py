"""``status`` (what the daemon is doing, and what the folder holds that needs a look) and
``resume`` (confirm a paused mass deletion)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..state import State
from .display import shown


async def cmd_status(args: argparse.Namespace, config_dir: Path) -> int:
    conf = cfg.load(config_dir)
    if getattr(args, "ignored", False):
        return await asyncio.to_thread(_print_ignored, conf.root)
    state = State(config_dir / cfg.STATE_FILE)
    try:
        try:
            status = json.loads((config_dir / cfg.STATUS_FILE).read_text())
        except (OSError, ValueError):
            status = {"state": "stopped"}
        if status.get("pid") and not _alive(int(status["pid"])) and \
                status.get("state") != "stopped":
            status["state"] = f"not running (last sync: {state_text(status, state)})"
        paused = state.get("paused")
        print(f"Folder:  {shown(conf.folder)}")
        print(f"Server:  {conf.server} ({conf.email}, device {shown(conf.device_name)})")
        print(f"State:   {'paused' if paused else state_text(status, state)}")
        if paused:
            print(f"Paused:  {shown(paused)}")
        if status.get("pending"):
            print(f"Pending: {status['pending']} operation(s): {status.get('uploads', 0)} "
                  f"to the server, {status.get('downloads', 0)} to the folder")
        if status.get("progress"):
            print(f"Transfer: {shown(status['progress'])}")
        synced = state.synced_entries()
        conflicts = sorted(p for p in synced if "conflicted copy" in p)
        print(f"Synced:  {sum(1 for e in synced.values() if not e.is_dir)} file(s), "
              f"{sum(1 for e in synced.values() if e.is_dir)} folder(s)")
        if conflicts:
            print(f"Conflicts ({len(conflicts)}):")
            for p in conflicts:
                print(f"  {shown(p)}")
        notices = state.notices()
        if notices:
            print(f"Notices ({len(notices)}):")
            for path, why in sorted(notices.items()):
                print(f"  {shown(path)}: {shown(why)}")
        errors = state.errors()
        if errors:
            print(f"Problems ({len(errors)}):")
            for path, why in errors:
                print(f"  {shown(path)}: {shown(why)}")
        if status.get("warning"):
            print(f"Warning: {shown(status['warning'])}")
        if status.get("last_error"):
            print(f"Last error: {shown(status['last_error'])}")
    finally:
        state.close()
    return 0


def state_text(status: dict[str, Any], state: State) -> str:
    """The daemon's state in words. "error" alone would say nothing when the daemon recorded
    no error of its own: the folder is then out of sync because of what is listed with it."""
    text = str(status.get("state", "unknown"))
    if text != "error" or status.get("last_error"):
        return text  # with "Last error:" below
    problems, failed, pending = len(state.errors()), status.get("errors"), status.get("pending")
    if problems:
        return f"not in sync: {problems} item(s) with problems, listed below"
    if isinstance(failed, int) and failed:
        return f"not in sync: {failed} item(s) failed in the last sync (see the daemon's log)"
    if pending:
        return f"not in sync: {pending} operation(s) left undone in the last sync"
    return "not in sync (no details recorded; see the daemon's log)"


def _print_ignored(root: Path) -> int:
    """``status --ignored``: what the ignore rules keep out of sync, one path a line relative
    to the folder (an ignored folder once, ending in ``/``); lines of the ignore file that are
    not valid patterns are named on stderr."""
    from ..ignore import IGNORE_FILE, Ignore, ignored_paths

    ignore = Ignore(root)
    for number, line in ignore.invalid:
        print(f"drive-sync: {IGNORE_FILE} line {number}: not a valid pattern, skipped: "
              f"{shown(line)}", file=sys.stderr)
    for path in ignored_paths(root, ignore):
        print(shown(path))
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def cmd_resume(args: argparse.Namespace, config_dir: Path) -> int:
    cfg.load(config_dir)
    state = State(config_dir / cfg.STATE_FILE)
    try:
        reason = state.get("paused")
        if not reason:
            print("Not paused.")
            return 0
        state.set("resume", "1")
        state.set("paused", None)
        # The reason ends with the advice to run this very command: say what happens instead.
        what = reason.split("; run `drive-sync resume`", 1)[0]
        print(f"Resumed ({shown(what)}): they are deleted on the server too at the next sync.")
    finally:
        state.close()
    return 0
