"""WebDAV dead properties: what PROPPATCH stores per item, and what PROPFIND reads back.

A property is named by its XML namespace and local name; its value is the property element
exactly as serialised from the client's request (children, attributes and namespace
declarations included), so PROPFIND can hand it back as it came. Rows go with their item when
it is deleted for good (a foreign key with ``ON DELETE CASCADE``); an item in the trash keeps
its properties for a restore.
"""

from __future__ import annotations

from typing import Any

from .db import Tx

MAX_PER_ITEM = 1000  # properties one item may carry


async def properties_of(q: Any, file_ids: list[str]) -> dict[str, dict[tuple[str, str], str]]:
    """File id -> {(namespace, name): value XML} for each of ``file_ids`` that has any."""
    out: dict[str, dict[tuple[str, str], str]] = {}
    for i in range(0, len(file_ids), 500):
        chunk = file_ids[i: i + 500]
        for r in await q.fetchall(
                "SELECT file_id, namespace, name, value FROM dav_properties"
                f" WHERE file_id IN ({','.join('?' * len(chunk))})", chunk):
            out.setdefault(r["file_id"], {})[(r["namespace"], r["name"])] = r["value"]
    return out


async def set_property(tx: Tx, file_id: str, namespace: str, name: str, value: str) -> None:
    await tx.execute(
        "INSERT INTO dav_properties (file_id, namespace, name, value) VALUES (?,?,?,?)"
        " ON CONFLICT (file_id, namespace, name) DO UPDATE SET value = excluded.value",
        (file_id, namespace, name, value))


async def remove_property(tx: Tx, file_id: str, namespace: str, name: str) -> None:
    await tx.execute("DELETE FROM dav_properties WHERE file_id = ? AND namespace = ?"
                     " AND name = ?", (file_id, namespace, name))


async def count_properties(tx: Tx, file_id: str) -> int:
    return int(await tx.fetchval("SELECT COUNT(*) FROM dav_properties WHERE file_id = ?",
                                 (file_id,)))


async def copy_properties(tx: Tx, from_id: str, to_id: str) -> None:
    """A COPY takes the source's dead properties along (RFC 4918 section 9.8.2)."""
    await tx.execute(
        "INSERT INTO dav_properties (file_id, namespace, name, value)"
        " SELECT ?, namespace, name, value FROM dav_properties WHERE file_id = ?",
        (to_id, from_id))
