"""How a file is cut into blocks and named, identically on the server and the client.

A file's identity on the server is the list of its block hashes, and a client that computed them
differently would upload every file again and never see its own changes come back as "already
synced"; so both sides import this one module.

This module has the fixed scheme, :data:`CHUNKING_SCHEME` (4 MiB blocks, the last one shorter,
an empty file has no blocks), and what every scheme shares; :mod:`driveproto.chunking` names
the schemes and has the content-defined one that ``drive-sync`` cuts new versions by. A block
is named by the SHA-256 of its plaintext, and a file's checksum is the SHA-256 over its
blocks' binary SHA-256s, in order, whatever the scheme. The scheme is recorded per file
version, so old versions are never reinterpreted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "BLOCK_SIZE",
    "CHUNKING_SCHEME",
    "CHUNKING_SCHEMES",
    "BlockCorrupt",
    "BlockInfo",
    "BlockSplitter",
    "block_hash",
    "content_checksum",
    "hash_file",
    "is_block_hash",
    "iter_file_blocks",
]

BLOCK_SIZE = 4 * 1024 * 1024
"""Size of every block but a file's last one."""

CHUNKING_SCHEME = "fixed-4MiB-v1"
"""Name of the chunking rule above; stored with each file version."""

CHUNKING_SCHEMES = frozenset({CHUNKING_SCHEME})
"""The schemes this module cuts by; :data:`driveproto.chunking.SCHEMES` has them all."""

_HASH_RE = re.compile(r"[0-9a-f]{64}")


class BlockCorrupt(Exception):
    """A block's bytes are not what they claim to be.

    Raised for anything that fails verification: a hash mismatch, a damaged or
    tampered sealed blob, an undecodable or oversized wire payload. Callers
    treat all of these the same way (refuse the data), so one type suffices;
    the message says which check failed.
    """


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """Where one block sits in a file: its hash, its length and its offset."""

    hash: str
    size: int
    offset: int


def block_hash(data: bytes | bytearray | memoryview) -> str:
    """Return the lowercase hex SHA-256 of a plaintext block."""
    return hashlib.sha256(data).hexdigest()


def is_block_hash(value: object) -> bool:
    """Tell whether ``value`` is a well-formed block hash (64 lowercase hex digits).

    Routes validate hashes taken from URLs and JSON with this before using
    them, so a malformed one is a clean 400 instead of a failure deep inside.
    """
    return isinstance(value, str) and _HASH_RE.fullmatch(value) is not None


def content_checksum(hashes: Iterable[str]) -> str:
    """A file's checksum: SHA-256 over its blocks' binary SHA-256s, in order (Dropbox-style).

    Computable from the block list alone, so client and server agree without rereading data;
    the client compares its files with the server's by this value alone.
    """
    h = hashlib.sha256()
    for block in hashes:
        h.update(bytes.fromhex(block))
    return h.hexdigest()


def iter_file_blocks(path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(hash, data)`` for each block of the file at ``path``.

    Reads one block at a time, so memory stays at one block whatever the file
    size. An empty file yields nothing.
    """
    with open(path, "rb") as f:
        while True:
            data = _read_full(f, BLOCK_SIZE)
            if not data:
                return
            yield block_hash(data), data
            if len(data) < BLOCK_SIZE:
                return


def hash_file(path: str | os.PathLike[str]) -> list[BlockInfo]:
    """Return the block list of the file at ``path`` (memory-bounded like :func:`iter_file_blocks`)."""
    blocks: list[BlockInfo] = []
    offset = 0
    for digest, data in iter_file_blocks(path):
        blocks.append(BlockInfo(hash=digest, size=len(data), offset=offset))
        offset += len(data)
    return blocks


def _read_full(f: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless the file ends first.

    A single ``read`` may return less on pipes and some file systems; a short
    read in the middle of a file would shift every later block boundary.
    """
    data = f.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    remaining = size - len(data)
    while remaining:
        more = f.read(remaining)
        if not more:
            break
        parts.append(more)
        remaining -= len(more)
    return b"".join(parts)


class BlockSplitter:
    """Cut a stream of arbitrarily sized chunks into blocks.

    Used where the bytes arrive in pieces (an aiohttp request body read with
    ``iter_chunked``): it holds at most one partial block, so memory stays
    bounded by :data:`BLOCK_SIZE` plus the size of the chunk being fed. The
    blocks it produces are exactly those of :func:`iter_file_blocks` for the
    same bytes.
    """

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self._block_size = block_size
        self._buffer = bytearray()
        self._finished = False

    @property
    def pending(self) -> int:
        """Number of buffered bytes not yet returned as a block."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return the blocks it completed (possibly none)."""
        if self._finished:
            raise RuntimeError("BlockSplitter.feed() called after finish()")
        size = self._block_size
        view = memoryview(data)
        blocks: list[bytes] = []
        if self._buffer:
            take = min(size - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < size:
                return blocks
            blocks.append(bytes(self._buffer))
            self._buffer.clear()
        # Whole blocks straight from the input, without copying through the buffer.
        while len(view) >= size:
            blocks.append(bytes(view[:size]))
            view = view[size:]
        self._buffer += view
        return blocks

    def finish(self) -> bytes | None:
        """Return the final short block, or ``None`` if the stream ended on a boundary."""
        self._finished = True
        if not self._buffer:
            return None
        tail = bytes(self._buffer)
        self._buffer.clear()
        return tail
