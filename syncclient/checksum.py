"""A file's checksum from its block hashes, exactly as the server computes it.

Mirrors ``driveserver.meta.versions.content_checksum`` (SHA-256 over the blocks' binary
SHA-256s, in order): the client compares its files with the server's by this value alone.
It is repeated here rather than imported so the client does not pull in the server's database
layer; ``tests/test_sync_engine.py`` checks that the two agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def content_checksum(hashes: Iterable[str]) -> str:
    h = hashlib.sha256()
    for block in hashes:
        h.update(bytes.fromhex(block))
    return h.hexdigest()
