"""Users and sessions: the units of work behind accounts and logins (devices are in
``meta.devices``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..auth import hash_password, new_id
from ..emails import check_address, email_key, normal_email, skeleton
from ..errors import Conflict
from .db import Database, Row, Tx


@dataclass(frozen=True)
class Principal:
    """An authenticated request: who, through which session, from which device."""

    user_id: str
    session_id: str
    device_id: str | None
    workspace_id: str


async def create_user(db: Database, email: str, password: str, quota_bytes: int,
                      cost: int = 14) -> Row:
    """Create a user with their own workspace and its root folder (one transaction).

    An address that looks like an existing account's (same :func:`~driveserver.emails.skeleton`)
    is taken as well: checked inside the write transaction, so two simultaneous look-alikes
    cannot both get in. The check reads every address, which is fine for the accounts of one
    server (10,000 of them cost a few milliseconds) and keeps the schema free of a derived
    column that old rows would lack."""
    check_address(email)
    # Before the transaction and off the event loop: ~50 ms of CPU at the default cost.
    password_hash = await asyncio.to_thread(hash_password, password, cost)

    async def unit(tx: Tx) -> Row | None:
        if await tx.fetchone("SELECT 1 FROM users WHERE email_key = ?", (email_key(email),)):
            raise Conflict("an account with this email already exists", code="email_taken")
        looks = skeleton(email)
        for other in await tx.fetchall("SELECT email FROM users"):
            if skeleton(other["email"]) == looks:
                raise Conflict("an account with an address that looks the same already exists;"
                               " choose another address", code="email_taken")
        user_id, workspace_id, root_id = new_id("u"), new_id("w"), new_id("f")
        await tx.execute(
            "INSERT INTO users (id, email, email_key, password_hash, quota_bytes, workspace_id,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (user_id, normal_email(email), email_key(email), password_hash, quota_bytes, workspace_id,
             tx.now))
        await tx.execute(
            "INSERT INTO workspaces (id, owner_id, kind, root_id, created_at) VALUES (?,?,?,?,?)",
            (workspace_id, user_id, "personal", root_id, tx.now))
        await tx.execute(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, created_at, modified_at) VALUES (?,?,NULL,'','',1,1,0,?,?)",
            (root_id, workspace_id, tx.now, tx.now))
        return await tx.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))

    # A unit of work: on PostgreSQL, two sign-ups at once (each reads every address) are
    # run again rather than one failing; the look-alike check then sees the other.
    row = await db.write(unit)
    assert row is not None
    return row


async def user_by_email(q: Any, email: str) -> Row | None:
    return await q.fetchone("SELECT * FROM users WHERE email_key = ?", (email_key(email),))


async def user_by_id(q: Any, user_id: str) -> Row | None:
    return await q.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))


async def all_users(q: Any) -> list[Row]:
    """Every account's id, email and quota, oldest first (``drive-server user list``)."""
    return await q.fetchall("SELECT id, email, quota_bytes FROM users ORDER BY created_at")


async def workspace_owner(q: Any, workspace_id: str) -> Row | None:
    """The owner of ``workspace_id``: their ``id``, ``email`` and ``quota_bytes`` (whose quota a
    change there counts against), or None for no such workspace."""
    return await q.fetchone(
        "SELECT u.id, u.email, u.quota_bytes FROM workspaces w JOIN users u ON u.id = w.owner_id"
        " WHERE w.id = ?", (workspace_id,))


async def set_quota(tx: Tx, user_id: str, quota_bytes: int) -> None:
    await tx.execute("UPDATE users SET quota_bytes = ? WHERE id = ?", (quota_bytes, user_id))


async def change_password(tx: Tx, user_id: str, password_hash: str) -> None:
    """Store the user's new password hash (hashed before the transaction: ~50 ms of CPU);
    every session of theirs and every block URL handed out to them stops working."""
    await tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
    await revoke_sessions(tx, user_id=user_id)
    await bump_grant_epoch(tx, user_id)  # and every block URL handed out


async def root_of(q: Any, user_id: str) -> Row:
    row = await q.fetchone(
        "SELECT f.* FROM users u JOIN workspaces w ON w.id = u.workspace_id"
        " JOIN files f ON f.id = w.root_id WHERE u.id = ?", (user_id,))
    assert row is not None, user_id
    return row


async def create_session(tx: Tx, user_id: str, device_id: str | None, lifetime: float) -> str:
    session_id = new_id("s")
    await tx.execute(
        "INSERT INTO sessions (id, user_id, device_id, created_at, expires_at)"
        " VALUES (?,?,?,?,?)", (session_id, user_id, device_id, tx.now, tx.now + lifetime))
    return session_id


async def principal_for_session(db: Database, session_id: str) -> Principal | None:
    """The principal of a live session: not revoked, not expired, device not removed."""
    row = await db.fetchone(
        "SELECT s.id, s.user_id, s.device_id, s.expires_at, u.workspace_id, d.removed_at"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " LEFT JOIN devices d ON d.id = s.device_id"
        " WHERE s.id = ? AND s.revoked_at IS NULL", (session_id,))
    if row is None or row["expires_at"] < time.time() or row["removed_at"] is not None:
        return None
    return Principal(row["user_id"], row["id"], row["device_id"], row["workspace_id"])


async def revoke_sessions(tx: Tx, *, session_id: str | None = None, user_id: str | None = None,
                          device_id: str | None = None) -> None:
    clauses, params = [], []
    for column, value in (("id", session_id), ("user_id", user_id), ("device_id", device_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    assert clauses
    await tx.execute(
        f"UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND {' AND '.join(clauses)}",
        [tx.now, *params])


async def used_bytes(q: Any, user_id: str) -> int:
    """Logical bytes of the user's live files (the trash does not count, as in Dropbox)."""
    value = await q.fetchval(
        "SELECT COALESCE(SUM(f.size), 0) FROM files f JOIN workspaces w ON w.id = f.workspace_id"
        " WHERE w.owner_id = ? AND f.trashed_at IS NULL AND f.is_directory = 0", (user_id,))
    return int(value or 0)


async def check_quota(tx: Tx, owner_id: str, quota_bytes: int, delta: int, message: str) -> None:
    """Raise 507 if adding ``delta`` bytes would put ``owner_id`` over ``quota_bytes``.

    The sum over the owner's files is computed once per transaction: a batch of a thousand
    small files must not rescan ten thousand rows a thousand times.
    """
    key = ("used_bytes", owner_id)
    if key not in tx.memo:
        tx.memo[key] = await used_bytes(tx, owner_id)
    if tx.memo[key] + delta > quota_bytes:
        from ..errors import InsufficientStorage
        raise InsufficientStorage(message, quota=quota_bytes)


def spent_quota(tx: Tx, owner_id: str, delta: int) -> None:
    """Keep the per-transaction used-bytes figure true after a change of ``delta`` bytes."""
    key = ("used_bytes", owner_id)
    if key in tx.memo:
        tx.memo[key] += delta


# --- revocation epochs: what a block grant was minted under (issue 12, finding 13) -----------

@dataclass(frozen=True)
class GrantEpochs:
    """The access a block grant was minted under, checked again every time the grant is used.

    Grants are signed tokens that the block routes verify without the database, so on their own
    they outlive whatever gave them: a revoked share, a removed device, a changed password. Each
    grant therefore names

    * the **session** it was minted for: logging out, removing the device and changing the
      password revoke sessions, and a grant of a revoked session is dead;
    * the user's **grant epoch**, which a password change bumps (so a grant dies with the
      password even if a later change should keep the current session alive);
    * for each folder shared with the user that the grant relies on, that **share's epoch**,
      which revoking the share bumps. Grants minted under no share (the user's own files) are
      not touched by revoking one: a recipient's other downloads go on.
    """

    session_id: str
    user_epoch: int
    shares: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> list[Any]:
        return [self.session_id, self.user_epoch, [list(s) for s in self.shares]]

    @classmethod
    def from_json(cls, raw: object) -> GrantEpochs | None:
        """The epochs ``raw`` describes, or None if it is not what :meth:`to_json` makes (a grant
        minted before epochs existed counts as revoked)."""
        if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str)
                and type(raw[1]) is int and isinstance(raw[2], list)):
            return None
        shares = []
        for item in raw[2]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and type(item[1]) is int):
                return None
            shares.append((item[0], item[1]))
        return cls(raw[0], raw[1], tuple(shares))


async def grant_epochs(q: Any, user_id: str, session_id: str,
                       workspace_ids: list[str]) -> GrantEpochs:
    """The epochs a grant minted now for ``user_id`` (through ``session_id``) is bound to, for
    content in ``workspace_ids``: the shares it relies on are the shared folders at the root of
    those workspaces that ``user_id`` does not own (a shared folder is the root of its own
    workspace, and shares cannot nest)."""
    user_epoch = int(await q.fetchval("SELECT grant_epoch FROM users WHERE id = ?",
                                      (user_id,)) or 0)
    unique = sorted(set(workspace_ids))
    folders: list[str] = []
    for i in range(0, len(unique), 500):
        chunk = unique[i: i + 500]
        folders += [r["root_id"] for r in await q.fetchall(
            f"SELECT root_id FROM workspaces WHERE id IN ({','.join('?' * len(chunk))})"
            " AND owner_id != ?", (*chunk, user_id))]
    epochs = {f: 0 for f in folders}
    for i in range(0, len(folders), 500):
        chunk = folders[i: i + 500]
        for r in await q.fetchall(
                "SELECT folder_id, epoch FROM share_epochs WHERE grantee_id = ?"
                f" AND folder_id IN ({','.join('?' * len(chunk))})", (user_id, *chunk)):
            epochs[r["folder_id"]] = int(r["epoch"])
    return GrantEpochs(session_id, user_epoch, tuple(sorted(epochs.items())))


async def grant_epochs_hold(q: Any, user_id: str, epochs: GrantEpochs | None) -> bool:
    """Whether a grant of ``user_id`` minted under ``epochs`` still stands: its session is live
    (not revoked, not expired, its device not removed), the user's grant epoch and those of the
    shares it relies on are still the ones it was minted under. One indexed query (primary keys
    only), so the block routes can afford it on every request."""
    if epochs is None:
        return False
    pairs = list(epochs.shares)
    row = await q.fetchone(grant_check_sql(len(pairs)),
                           (epochs.session_id, user_id, time.time(), epochs.user_epoch,
                            *(v for pair in pairs for v in pair)))
    return row is not None


def grant_check_sql(shares: int) -> str:
    """The query of :func:`grant_epochs_hold` for a grant relying on ``shares`` shares
    (parameters: session id, user id, now, user epoch, then folder id and epoch per share)."""
    stale = ""
    if shares:
        values = ",".join("(?, CAST(? AS INTEGER))" for _ in range(shares))
        stale = (" AND NOT EXISTS (SELECT 1 FROM share_epochs e JOIN (VALUES " + values +
                 ") AS c ON e.folder_id = c.column1 AND e.epoch != c.column2"
                 " WHERE e.grantee_id = s.user_id)")
    return ("SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id"
            " LEFT JOIN devices d ON d.id = s.device_id"
            " WHERE s.id = ? AND s.user_id = ? AND s.revoked_at IS NULL AND s.expires_at > ?"
            " AND d.removed_at IS NULL AND u.grant_epoch = ?" + stale)


async def bump_grant_epoch(tx: Tx, user_id: str) -> None:
    """Every block grant minted for ``user_id`` so far stops working (a password change)."""
    await tx.execute("UPDATE users SET grant_epoch = grant_epoch + 1 WHERE id = ?", (user_id,))


async def revocations_of(q: Any, user_id: str) -> tuple[int, int]:
    """A value that changes whenever a share of something with ``user_id`` is revoked or left
    (each bumps a share epoch, :func:`bump_share_epoch`): read before and after a read of
    their view, it tells a process that another process took something back meanwhile."""
    row = await q.fetchone("SELECT COUNT(*), COALESCE(SUM(epoch), 0) FROM share_epochs"
                           " WHERE grantee_id = ?", (user_id,))
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)


async def bump_share_epoch(tx: Tx, folder_id: str, grantee_id: str) -> None:
    """Every block grant that ``grantee_id`` was given through the share of ``folder_id`` stops
    working (the share is revoked). Kept apart from the share's row, which revoking deletes:
    a later share of the same folder with the same person starts from the bumped epoch."""
    await tx.execute(
        "INSERT INTO share_epochs (folder_id, grantee_id, epoch) VALUES (?, ?, 1)"
        " ON CONFLICT (folder_id, grantee_id) DO UPDATE SET epoch = share_epochs.epoch + 1",
        (folder_id, grantee_id))
