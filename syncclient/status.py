"""The status file: what a running ``drive-sync`` writes for ``drive-sync status`` (another
process) to read.

Its own module so that the daemon (which writes it) and the commands (which write and read it)
both stand on it, and ``daemon`` no longer imports ``cli``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Written atomically for ``drive-sync status`` (another process) to read."""
    status = {**status, "updated_at": time.time(), "pid": os.getpid()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any]:
    """What the running daemon last wrote, or {} while there is no (readable) status file."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}
