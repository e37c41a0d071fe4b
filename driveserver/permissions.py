"""The one place that decides whether a user may do something.

Every route asks this module instead of comparing owner ids itself: :func:`authorize` for an
action on a file, :func:`authorize_move` and :func:`authorize_trash` for the two changes that
also depend on where the file sits in the user's view, :func:`writable_base` for a path a user
writes to, :func:`authorize_share` / :func:`authorize_end_share` for administering a share,
:func:`own_device` for a device id a request names, and :func:`authorize_link_admin` /
:func:`link_root` for links. (A block receipt's owner is checked where receipts are read,
``blocks.grants.Grants.receipt_for``: the block routes never touch the database.)

A user's :class:`Role` on a file is ``owner`` when they own the file's workspace, otherwise the
strongest share on the file or any folder above it (``edit`` or ``view``), otherwise nothing —
and "nothing" is answered with 404, exactly as for an id that does not exist, so probing ids
reveals nothing about other people's files, shares, links or devices.

This module decides and nothing else: the facts it decides from (workspace owners, share rows,
device owners, readable blocks) come from :mod:`driveserver.meta.access`, which holds their
SQL. At import time it imports nothing else from ``meta``: ``meta.mounts``, ``meta.tree`` and
``meta.shares`` import it.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from driveproto.names import SHARED_ROOT, name_key

from .errors import BadRequest, Conflict, Forbidden, NotFound
from .meta import access
from .meta.access import Query
from .meta.db import Row


class Role(StrEnum):
    """What a user is to a file. The values are what the database stores (``shares.permission``)
    and what the API shows (``"permission"``); a ``str`` enum, so both take a role as it is."""

    OWNER = "owner"
    EDIT = "edit"
    VIEW = "view"

    @property
    def strength(self) -> int:
        return _ROLE_STRENGTH[self]


_ROLE_STRENGTH = {Role.VIEW: 1, Role.EDIT: 2, Role.OWNER: 3}
# The roles a share can give (the owner's is never given).
SHARE_ROLES = (Role.VIEW, Role.EDIT)


class Action(Enum):
    READ = "read"          # metadata, listing, download, versions
    WRITE = "write"        # new version, create inside, rename/move, restore a version
    DELETE = "delete"      # move to the trash (which is the owner's)
    PURGE = "purge"        # restore from the trash, delete for good: the owner's trash, the owner's call
    SHARE = "share"        # share with people, create links


ROLE_ALLOWS: dict[Role, frozenset[Action]] = {
    Role.OWNER: frozenset(Action),
    Role.EDIT: frozenset({Action.READ, Action.WRITE, Action.DELETE}),
    Role.VIEW: frozenset({Action.READ}),
}


# --- files ------------------------------------------------------------------------------------

async def role_for(q: Query, user_id: str, file: Row) -> Role | None:
    """The user's role on ``file``, or None."""
    if await access.workspace_owner_id(q, file["workspace_id"]) == user_id:
        return Role.OWNER
    # A shared folder in its owner's trash gives nobody access any more.
    roles = [Role(r["permission"]) for r in await access.shares_above(q, file["id"], user_id)
             if r["folder_trashed_at"] is None]
    return max(roles, key=lambda r: r.strength) if roles else None


async def may(q: Query, user_id: str, action: Action, file: Row) -> bool:
    """Whether ``user_id`` may do ``action`` on ``file``, for what a reply shows rather than
    what a request does (e.g. who else sees an item: shown to those who may share it)."""
    role = await role_for(q, user_id, file)
    return role is not None and action in ROLE_ALLOWS[role]


async def authorize(q: Query, user_id: str, action: Action, file_id: str) -> Row:
    """Return the file row if ``user_id`` may do ``action`` on it; raise 404 or 403 otherwise."""
    file = await access.file_by_id(q, file_id)
    if file is None:
        raise NotFound("no such file")
    role = await role_for(q, user_id, file)
    if role is None:
        raise NotFound("no such file")
    if action not in ROLE_ALLOWS[role]:
        raise Forbidden(f"your access to this file is {role.value!r}, which does not allow"
                        f" {action.value}")
    return file


async def is_mount_root(q: Query, user_id: str, file: Row) -> bool:
    """Whether ``file`` is a folder shared with ``user_id`` (their mount point under
    ``/Shared with me``): its place there is the share's, not theirs to change."""
    return await access.is_shared_with(q, file["id"], user_id)


async def authorize_move(q: Query, user_id: str, file_id: str) -> Row:
    """The file row if ``user_id`` may move or rename it (the source side of a move: where it
    may go is :func:`writable_base` and, once the destination folder is known,
    :func:`authorize_workspace_change`).

    An item in the trash is not there to move (404). A recipient may not move the folder shared
    with them: it keeps its place under ``/Shared with me`` (400 ``invalid_move``, since they
    can see it).
    """
    file = await authorize(q, user_id, Action.WRITE, file_id)
    if file["trashed_at"] is not None:
        raise NotFound("no such file")
    if await is_mount_root(q, user_id, file):
        raise BadRequest(f"a folder shared with you keeps its place under /{SHARED_ROOT}",
                         code="invalid_move")
    return file


async def authorize_workspace_change(q: Query, user_id: str, from_workspace: str,
                                     to_workspace: str) -> None:
    """A move that takes an item into or out of a shared folder (another workspace) is allowed
    only to someone who owns both workspaces: an editor moving a file out would take it from the
    owner; moving one of their own in would hand it to the owner. 403, since they can see both.
    """
    owners = set()
    for workspace_id in (from_workspace, to_workspace):
        owners.add(await access.workspace_owner_id(q, workspace_id))
    if owners != {user_id}:
        raise Forbidden("only the owner can move items into or out of a shared folder",
                        code="forbidden")


async def authorize_trash(q: Query, user_id: str, file_id: str) -> Row:
    """The file row if ``user_id`` may move it to the trash. A recipient may not trash the
    folder shared with them (that would take it from its owner and everyone else); they can
    leave the share instead."""
    file = await authorize(q, user_id, Action.DELETE, file_id)
    if await is_mount_root(q, user_id, file):
        raise Forbidden("only its owner can delete a shared folder; leave it instead"
                        " (DELETE /api/shares/{share_id})", code="forbidden")
    return file


async def authorize_purge(q: Query, user_id: str, file_id: str) -> Row:
    """The row of a trash item (the one the user trashed, not something below it) that
    ``user_id`` may restore or delete for good: the trash is the owner's."""
    file = await authorize(q, user_id, Action.PURGE, file_id)
    if file["trash_root_id"] != file["id"]:
        raise NotFound("no such item in the trash")
    return file


# --- paths in a user's view -------------------------------------------------------------------

def refuse_managed_path(parts: list[str]) -> None:
    """``/Shared with me`` and the mount folders right below it are made by sharing: nobody
    creates, moves onto or uploads to those names (409 ``reserved_name``). Below a mount, the
    share's role decides (see :func:`writable_base`)."""
    if parts and name_key(parts[0]) == name_key(SHARED_ROOT) and len(parts) <= 2:
        raise Conflict(f"/{SHARED_ROOT} and its folders are managed by sharing",
                       code="reserved_name")


async def writable_base(q: Query, user_id: str, parts: list[str]) -> tuple[Row, list[str]]:
    """For a view path ``user_id`` wants to write at: (the folder to resolve the rest under,
    the rest), once they may write below that folder. 409 for a managed name, 404 for a mount
    they do not have, 403 when their role there does not allow writing."""
    from .meta.mounts import view_base  # local: meta.mounts imports this module

    refuse_managed_path(parts)
    base, rest = await view_base(q, user_id, parts)
    assert base is not None  # only the managed /Shared with me has none
    await authorize(q, user_id, Action.WRITE, base["id"])
    return base, rest


# --- blocks ------------------------------------------------------------------------------------

async def readable_block_sizes(q: Query, user_id: str, hashes: list[str]) -> dict[str, int]:
    """Of ``hashes``, those the user may already read, with their sizes.

    A block is readable when a version of a file the user can read references it (their own
    workspaces, or anything below a folder shared with them). Only such blocks may be skipped on
    upload: knowing a hash must never be enough to claim someone else's data.
    """
    owned = await access.block_sizes_in_owned_workspaces(q, user_id, hashes)
    shared = await access.block_sizes_below_live_shares(q, user_id, hashes)
    return {**owned, **shared}


# --- share administration ---------------------------------------------------------------------

class ShareAction(Enum):
    SET_PERMISSION = "set_permission"  # the folder's owner changes what a share allows
    REVOKE = "revoke"                  # the folder's owner takes a share back
    LEAVE = "leave"                    # the recipient gives a share up


async def authorize_share(q: Query, user_id: str, action: ShareAction, share_id: str) -> Row:
    """The share row (see :func:`~driveserver.meta.access.share_with_context`) if ``user_id``
    may do ``action`` to it, else 404 ``no such share``, also for someone who can see the
    folder: share ids are the owner's and each recipient's own, and nobody else's to learn
    about.

    Changing or revoking a share is for whoever may ``SHARE`` the folder (its owner, also while
    it is in their trash); leaving it is for its recipient only.
    """
    share = await access.share_with_context(q, share_id)
    if share is not None:
        if action is ShareAction.LEAVE:
            if share["grantee_id"] == user_id and share["shared_workspace"] is not None:
                return share
        else:
            folder = await access.file_by_id(q, share["file_id"])
            role = None if folder is None else await role_for(q, user_id, folder)
            if role is not None and Action.SHARE in ROLE_ALLOWS[role]:
                return share
    raise NotFound("no such share")


async def authorize_end_share(q: Query, user_id: str, share_id: str
                              ) -> tuple[ShareAction, Row]:
    """``DELETE /api/shares/{id}`` is one route for two people: its recipient leaves, the
    folder's owner revokes. Which of the two (and the share row), or 404 for anyone else."""
    for action in (ShareAction.LEAVE, ShareAction.REVOKE):
        try:
            return action, await authorize_share(q, user_id, action, share_id)
        except NotFound:
            continue
    raise NotFound("no such share")


# --- devices ----------------------------------------------------------------------------------

async def own_device(q: Query, user_id: str, device_id: str) -> bool:
    """Whether ``device_id`` is one of ``user_id``'s devices that has not been removed. A request
    may speak for such a device only (its cursor, its name, the versions it is credited with);
    each caller answers "no" in its route's way (404, or 400 for a field of a body)."""
    device = await access.device_row(q, device_id)
    return device is not None and device["user_id"] == user_id and device["removed_at"] is None


# --- links ------------------------------------------------------------------------------------

async def authorize_link_admin(q: Query, user_id: str, link: Row) -> Row:
    """The linked file if ``user_id`` may manage ``link`` (revoke it): whoever may ``SHARE``
    its file. Anyone else gets 404 ``no such link``, even if they can see the file."""
    try:
        return await authorize(q, user_id, Action.SHARE, link["file_id"])
    except (NotFound, Forbidden):
        raise NotFound("no such link") from None


async def link_root(q: Query, link: Row) -> Row | None:
    """The linked file or folder if ``link`` still gives access, else None: a link never grants
    more than its creator has, so it works only while its creator may still ``SHARE`` the file
    and the file is not in the trash. (Expiry and passwords are the link routes' business.)"""
    try:
        root = await authorize(q, link["created_by"], Action.SHARE, link["file_id"])
    except (NotFound, Forbidden):
        return None
    return None if root["trashed_at"] is not None else root
