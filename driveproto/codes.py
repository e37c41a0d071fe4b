"""The error codes (``{"error": {"code": ...}}``) the sync client branches on.

Every other code is shown to the user as it comes; these change what the client does, so a
server that renamed one would silently change the client's behaviour. ``tests/test_driveproto.py``
checks that the server still emits each of them and that docs/api.md documents it.
"""

from __future__ import annotations

__all__ = ["CLIENT_CODES", "DEVICE_NAME_TAKEN", "GRANT_REVOKED", "MISSING_BLOCKS",
           "VERSION_CONFLICT"]

VERSION_CONFLICT = "version_conflict"
"""409 from upload-init or complete: the file moved past ``base_version``; keep the local bytes
as a conflicted copy."""

MISSING_BLOCKS = "missing_blocks"
"""400 from complete: a block it names is not stored (a receipt kept across a crash whose block
was collected since); send the blocks again."""

DEVICE_NAME_TAKEN = "device_name_taken"
"""409 from login with ``new_device``: the account has a device of that name already."""

GRANT_REVOKED = "grant_revoked"
"""403 from a block route: the upload grant ended with the access it was issued under (a share
revoked or re-made, a session ended, a server upgrade); ask upload-init again. Not the 403 of a
folder shared to view only, which keeps the edit as a conflicted copy."""

CLIENT_CODES = frozenset({VERSION_CONFLICT, MISSING_BLOCKS, DEVICE_NAME_TAKEN, GRANT_REVOKED})
