"""Upload grants' byte budgets: what one ``upload-init`` lets its holder store, in all.

An upload grant is a signed token, and a signature cannot count: one grant for 1 MB used to
carry 1 MB per request, as many requests as its holder liked for six hours, none of it counted
against any quota until ``complete`` (issue 12, finding 8). So each grant also has a row here,
written by ``upload-init`` in the same transaction as the files it is for: its budget (the
bytes that were checked against the quota) and the bytes stored under it so far, with the
blocks they were. The block routes charge every block here *before* storing it.

* The budget is for the grant's whole life, whichever block route carries the bytes, and
  however many requests: past it, a 413 and nothing stored.
* A block already charged to the grant is free: a retry after a lost answer, or an upload
  resumed after a cut connection, is not counted twice. (A block is charged before it is
  stored; if the process dies in between, the retry of that block is free too.)
* A block is charged whether or not the store already has it (someone else's copy): what the
  budget allows must not depend on other people's data (finding 10).

Several writers (PostgreSQL): the budget holds because the charge is one conditional
``UPDATE … WHERE used_bytes + n <= max_bytes`` (atomic per row in any SQL database); two
transactions charging the same block to the same grant at once collide on the primary key of
``upload_grant_blocks`` and one fails, to be retried — for free.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from ..auth import new_id
from ..errors import Forbidden, PayloadTooLarge
from .accounts import GrantEpochs, grant_epochs_hold
from .db import Row, Tx


class GrantRevoked(Forbidden):
    """The grant's signature is good but the access it was minted under is gone (or the server
    keeps no record of it). 403, not 401: the client's session may well be fine, it needs a new
    grant (a new upload-init or download), not a new login."""

    code = "grant_revoked"


async def open_grant(tx: Tx, user_id: str, max_bytes: int, epochs: GrantEpochs,
                     lifetime: float) -> str:
    """Record a new upload grant of ``max_bytes``; its id (which the signed token carries)."""
    grant_id = new_id("g")
    await tx.execute(
        "INSERT INTO upload_grants (id, user_id, max_bytes, used_bytes, epochs, created_at,"
        " expires_at) VALUES (?,?,?,0,?,?,?)",
        (grant_id, user_id, max_bytes, json.dumps(epochs.to_json()), tx.now, tx.now + lifetime))
    return grant_id


async def _live_row(q: Any, grant_id: str, user_id: str, now: float) -> Row:
    row = await q.fetchone(
        "SELECT max_bytes, used_bytes, epochs, expires_at FROM upload_grants"
        " WHERE id = ? AND user_id = ?", (grant_id, user_id))
    if row is None or row["expires_at"] <= now or \
            not await grant_epochs_hold(q, user_id,
                                        GrantEpochs.from_json(json.loads(row["epochs"]))):
        raise GrantRevoked("this upload grant was revoked (a share, device, session or password"
                           " changed since it was issued); ask upload-init for a new one")
    return row


async def _charged(q: Any, grant_id: str, hashes: Iterable[str]) -> dict[str, int]:
    unique = sorted(set(hashes))
    out: dict[str, int] = {}
    for i in range(0, len(unique), 500):
        chunk = unique[i: i + 500]
        out.update((r["block_hash"], r["size"]) for r in await q.fetchall(
            "SELECT block_hash, size FROM upload_grant_blocks WHERE grant_id = ?"
            f" AND block_hash IN ({','.join('?' * len(chunk))})", (grant_id, *chunk)))
    return out


async def standing(q: Any, grant_id: str, user_id: str,
                   hashes: Iterable[str]) -> tuple[int, dict[str, int]]:
    """Before a batch body is decoded: the bytes the grant has left, and which of ``hashes``
    were charged to it already (with their sizes). A read, not a charge: it only bounds what
    parsing may inflate, so that a revoked or spent grant costs no decoding at all (the charge
    itself, atomic, comes after the blocks' hashes are verified).

    :raises GrantRevoked: as :func:`charge`.
    """
    row = await _live_row(q, grant_id, user_id, time.time())
    return row["max_bytes"] - row["used_bytes"], await _charged(q, grant_id, hashes)


async def charge(tx: Tx, grant_id: str, user_id: str,
                 blocks: Iterable[tuple[str, int]]) -> set[str]:
    """Count ``blocks`` (hash, plaintext size) against the grant before they are stored.

    Returns the hashes that were charged to this grant before (the holder sent them already, so
    storing them again need hide nothing from them).

    :raises GrantRevoked: no such live grant of ``user_id``, or its access was revoked since.
    :raises PayloadTooLarge: the new blocks would take the grant past its budget (nothing is
        charged then).
    """
    row = await _live_row(tx, grant_id, user_id, tx.now)
    wanted = dict(blocks)
    unique = sorted(wanted)
    known = set(await _charged(tx, grant_id, unique))
    new = [(h, wanted[h]) for h in unique if h not in known]
    total = sum(size for _, size in new)
    if not new:
        return known
    cur = await tx.execute(
        "UPDATE upload_grants SET used_bytes = used_bytes + ?"
        " WHERE id = ? AND used_bytes + ? <= max_bytes", (total, grant_id, total))
    if cur.rowcount != 1:
        left = row["max_bytes"] - row["used_bytes"]
        raise PayloadTooLarge(
            f"this upload grant may store {row['max_bytes']} bytes in all and has {left} left;"
            f" these blocks need {total}", max_bytes=row["max_bytes"], left_bytes=left)
    await tx.executemany(
        "INSERT INTO upload_grant_blocks (grant_id, block_hash, size) VALUES (?,?,?)",
        [(grant_id, h, size) for h, size in new])
    return known


async def forget_expired(tx: Tx, now: float) -> int:
    """Drop the records of grants past their expiry (their tokens are refused by then anyway);
    the blocks charged to them go with them."""
    cur = await tx.execute("DELETE FROM upload_grants WHERE expires_at < ?", (now,))
    return cur.rowcount
