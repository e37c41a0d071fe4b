"""``drive-sync``: the command line of the desktop sync client.

Every command takes ``--config-dir`` (or ``DRIVE_SYNC_HOME``), so several devices can run side
by side on one machine. Exit status: 0 on success, 1 when the command ran but the folder is not
in sync (``run --once``) or the server said no, 2 for usage and configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import getpass
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from . import config as cfg
from .engine import Engine, Paused
from .errors import ApiError, NotConfigured, SyncClientError
from .remote import Remote
from .state import State

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
    run = sub.add_parser("run", parents=[common], help="sync (in the foreground)")
    run.add_argument("--once", action="store_true", help="one complete two-way sync, then exit")
    run.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    sub.add_parser("status", parents=[common], help="what the daemon is doing")
    sub.add_parser("resume", parents=[common], help="confirm a paused mass deletion")
    ls = sub.add_parser("ls", parents=[common], help="list a folder on the server")
    ls.add_argument("path", nargs="?", default="/")
    versions = sub.add_parser("versions", parents=[common], help="versions of a file")
    versions.add_argument("path")
    restore = sub.add_parser("restore", parents=[common], help="restore an old version")
    restore.add_argument("path")
    restore.add_argument("--version", type=int, required=True)
    sub.add_parser("trash", parents=[common], help="list the trash")
    share = sub.add_parser("share", parents=[common], help="share a folder with someone")
    share.add_argument("path")
    share.add_argument("--with", dest="user_email", required=True, help="their account email")
    share.add_argument("--permission", choices=["view", "edit"], default="edit")
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
        "share": cmd_share, "logout": cmd_logout}
    try:
        if args.command == "init":
            return asyncio.run(cmd_init(args, config_dir, stdin or sys.stdin))
        return asyncio.run(commands[args.command](args, config_dir))
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


# --- init / logout ----------------------------------------------------------------------------

async def cmd_init(args: argparse.Namespace, config_dir: Path, stdin: TextIO) -> int:
    if args.password_stdin:
        password = stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.email}: ")
    # The server treats a login with a device name it knows as that same device (its own
    # changes are not echoed back to it), so two folders on one machine must not share a name:
    # the default adds a short random tag to the host name.
    device = args.device_name or f"{socket.gethostname()}-{secrets.token_hex(2)}"
    async with Remote(args.server) as remote:
        answer = await remote.login(args.email, password, device)
    folder = await asyncio.to_thread(_set_up_device, config_dir, args, device, answer)
    print(f"Logged in as {args.email} on {args.server} as device {device!r}.")
    print(f"Syncing folder: {folder}  (config in {config_dir})")
    print("Next: drive-sync run" + (f" --config-dir {config_dir}" if args.config_dir else ""))
    return 0


def _set_up_device(config_dir: Path, args: argparse.Namespace, device: str,
                   answer: dict[str, Any]) -> Path:
    """Create the folder and its marker, store the token (0600) and write the config."""
    folder: Path = args.folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / cfg.MARKER).mkdir(exist_ok=True)
    config_dir.mkdir(parents=True, exist_ok=True)
    cfg.save_token(config_dir, answer["token"])
    try:
        previous = cfg.load(config_dir)
    except NotConfigured:
        previous = None
    if previous is not None and (previous.folder != str(folder) or previous.server != args.server
                                 or previous.email != args.email):
        # Another folder or account: the old synced tree means nothing here.
        for suffix in ("", "-wal", "-shm"):
            Path(str(config_dir / cfg.STATE_FILE) + suffix).unlink(missing_ok=True)
    cfg.save(config_dir, cfg.Config(server=args.server.rstrip("/"), email=args.email,
                                    folder=str(folder), device_name=device,
                                    device_id=answer.get("device_id"),
                                    user_id=answer.get("user_id")))
    return folder


async def cmd_logout(args: argparse.Namespace, config_dir: Path) -> int:
    conf = cfg.load(config_dir)
    token = cfg.load_token(config_dir)
    async with Remote(conf.server, token) as remote:
        try:
            await remote.logout()
        except ApiError as exc:
            if exc.status != 401:
                raise
    cfg.forget_token(config_dir)
    print("Logged out; the token was revoked and removed.")
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


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Written atomically for ``drive-sync status`` (another process) to read."""
    status = {**status, "updated_at": time.time(), "pid": os.getpid()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def _lock_device(config_dir: Path) -> int:
    """One running sync per config dir: a second ``run`` would race the first over the state
    database and the folder. The lock dies with the process, even on kill -9."""
    fd = os.open(config_dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SyncClientError(f"another drive-sync is already running for {config_dir}"
                              ) from None
    return fd


async def cmd_run(args: argparse.Namespace, config_dir: Path) -> int:
    cfg.load(config_dir)
    lock = _lock_device(config_dir)
    conf, state, remote, engine = open_engine(config_dir)
    try:
        if args.dry_run:
            await engine.pull()
            ops, _ = await engine.plan()
            for op in ops:
                print(op.describe())
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
            for path, why in sorted(json.loads(state.get("notices") or "{}").items()):
                print(f"drive-sync: notice: {path}: {why}", file=sys.stderr)
            if result.in_sync:
                print(f"In sync ({len(result.done)} operation(s) in {result.rounds} round(s)).")
                return 0
            for path, why in sorted(result.errors.items()):
                print(f"drive-sync: {path}: {why}", file=sys.stderr)
            for op in result.pending:
                print(f"drive-sync: not done: {op.describe()}", file=sys.stderr)
            print("drive-sync: the folder is not in sync", file=sys.stderr)
            return 1
        from .daemon import Daemon

        return await Daemon(conf, config_dir, engine).run()
    finally:
        await remote.close()
        state.close()
        os.close(lock)


# --- status / resume --------------------------------------------------------------------------

async def cmd_status(args: argparse.Namespace, config_dir: Path) -> int:
    conf = cfg.load(config_dir)
    state = State(config_dir / cfg.STATE_FILE)
    try:
        try:
            status = json.loads((config_dir / cfg.STATUS_FILE).read_text())
        except (OSError, ValueError):
            status = {"state": "stopped"}
        if status.get("pid") and not _alive(int(status["pid"])) and \
                status.get("state") != "stopped":
            status["state"] = f"not running (last sync: {status.get('state')})"
        paused = state.get("paused")
        print(f"Folder:  {conf.folder}")
        print(f"Server:  {conf.server} ({conf.email}, device {conf.device_name})")
        print(f"State:   {'paused' if paused else status.get('state', 'unknown')}")
        if paused:
            print(f"Paused:  {paused}")
        if status.get("pending"):
            print(f"Pending: {status['pending']} operation(s): {status.get('uploads', 0)} "
                  f"to the server, {status.get('downloads', 0)} to the folder")
        if status.get("progress"):
            print(f"Transfer: {status['progress']}")
        synced = state.synced_entries()
        conflicts = sorted(p for p in synced if "conflicted copy" in p)
        print(f"Synced:  {sum(1 for e in synced.values() if not e.is_dir)} file(s), "
              f"{sum(1 for e in synced.values() if e.is_dir)} folder(s)")
        if conflicts:
            print(f"Conflicts ({len(conflicts)}):")
            for p in conflicts:
                print(f"  {p}")
        notices = json.loads(state.get("notices") or "{}")
        if notices:
            print(f"Notices ({len(notices)}):")
            for path, why in sorted(notices.items()):
                print(f"  {path}: {why}")
        errors = state.errors()
        if errors:
            print(f"Problems ({len(errors)}):")
            for path, why in errors:
                print(f"  {path}: {why}")
        if status.get("warning"):
            print(f"Warning: {status['warning']}")
        if status.get("last_error"):
            print(f"Last error: {status['last_error']}")
    finally:
        state.close()
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
        print(f"Resumed: the deletions will be applied on the next sync ({reason}).")
    finally:
        state.close()
    return 0


# --- convenience commands over the API ---------------------------------------------------------

async def _with_remote(config_dir: Path) -> tuple[cfg.Config, Remote]:
    conf = cfg.load(config_dir)
    return conf, Remote(conf.server, cfg.load_token(config_dir))


async def _resolve(remote: Remote, path: str) -> dict[str, Any]:
    path = "/" + path.strip("/")
    parent, _, name = path.rpartition("/")
    for e in await remote.list_folder(parent or "/"):
        if e["name"] == name:
            return e
    raise ApiError(404, "not_found", f"{path} is not on the server")


def _remote_path(conf: cfg.Config, path: str) -> str:
    """Accept a server path (``/a.txt``) or a path inside the local folder."""
    p = Path(path).expanduser()
    if p.is_absolute() and (p == conf.root or conf.root in p.parents):
        return "/" + p.relative_to(conf.root).as_posix()
    return "/" + path.strip("/")


async def cmd_ls(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await _with_remote(config_dir)
    async with remote:
        for e in await remote.list_folder(_remote_path(conf, args.path)):
            kind = "d" if e["is_directory"] else "-"
            print(f"{kind} {e['size']:>12} v{e['version']:<4} {e['name']}")
    return 0


async def cmd_versions(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await _with_remote(config_dir)
    async with remote:
        entry = await _resolve(remote, _remote_path(conf, args.path))
        for v in await remote.versions(entry["file_id"]):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["modified_at"]))
            extra = f" (restored from {v['restored_from']})" if v.get("restored_from") else ""
            print(f"v{v['version']:<4} {when} {v['size']:>12} bytes  "
                  f"{v.get('device') or '-'}{extra}")
    return 0


async def cmd_restore(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await _with_remote(config_dir)
    async with remote:
        entry = await _resolve(remote, _remote_path(conf, args.path))
        out = await remote.restore(entry["file_id"], args.version)
    print(f"Restored {args.path} to the content of v{args.version} as v{out['version']}; "
          "the folder gets it on the next sync.")
    return 0


async def cmd_trash(args: argparse.Namespace, config_dir: Path) -> int:
    _, remote = await _with_remote(config_dir)
    async with remote:
        for e in await remote.trash():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["trashed_at"]))
            print(f"{when}  {e['path']}{'/' if e['is_directory'] else ''}")
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
