"""``drive-sync``: the command line of the desktop sync client.

Every command takes ``--config-dir`` (or ``DRIVE_SYNC_HOME``), so several devices can run side
by side on one machine. Exit status: 0 on success, 1 when the command ran but the folder is not
in sync (``run --once``, ``wait``), the server said no or another drive-sync holds the config dir,
2 for usage and configuration errors, 141 (as for a tool killed by SIGPIPE) when standard output
was closed before everything was written (``drive-sync status | head -1``).

Names are printed one item a line: a name holding a control character (a newline, an escape) is
printed quoted, with C-style escapes (``"two\\nlines.txt"``), as git prints such paths.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import json
import logging
import os
import secrets
import socket
import sys
import time
import unicodedata
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from driveproto.codes import DEVICE_NAME_TAKEN
from driveproto.replies import ListedEntry, LoginReply, PathEntry

from . import config as cfg
from .engine import Engine
from .errors import ApiError, NotConfigured, Offline, SyncClientError
from .guards import Paused
from .remote import Remote
from .state import State
from .status import write_status

log = logging.getLogger("syncclient")


def _common(default: object) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-dir", type=Path, default=default,
                        help="where this device keeps its config, token and state "
                             "(default: $DRIVE_SYNC_HOME or ~/.config/drive-sync)")
    common.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log more")
    return common


def _parser() -> argparse.ArgumentParser:
    # The options work before and after the command; the command's copies default to
    # SUPPRESS so that they do not overwrite a value given before the command.
    p = argparse.ArgumentParser(prog="drive-sync", parents=[_common(None)],
                                description="Keep a folder in sync with a drive server.")
    common = _common(argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", parents=[common], help="log in and set up the sync folder")
    init.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    init.add_argument("--email", required=True)
    init.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input")
    init.add_argument("--folder", required=True, type=Path)
    init.add_argument("--device-name", default=None,
                      help="unique per account; default: host name plus a short random tag")
    init.add_argument("--force", action="store_true",
                      help="replace the config dir's existing setup (never while its daemon "
                           "runs)")
    run = sub.add_parser("run", parents=[common], help="sync (in the foreground)")
    run.add_argument("--once", action="store_true", help="one complete two-way sync, then exit")
    run.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    status = sub.add_parser("status", parents=[common], help="what the daemon is doing")
    status.add_argument("--ignored", action="store_true",
                        help="list only what the ignore rules keep out of sync, relative to "
                             "the folder (a folder once, ending in /)")
    sub.add_parser("resume", parents=[common], help="confirm a paused mass deletion")
    ls = sub.add_parser("ls", parents=[common], help="list a folder on the server")
    ls.add_argument("path", nargs="?", default="/")
    versions = sub.add_parser("versions", parents=[common], help="versions of a file")
    versions.add_argument("path")
    restore = sub.add_parser("restore", parents=[common],
                             help="bring back a deleted item, or an old version of a file")
    restore.add_argument("path", nargs="?",
                         help="a path in the sync folder or on the server (/a.txt)")
    restore.add_argument("--version", type=int, help="the version to restore (see `versions`)")
    restore.add_argument("--trash-id", help="the trash item to restore (the id `trash` shows)")
    sub.add_parser("trash", parents=[common], help="list deleted items")
    wait = sub.add_parser("wait", parents=[common],
                          help="wait until the running daemon has synced everything")
    wait.add_argument("--timeout", type=float, default=300.0,
                      help="give up after this many seconds (default 300)")
    share = sub.add_parser("share", parents=[common], help="share a folder with someone")
    share.add_argument("path")
    share.add_argument("--with", dest="user_email", required=True, help="their account email")
    share.add_argument("--permission", choices=["view", "edit"], default="edit")
    leave = sub.add_parser("leave", parents=[common],
                           help="leave a folder shared with you (its owner keeps it)")
    leave.add_argument("path", help="the folder under 'Shared with me'")
    sub.add_parser("logout", parents=[common], help="revoke this device's token")
    return p


def main(argv: list[str] | None = None, stdin: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    config_dir: Path = args.config_dir or cfg.default_config_dir()
    commands: dict[str, Callable[..., Coroutine[Any, Any, int]]] = {
        "init": cmd_init, "run": cmd_run, "status": cmd_status, "resume": cmd_resume,
        "ls": cmd_ls, "versions": cmd_versions, "restore": cmd_restore, "trash": cmd_trash,
        "share": cmd_share, "leave": cmd_leave, "logout": cmd_logout, "wait": cmd_wait}
    try:
        if args.command == "init":
            rc = asyncio.run(cmd_init(args, config_dir, stdin or sys.stdin))
        else:
            rc = asyncio.run(commands[args.command](args, config_dir))
        sys.stdout.flush()  # here, where a reader that went away can still be noticed
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except NotConfigured as exc:
        print(f"drive-sync: {exc}", file=sys.stderr)
        return 2
    except SyncClientError as exc:
        print(f"drive-sync: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a full disk or a read-only config dir
        print(f"drive-sync: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _quiet_stdout() -> None:
    """Standard output was closed early (``| head``): stop writing, as a tool killed by SIGPIPE
    would, without a traceback or a ``Broken pipe`` line. (Not by restoring SIGPIPE's default:
    the daemon's own sockets would then kill it.) The interpreter's last flush of stdout must
    not complain either, so stdout is pointed at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a file descriptor (a test's captured output): nothing to flush later


def shown(text: str) -> str:
    """``text`` as one line: unchanged if it has no control character, else quoted with
    C-style escapes (a newline in a name must not look like two items, nor an escape sequence
    reach the terminal). Bytes that were not UTF-8 (``os.fsdecode``) are shown as ``\\xNN``."""
    if not any(_unprintable(c) for c in text):
        return text
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif _unprintable(c):
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidirectional overrides and isolates reorder what follows them on screen.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unprintable(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI


# --- init / logout ----------------------------------------------------------------------------

async def _lock(config_dir: Path, command: str, advice: Callable[[cfg.LockHolder], str]) -> int:
    """The config dir's lock for ``command`` (see ``config.lock_device``); if another process
    holds it, a :class:`SyncClientError` that names it and says what to do."""
    try:
        return await asyncio.to_thread(cfg.lock_device, config_dir, command)
    except cfg.DeviceBusy as exc:
        raise SyncClientError(f"{exc}; {advice(exc.holder)}") from None


def _stop_it(holder: cfg.LockHolder) -> str:
    how = f"Ctrl-C where it runs, or `kill {holder.pid}`" if holder.pid else "Ctrl-C where it runs"
    return f"stop it first ({how})"


async def cmd_init(args: argparse.Namespace, config_dir: Path, stdin: TextIO) -> int:
    # Before anything else, the password too: the config, token and state database of a device
    # whose daemon runs are left alone, --force or not.
    lock = await _lock(config_dir, "init", lambda h: f"{_stop_it(h)}, then run init again "
                       "(--force does not override this: its state database is in use)")
    try:
        try:
            previous: cfg.Config | None = cfg.load(config_dir)
        except NotConfigured:
            previous = None
        if previous is not None and not args.force:
            print(f"drive-sync: {config_dir} is already set up: {previous.folder} synced with "
                  f"{previous.server} ({previous.email}, device {previous.device_name!r}). Give "
                  "--force to replace that (with another folder or account, the device starts "
                  "from a fresh state; the files in the folders stay as they are)",
                  file=sys.stderr)
            return 2
        if args.password_stdin:
            password = stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"Password for {args.email}: ")
        # The server treats a login with a device name it knows as that same device (its own
        # changes are not echoed back to it), so two folders must never share a name: the
        # default adds a short random tag to the host name, and a name the account already has
        # is refused, unless this config dir is that device logging in again.
        server = args.server.rstrip("/")
        device = args.device_name or f"{socket.gethostname()}-{secrets.token_hex(2)}"
        same_device = previous is not None and (previous.server, previous.email,
                                                previous.device_name) == (server, args.email,
                                                                          device)
        async with Remote(server) as remote:
            try:
                answer = await remote.login(args.email, password, device,
                                            new_device=not same_device)
            except ApiError as exc:
                if exc.code != DEVICE_NAME_TAKEN:
                    raise
                raise SyncClientError(
                    f"the account {args.email} already has a device named {device!r}; each "
                    "folder needs a device name of its own (a device is not sent back the "
                    "changes made under its name): choose another --device-name") from None
        folder = await asyncio.to_thread(_set_up_device, config_dir, args, device, answer,
                                         previous)
    finally:
        os.close(lock)
    print(f"Logged in as {args.email} on {server} as device {device!r}.")
    print(f"Syncing folder: {folder}  (config in {config_dir})")
    print("Next: drive-sync run" + (f" --config-dir {config_dir}" if args.config_dir else ""))
    return 0


def _set_up_device(config_dir: Path, args: argparse.Namespace, device: str,
                   answer: LoginReply, previous: cfg.Config | None) -> Path:
    """Create the folder and its marker, store the token (0600) and write the config. Runs
    under the config dir's lock, so no daemon uses the state database it may delete."""
    folder: Path = args.folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / cfg.MARKER).mkdir(exist_ok=True)
    config_dir.mkdir(parents=True, exist_ok=True)
    cfg.save_token(config_dir, answer["token"])
    server = args.server.rstrip("/")
    if previous is not None and (previous.folder != str(folder) or previous.server != server
                                 or previous.email != args.email):
        # Another folder or account: the old synced tree (and status) mean nothing here.
        for suffix in ("", "-wal", "-shm"):
            Path(str(config_dir / cfg.STATE_FILE) + suffix).unlink(missing_ok=True)
        (config_dir / cfg.STATUS_FILE).unlink(missing_ok=True)
    cfg.save(config_dir, cfg.Config(server=server, email=args.email,
                                    folder=str(folder), device_name=device,
                                    device_id=answer.get("device_id"),
                                    user_id=answer.get("user_id")))
    return folder


async def cmd_logout(args: argparse.Namespace, config_dir: Path) -> int:
    """Revoke this device's token. Not while its daemon runs: as when Dropbox signs out, syncing
    must stop first, and the CLI does not stop a process it did not start (a service manager
    would only start it again); so it says which process to stop and changes nothing."""
    conf = cfg.load(config_dir)
    lock = await _lock(config_dir, "logout", lambda h: f"{_stop_it(h)}, then log out (this "
                       "device stays logged in and keeps syncing meanwhile)")
    try:
        token = cfg.load_token(config_dir)
        async with Remote(conf.server, token) as remote:
            try:
                await remote.logout()
            except ApiError as exc:
                if exc.status != 401:
                    raise
        cfg.forget_token(config_dir)
    finally:
        os.close(lock)
    print("Logged out; the token was revoked and removed. To log this folder in again: "
          "drive-sync init --force (with the same --server, --email, --folder and "
          "--device-name).")
    return 0


# --- run ----------------------------------------------------------------------------------------

def open_engine(config_dir: Path) -> tuple[cfg.Config, State, Remote, Engine]:
    conf = cfg.load(config_dir)
    token = cfg.load_token(config_dir)
    state = State(config_dir / cfg.STATE_FILE)
    remote = Remote(conf.server, token)
    status_path = config_dir / cfg.STATUS_FILE

    def on_status(status: dict[str, Any]) -> None:
        write_status(status_path, status)

    return conf, state, remote, Engine(conf, state, remote, on_status)


async def cmd_run(args: argparse.Namespace, config_dir: Path) -> int:
    cfg.load(config_dir)
    # One running sync per config dir: a second ``run`` would race the first over the state
    # database and the folder.
    lock = await _lock(config_dir, "run", lambda h: "one sync at a time per config dir")
    # And one per folder: two config dirs on one folder (a copied config dir) would both
    # write it. The folder's lock lives in its marker, only if the marker is there (creating
    # it here would defeat the check that the folder is the right one, see check_folder).
    folder_lock: int | None = None
    marker = Path(cfg.load(config_dir).folder) / cfg.MARKER
    if marker.is_dir():
        try:
            folder_lock = await _lock(marker, "run", lambda h: "one sync at a time per folder")
        except BaseException:
            os.close(lock)
            raise
    conf, state, remote, engine = open_engine(config_dir)
    try:
        if args.dry_run:
            await engine.pull()
            ops, _ = await engine.plan()
            for op in ops:
                print(shown(op.describe()))
            print(f"{len(ops)} operation(s) planned; nothing was changed.")
            return 0
        if args.once:
            try:
                result = await engine.sync_once()
            except Paused as exc:
                print(f"drive-sync: paused: {exc}", file=sys.stderr)
                return 1
            for op in result.done:
                log.info("%s", op.describe())
            for path, why in sorted(state.notices().items()):
                print(f"drive-sync: notice: {shown(path)}: {shown(why)}", file=sys.stderr)
            if result.in_sync:
                print(f"In sync ({len(result.done)} operation(s) in {result.rounds} round(s)).")
                return 0
            for path, why in sorted(result.errors.items()):
                print(f"drive-sync: {shown(path)}: {shown(why)}", file=sys.stderr)
            for op in result.pending:
                print(f"drive-sync: not done: {shown(op.describe())}", file=sys.stderr)
            print("drive-sync: the folder is not in sync", file=sys.stderr)
            return 1
        from .daemon import Daemon

        return await Daemon(conf, config_dir, engine).run()
    finally:
        await remote.close()
        state.close()
        os.close(lock)
        if folder_lock is not None:
            os.close(folder_lock)


# --- status / resume --------------------------------------------------------------------------

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
            status["state"] = f"not running (last sync: {_state_text(status, state)})"
        paused = state.get("paused")
        print(f"Folder:  {shown(conf.folder)}")
        print(f"Server:  {conf.server} ({conf.email}, device {shown(conf.device_name)})")
        print(f"State:   {'paused' if paused else _state_text(status, state)}")
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


def _state_text(status: dict[str, Any], state: State) -> str:
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
    from .ignore import IGNORE_FILE, Ignore, ignored_paths

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


# --- wait -----------------------------------------------------------------------------------------

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
            status = _read_status(config_dir)
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
                    why = f"the daemon is {_state_text(status, state)}"
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


def _read_status(config_dir: Path) -> dict[str, Any]:
    try:
        status = json.loads((config_dir / cfg.STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


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


# --- convenience commands over the API ---------------------------------------------------------

async def _with_remote(config_dir: Path) -> tuple[cfg.Config, Remote]:
    conf = cfg.load(config_dir)
    return conf, Remote(conf.server, cfg.load_token(config_dir))


async def _find(remote: Remote, path: str) -> ListedEntry | None:
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


async def _resolve(remote: Remote, path: str) -> ListedEntry:
    entry = await _find(remote, path)
    if entry is None:
        raise ApiError(404, "not_found", f"{shown(path)} is not on the server")
    return entry


def _file_id(entry: ListedEntry | PathEntry, path: str) -> str:
    """The server's id of the item ``entry`` lists at ``path``. The virtual ``/Shared with me``
    has none: the server lists it in the root of someone who has shares but stores nothing
    there, so it has no versions and nothing to restore (and asking the server about the id
    ``None`` would only say "not found")."""
    file_id = entry["file_id"]
    if file_id is None:
        raise SyncClientError(f"{shown(path)} only lists the folders shared with you; it has no "
                              "versions of its own (name a file inside one of them)")
    return file_id


def _remote_path(conf: cfg.Config, path: str) -> str:
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


async def cmd_ls(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await _with_remote(config_dir)
    async with remote:
        for e in await remote.list_folder(_remote_path(conf, args.path)):
            kind = "d" if e["is_directory"] else "-"
            print(f"{kind} {e['size']:>12} v{e['version']:<4} {shown(e['name'])}")
    return 0


async def cmd_versions(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await _with_remote(config_dir)
    async with remote:
        path = _remote_path(conf, args.path)
        entry = await _resolve(remote, path)
        for v in await remote.versions(_file_id(entry, path)):
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
    conf, remote = await _with_remote(config_dir)
    async with remote:
        entry: PathEntry | ListedEntry | None
        if args.trash_id is not None:
            entry = await remote.restore_from_trash(args.trash_id)
            where = entry["path"]
            print(f"Restored {shown(where)} from the trash; the folders get it at their "
                  "next sync.")
        else:
            where = _remote_path(conf, args.path)
            entry = await _find(remote, where)
            if entry is None:
                entry = await _untrash(remote, where)
                where = entry["path"]  # another name if the old one was taken meanwhile
            elif args.version is None:
                raise SyncClientError(
                    f"{shown(where)} is not deleted: give --version N to restore an old version "
                    f"(`drive-sync versions {shown(where)}` lists them)")
        if args.version is not None:
            out = await remote.restore(_file_id(entry, where), args.version)
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
    _, remote = await _with_remote(config_dir)
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


async def cmd_share(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await _with_remote(config_dir)
    path = _remote_path(conf, args.path)
    async with remote:
        entry = await _resolve(remote, path)
        out = await remote.call("POST", f"/api/files/{entry['file_id']}/share",
                                {"user_email": args.user_email, "permission": args.permission})
    print(f"Shared {path} with {args.user_email} ({args.permission}); it appears in their "
          f"folder as 'Shared with me/{out['mount_name']}'.")
    return 0


async def cmd_leave(args: argparse.Namespace, config_dir: Path) -> int:
    """Leave a folder someone shared with this account: the server ends the share for this
    account only, and every device of it removes the folder at its next sync, as when the owner
    unshares it (the owner's folder is not touched; a file changed here and not yet synced is
    kept on this computer)."""
    conf, remote = await _with_remote(config_dir)
    path = _remote_path(conf, args.path)
    async with remote:
        shares = (await remote.call("GET", "/api/shared-with-me"))["shares"]
        key = path.casefold()
        mine = next((s for s in shares if s["path"].casefold() == key), None)
        if mine is None:
            raise ApiError(404, "not_found", f"{shown(path)} is not a folder shared with you"
                           " (those are the folders in 'Shared with me')")
        await remote.call("DELETE", f"/api/shares/{mine['share_id']}")
    print(f"Left {shown(path)}, shared by {mine['owner']['email']}; it leaves your devices at "
          "their next sync, and stays in its owner's drive.")
    return 0
