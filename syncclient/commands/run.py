"""``run``: sync in the foreground, as a daemon, ``--once`` or as a ``--dry-run``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..engine import Engine
from ..guards import Paused
from ..remote import Remote
from ..state import State
from ..status import write_status
from .display import shown
from .locks import take_lock

log = logging.getLogger("syncclient")


def open_engine(config_dir: Path) -> tuple[cfg.Config, State, Remote, Engine]:
    """The engine ``run`` syncs with, which writes the status file for ``status`` and ``wait``
    (the tests build their devices' engines with it too)."""
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
    lock = await take_lock(config_dir, "run", lambda h: "one sync at a time per config dir")
    # And one per folder: two config dirs on one folder (a copied config dir) would both
    # write it. The folder's lock lives in its marker, only if the marker is there (creating
    # it here would defeat the check that the folder is the right one, see check_folder).
    folder_lock: int | None = None
    marker = Path(cfg.load(config_dir).folder) / cfg.MARKER
    if marker.is_dir():
        try:
            folder_lock = await take_lock(marker, "run", lambda h: "one sync at a time per folder")
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
        from ..daemon import Daemon

        return await Daemon(conf, config_dir, engine).run()
    finally:
        await remote.close()
        state.close()
        os.close(lock)
        if folder_lock is not None:
            os.close(folder_lock)
