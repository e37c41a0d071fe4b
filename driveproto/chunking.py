"""Chunking schemes: how a file is cut into blocks, by name, identically on client and server.

Two schemes exist, and a version records which one its client used (``file_versions.chunking``):

* ``fixed-4MiB-v1`` (:data:`FIXED_SCHEME`): every block 4 MiB but the last. Every version
  stored before content-defined chunking uses it; it is still served, and still what a client
  that cuts no other way (the browser, an API script, ``POST /blocks/upload``) sends.
* ``fastcdc2020-512K-1024K-4M-v1`` (:data:`CDC_SCHEME`, the default of ``drive-sync``): a file
  of at most :data:`~driveproto.blocks.BLOCK_SIZE` bytes is one block, as under the fixed
  scheme; a longer one is cut by FastCDC 2020 (the ``pyfastcdc`` implementation, seed 0,
  normalised chunking 1) with a minimum of 512 KiB, an average parameter of 1 MiB (blocks of
  about 1.3 MiB on average) and a maximum of 4 MiB, rarely reached (a cut forced at the
  maximum depends on where the last cut was, not on the bytes there, so it resynchronises
  less). The boundaries depend on the bytes around them only, so an insertion or deletion moves
  one or two boundaries and the blocks after it are the same as before (what lets an edit of a
  100 MB file upload one block instead of every block after it).

Keeping files up to 4 MiB as one block in both schemes means that the vast majority of files
(everything up to 4 MiB) have the same block list, checksum and dedup under either scheme, so
the upgrade changes nothing for them. docs/chunking.md says why the sizes and what a change of
scheme means for "unchanged" detection.

A file's checksum is :func:`~driveproto.blocks.content_checksum` of its block hashes whatever
the scheme; the server never reinterprets a block list, so the scheme is a label the client
uses to compare like with like, not something the server must trust.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from pyfastcdc import FastCDC

from .blocks import (
    BLOCK_SIZE,
    CHUNKING_SCHEME,
    BlockInfo,
    block_hash,
    content_checksum,
    iter_file_blocks,
)

__all__ = [
    "CDC_SCHEME",
    "DEFAULT_SCHEME",
    "FIXED_SCHEME",
    "SCHEMES",
    "chunk_lengths",
    "file_identity",
    "hash_file_as",
    "iter_chunks",
    "split_bytes",
]

FIXED_SCHEME = CHUNKING_SCHEME
CDC_SCHEME = "fastcdc2020-512K-1024K-4M-v1"
DEFAULT_SCHEME = CDC_SCHEME
SCHEMES = frozenset({FIXED_SCHEME, CDC_SCHEME})

CDC_MIN = 512 * 1024
CDC_AVG = 1024 * 1024
CDC_MAX = BLOCK_SIZE  # every block route's size limit holds for every chunk

_READ = 8 * 1024 * 1024


def _cdc() -> FastCDC:
    """A fresh chunker (pyfastcdc objects are not safe to share between threads)."""
    return FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX, normalized_chunking=1, seed=0)


def _check(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown chunking scheme {scheme!r}")


def chunk_lengths(data: bytes | bytearray | memoryview, scheme: str = DEFAULT_SCHEME
                  ) -> list[int]:
    """The lengths of the blocks ``data`` is cut into under ``scheme`` (none for no bytes)."""
    _check(scheme)
    n = len(data)
    if n == 0:
        return []
    if scheme == FIXED_SCHEME or n <= BLOCK_SIZE:
        return [min(BLOCK_SIZE, n - i) for i in range(0, n, BLOCK_SIZE)]
    return [c.length for c in _cdc().cut_buf(data)]


def split_bytes(data: bytes, scheme: str = DEFAULT_SCHEME) -> list[bytes]:
    """``data`` cut into blocks under ``scheme``."""
    out: list[bytes] = []
    pos = 0
    for n in chunk_lengths(data, scheme):
        out.append(data[pos:pos + n])
        pos += n
    return out


class _Prefixed:
    """A reader that serves ``head`` and then the rest of ``f`` (``readinto``, for pyfastcdc)."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head = memoryview(head)
        self._f = f

    def readinto(self, buf: memoryview) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._f.readinto(buf)  # type: ignore[attr-defined]


def iter_chunks(path: str | os.PathLike[str], scheme: str = DEFAULT_SCHEME
                ) -> Iterator[tuple[str, bytes]]:
    """Yield ``(hash, data)`` for each block of the file at ``path`` under ``scheme``.

    Read through a buffer (never mapped: a file truncated under a mapping kills the process),
    so memory stays at a few blocks whatever the file's size. Whether the file is one block is
    decided by the bytes read, not by a stat that may already be stale.
    """
    _check(scheme)
    if scheme == FIXED_SCHEME:
        yield from iter_file_blocks(path)
        return
    with open(path, "rb", buffering=0) as f:
        head = _read_up_to(f, BLOCK_SIZE + 1)
        if len(head) <= BLOCK_SIZE:
            if head:
                yield block_hash(head), head
            return
        for c in _cdc().cut_stream(_Prefixed(head, f)):
            data = bytes(c.data)  # the view is reused for the next chunk
            yield block_hash(data), data


def _read_up_to(f: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        more = f.read(min(left, _READ))
        if not more:
            break
        parts.append(more)
        left -= len(more)
    return b"".join(parts)


def hash_file_as(path: str | os.PathLike[str], scheme: str = DEFAULT_SCHEME) -> list[BlockInfo]:
    """The block list of the file at ``path`` under ``scheme`` (hash, size, offset each)."""
    blocks: list[BlockInfo] = []
    offset = 0
    for digest, data in iter_chunks(path, scheme):
        blocks.append(BlockInfo(hash=digest, size=len(data), offset=offset))
        offset += len(data)
    return blocks


def file_identity(path: str | os.PathLike[str], like: str | None = None
                  ) -> tuple[str, tuple[str, ...]]:
    """A file's checksum and block hashes under the default scheme, unless ``like`` (the
    checksum it is compared with: the synced or scanned record) is that of the same content
    cut by another scheme, in which case that one. So a file synced before the scheme changed
    and merely touched since is still "unchanged", instead of uploading a copy of itself; a
    file that did change is hashed twice (under 0.1 s per 100 MB), once per scheme. Files of
    at most one block are cut alike by every scheme, so they are read once."""
    blocks = tuple(b.hash for b in hash_file_as(path, DEFAULT_SCHEME))
    checksum = content_checksum(blocks)
    if like is None or like == checksum or len(blocks) <= 1:
        return checksum, blocks
    for scheme in sorted(SCHEMES - {DEFAULT_SCHEME}):
        other = tuple(b.hash for b in hash_file_as(path, scheme))
        if content_checksum(other) == like:
            return like, other
    return checksum, blocks
