"""Links' rows: create, look up (by id, by the URL's token, by file), revoke.

Only the SHA-256 of a link's token is stored (see ``api.links_routes`` for why links are built
the way they are); a revoked link keeps its row, with ``revoked_at`` set, and is never found
again. Purging the file deletes its links with it (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import hashlib

from ..auth import new_id
from .access import Query
from .db import Row, Tx


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def insert_link(q: Tx, file_id: str, user_id: str, token: str, now: float,
                      expires_at: float | None, password_hash: str | None,
                      allow_download: bool) -> str:
    link_id = new_id("l")
    await q.execute(
        "INSERT INTO links (id, token_hash, file_id, created_by, created_at, expires_at,"
        " password_hash, allow_download) VALUES (?,?,?,?,?,?,?,?)",
        (link_id, token_hash(token), file_id, user_id, now, expires_at, password_hash,
         int(allow_download)))
    return link_id


async def live_links(q: Query, file_id: str) -> list[Row]:
    return await q.fetchall("SELECT * FROM links WHERE file_id = ? AND revoked_at IS NULL"
                            " ORDER BY created_at", (file_id,))


async def link_by_id(q: Query, link_id: str) -> Row | None:
    return await q.fetchone("SELECT * FROM links WHERE id = ? AND revoked_at IS NULL", (link_id,))


async def link_by_token(q: Query, token: str) -> Row | None:
    return await q.fetchone("SELECT * FROM links WHERE token_hash = ? AND revoked_at IS NULL",
                            (token_hash(token),))


async def mark_revoked(tx: Tx, link_id: str) -> None:
    await tx.execute("UPDATE links SET revoked_at = ? WHERE id = ?", (tx.now, link_id))
