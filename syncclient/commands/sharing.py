"""``share`` and ``leave``: share a folder with someone, and leave a folder shared with you."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ApiError
from .display import shown
from .lookup import remote_path_of, resolve_entry, with_remote


async def cmd_share(args: argparse.Namespace, config_dir: Path) -> int:
    conf, remote = await with_remote(config_dir)
    path = remote_path_of(conf, args.path)
    async with remote:
        entry = await resolve_entry(remote, path)
        out = await remote.call("POST", f"/api/files/{entry['file_id']}/share",
                                {"user_email": args.user_email, "permission": args.permission})
    print(f"Shared {path} with {args.user_email} ({args.permission}); it appears in their "
          f"folder as 'Shared with me/{out['mount_name']}'.")
    return 0


async def cmd_leave(args: argparse.Namespace, config_dir: Path) -> int:
    """Leave a folder someone shared with this account: the server ends the share for this
    account only, and every device of it removes the folder at its next sync, as when the owner
    unshares it (the owner's folder is not touched; a file changed here and not yet synced is
    kept on this computer)."""
    conf, remote = await with_remote(config_dir)
    path = remote_path_of(conf, args.path)
    async with remote:
        shares = (await remote.call("GET", "/api/shared-with-me"))["shares"]
        key = path.casefold()
        mine = next((s for s in shares if s["path"].casefold() == key), None)
        if mine is None:
            raise ApiError(404, "not_found", f"{shown(path)} is not a folder shared with you"
                           " (those are the folders in 'Shared with me')")
        await remote.call("DELETE", f"/api/shares/{mine['share_id']}")
    print(f"Left {shown(path)}, shared by {mine['owner']['email']}; it leaves your devices at "
          "their next sync, and stays in its owner's drive.")
    return 0
