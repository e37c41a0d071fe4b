"""The error codes (``{"error": {"code": ...}}``) the sync client branches on.

Every other code is shown to the user as it comes; these change what the client does, so a
server that renamed one would silently change the client's behaviour. ``tests/test_driveproto.py``
checks that the server still emits each of them and that docs/api.md documents it.
"""

from __future__ import annotations

__all__ = ["CLIENT_CODES", "DEVICE_NAME_TAKEN", "MISSING_BLOCKS", "VERSION_CONFLICT"]

VERSION_CONFLICT = "version_conflict"
"""409 from upload-init or complete: the file moved past ``base_version``; keep the local bytes
as a conflicted copy."""

MISSING_BLOCKS = "missing_blocks"
"""400 from complete: a block it names is not stored (a receipt kept across a crash whose block
was collected since); send the blocks again."""

DEVICE_NAME_TAKEN = "device_name_taken"
"""409 from login with ``new_device``: the account has a device of that name already."""

CLIENT_CODES = frozenset({VERSION_CONFLICT, MISSING_BLOCKS, DEVICE_NAME_TAKEN})
