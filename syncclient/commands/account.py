"""``init`` and ``logout``: log a device in (and set up its folder), and revoke its token."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TextIO

from driveproto.codes import DEVICE_NAME_TAKEN
from driveproto.replies import LoginReply

from .. import config as cfg
from ..errors import ApiError, NotConfigured, SyncClientError
from ..remote import Remote
from .locks import stop_it, take_lock


async def cmd_init(args: argparse.Namespace, config_dir: Path, stdin: TextIO) -> int:
    # Before anything else, the password too: the config, token and state database of a device
    # whose daemon runs are left alone, --force or not.
    lock = await take_lock(config_dir, "init", lambda h: f"{stop_it(h)}, then run init again "
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
    lock = await take_lock(config_dir, "logout", lambda h: f"{stop_it(h)}, then log out (this "
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
