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
import io
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from . import config as cfg
from .commands.account import cmd_init, cmd_logout
from .commands.files import cmd_ls, cmd_restore, cmd_trash, cmd_versions
from .commands.run import cmd_run
from .commands.sharing import cmd_leave, cmd_share
from .commands.status import cmd_resume, cmd_status
from .commands.wait import cmd_wait
from .errors import NotConfigured, SyncClientError


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
