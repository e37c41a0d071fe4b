"""``wait``: until the running daemon has synced everything."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..engine import Engine
from ..errors import Offline, SyncClientError
from ..remote import Remote
from ..state import State
from ..status import read_status
from .display import shown
from .status import state_text

# How long ``wait`` gives a daemon that is not running yet (just started in the background).
DAEMON_START_SECONDS = 30.0
# A full check (scan and feed) runs when the daemon's status changes, else at most this often.
WAIT_RECHECK_SECONDS = 2.0


async def cmd_wait(args: argparse.Namespace, config_dir: Path) -> int:
    """Until the running daemon has synced what is in the folder and on the server now.

    The status file alone cannot say so: "idle" may come from a sync that scanned the folder
    before the last save, or pulled the feed before the server's last change. So once the
    daemon (the process holding the config dir's lock, whose pid the status carries) says idle
    with nothing pending, this checks what it would do next, changing nothing in the folder or
    on the server: the feed cursor first, then the plan of ``run --dry-run`` without its pull
    (folder, synced tree, remote tree cache), which must be empty, then the feed after that
    cursor, which must hold nothing. Each half-done step of the daemon shows in one of these.
    The check runs again when the status changes (or every few seconds) until it passes or the
    timeout is over. (A daemon that said when its last sync started, and could be asked for
    one, would spare this check its scan.)
    """
    conf = cfg.load(config_dir)
    token = cfg.load_token(config_dir)
    started = time.monotonic()
    why = "no drive-sync daemon is running"
    seen_daemon = False
    last_check: tuple[Any, float] | None = None  # (status updated_at, monotonic time)
    state = State(config_dir / cfg.STATE_FILE)
    remote = Remote(conf.server, token)
    engine = Engine(conf, state, remote)
    try:
        while True:
            now = time.monotonic()
            holder = cfg.lock_holder(config_dir)
            status = read_status(config_dir / cfg.STATUS_FILE)
            if holder is None or holder.command != "run":
                if seen_daemon:
                    error = f" ({shown(status['last_error'])})" if status.get("last_error") else ""
                    raise SyncClientError(f"the daemon for {config_dir} stopped before the "
                                          f"folder was in sync{error}")
                if now - started >= min(args.timeout, DAEMON_START_SECONDS):
                    raise SyncClientError(f"no drive-sync daemon is running for {config_dir}: "
                                          "start one with `drive-sync run` (or sync once with "
                                          "`drive-sync run --once`)")
            elif holder.pid is not None and status.get("pid") != holder.pid:
                seen_daemon, why = True, "the daemon has not finished its first sync"
            else:
                seen_daemon = True
                paused = state.get("paused")
                if paused:
                    raise SyncClientError(f"the daemon is paused: {shown(paused)}")
                if status.get("state") != "idle" or status.get("pending"):
                    why = f"the daemon is {state_text(status, state)}"
                    if status.get("pending"):
                        why += f", {status['pending']} operation(s) pending"
                    if status.get("last_error"):
                        why += f" ({shown(status['last_error'])})"
                elif last_check is None or last_check[0] != status.get("updated_at") or \
                        now - last_check[1] >= WAIT_RECHECK_SECONDS:
                    last_check = (status.get("updated_at"), now)
                    left = await _left_to_sync(engine)
                    if left is None:
                        print(f"In sync: {shown(conf.folder)}")
                        return 0
                    why = left
            if now - started >= args.timeout:
                print(f"drive-sync: not in sync after {args.timeout:g} s: {why}", file=sys.stderr)
                for path, problem in state.errors():
                    print(f"drive-sync: {shown(path)}: {shown(problem)}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.1)
    finally:
        await remote.close()
        state.close()


async def _left_to_sync(engine: Engine) -> str | None:
    """What the daemon has still to do, in words, or None if nothing (see ``cmd_wait``)."""
    cursor = engine.state.get("cursor")  # first: a pull after it must show in the plan
    if cursor is None or cursor == "0":  # spelt out: older mypy narrows no `in`
        return "the daemon has not finished its first sync"
    ops, _ = await engine.plan()
    if ops:
        return f"{len(ops)} change(s) not synced yet: {shown(ops[0].describe())}"
    try:
        answer = await engine.remote.changes(cursor, 0)
    except Offline as exc:
        return f"the server cannot be reached ({exc})"
    if answer.get("changes") or answer.get("has_more") or answer.get("reset"):
        return "changes on the server are not synced yet"
    return None
