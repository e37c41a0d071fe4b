"""Reading and damaging a local block store from outside it, as a disk fault or a curious admin
would: block files under their fan-out folders and small blocks packed in ``small.sqlite3``
(driveserver.storage.packed), without going through the store's code."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

PACK_FILE = "small.sqlite3"


def _pack_rows(root: Path, query: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    pack = root / PACK_FILE
    if not pack.exists():
        return []
    with closing(sqlite3.connect(pack, timeout=30)) as con:
        return list(con.execute(query, args))


def raw_objects(root: Path) -> dict[str, bytes]:
    """Every stored object, where it is (a file's path, or ``small.sqlite3:<name>``) -> its bytes;
    temp files and the pack's own files are not objects."""
    found = {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".tmp" not in p.relative_to(root).parts
        and not p.name.startswith(PACK_FILE)
    }
    for name, data in _pack_rows(root, "SELECT name, data FROM objects"):
        found[f"{PACK_FILE}:{name}"] = bytes(data)  # type: ignore[arg-type]
    return found


def stored_names(root: Path) -> set[str]:
    return {where.rpartition("/")[2].rpartition(":")[2] for where in raw_objects(root)}


def holds(root: Path, name: str) -> bool:
    """Whether the store under ``root`` holds an object named ``name``, as a file or packed."""
    return any(root.glob(f"*/*/{name}")) or bool(
        _pack_rows(root, "SELECT 1 FROM objects WHERE name = ?", (name,))
    )


def tamper(root: Path, name: str, change: Callable[[bytearray], None]) -> None:
    """Change the stored bytes of one object in place (``change`` edits them), wherever it is."""
    files = list(root.glob(f"*/*/{name}"))
    if files:
        (path,) = files
        raw = bytearray(path.read_bytes())
        change(raw)
        path.chmod(0o600)
        path.write_bytes(bytes(raw))
        return
    with closing(sqlite3.connect(root / PACK_FILE, timeout=30)) as con:
        (row,) = con.execute("SELECT data FROM objects WHERE name = ?", (name,)).fetchall()
        raw = bytearray(row[0])
        change(raw)
        with con:
            con.execute("UPDATE objects SET data = ? WHERE name = ?", (bytes(raw), name))


def flip_last_bit(raw: bytearray) -> None:
    raw[-1] ^= 0x01


def flip_byte_100(raw: bytearray) -> None:
    raw[100] ^= 0x01


def raw_bytes(root: Path, name: str) -> bytes:
    """The stored bytes of one object, wherever it is."""
    (data,) = [data for where, data in raw_objects(root).items()
               if where.rpartition("/")[2].rpartition(":")[2] == name]
    return data
