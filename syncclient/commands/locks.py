"""The config dir's lock, as the commands take it: a busy config dir is an error that says
which process holds it and what to do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from .. import config as cfg
from ..errors import SyncClientError


async def take_lock(config_dir: Path, command: str,
                    advice: Callable[[cfg.LockHolder], str]) -> int:
    """The config dir's lock for ``command`` (see ``config.lock_device``); if another process
    holds it, a :class:`SyncClientError` that names it and says what to do."""
    try:
        return await asyncio.to_thread(cfg.lock_device, config_dir, command)
    except cfg.DeviceBusy as exc:
        raise SyncClientError(f"{exc}; {advice(exc.holder)}") from None


def stop_it(holder: cfg.LockHolder) -> str:
    """The advice for a lock held by a running daemon: how to stop it."""
    how = f"Ctrl-C where it runs, or `kill {holder.pid}`" if holder.pid else "Ctrl-C where it runs"
    return f"stop it first ({how})"
