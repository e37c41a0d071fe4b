"""The framed bodies of the two batch routes, both sides of each.

``POST /blocks/batch`` (client → server): frames back to back, each ``hash`` (64 ASCII hex) ·
encoding (1 byte: 0 identity, 1 zstd) · payload length (u32 big-endian) · payload. Parsing is
the server's side and treats the body as hostile: every header is checked, and decoded bytes
are counted so that no frame inflates past a budget.

``POST /api/files/content/batch`` (server → client): one frame per requested file, each a 4-byte
big-endian header length, a JSON header, then ``header["length"]`` payload bytes (none for an
error frame).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from .blocks import BLOCK_SIZE, BlockCorrupt, is_block_hash
from .replies import ContentHeader
from .wire import WIRE_IDENTITY, WIRE_ZSTD, compress_for_wire, decompress_from_wire

__all__ = [
    "BATCH_FRAME",
    "BudgetExceeded",
    "FrameError",
    "content_frame",
    "encode_batch",
    "encode_frame",
    "parse_batch",
    "read_content_frame",
]

BATCH_FRAME = struct.Struct(">64sBI")
"""A ``/blocks/batch`` frame header: hash (hex), encoding (0 identity, 1 zstd), payload length."""
_ENCODING_BYTE = {WIRE_IDENTITY: 0, WIRE_ZSTD: 1}
_CONTENT_HEADER_LEN = struct.Struct(">I")


class FrameError(ValueError):
    """A body that is not a well-formed sequence of frames (the message says where)."""


class BudgetExceeded(Exception):
    """The frames decode to more bytes than the budget :func:`parse_batch` was given."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"the frames decode to more than {budget} bytes")
        self.budget = budget


# --- POST /blocks/batch -----------------------------------------------------------------------

def encode_frame(h: str, data: bytes) -> bytes:
    """One block as a batch frame, compressed when that makes it smaller.

    Callers that fill a body up to a size limit encode each block once with this and join the
    frames, rather than encoding a block to measure it and again to send it.
    """
    encoding, payload = compress_for_wire(data)
    return BATCH_FRAME.pack(h.encode(), _ENCODING_BYTE[encoding], len(payload)) + payload


def encode_batch(blocks: Iterable[tuple[str, bytes]]) -> bytes:
    """A ``/blocks/batch`` body for ``(hash, plaintext)`` pairs: the client side of
    :func:`parse_batch`."""
    return b"".join(encode_frame(h, data) for h, data in blocks)


def _frames(body: bytes) -> list[tuple[str, int, int, int]]:
    """The frames' headers, checked, without decoding anything: (hash, encoding byte, payload
    offset, payload length) each.

    :raises FrameError: a truncated or malformed frame.
    """
    out: list[tuple[str, int, int, int]] = []
    pos = 0
    while pos < len(body):
        if len(body) - pos < BATCH_FRAME.size:
            raise FrameError("truncated batch frame header")
        raw_hash, enc, length = BATCH_FRAME.unpack_from(body, pos)
        pos += BATCH_FRAME.size
        h = raw_hash.decode("ascii", "replace")
        if not is_block_hash(h) or enc not in (0, 1) or length > BLOCK_SIZE:
            raise FrameError(f"invalid batch frame for block {h[:16]}…")
        if len(body) - pos < length:
            raise FrameError("truncated batch frame payload")
        out.append((h, enc, pos, length))
        pos += length
    return out


def frame_hashes(body: bytes) -> list[str]:
    """The blocks a batch body claims to carry (headers only: nothing is inflated).

    :raises FrameError: a truncated or malformed frame.
    """
    return [h for h, _, _, _ in _frames(body)]


def parse_batch(body: bytes, budget: int | None = None, known: Mapping[str, int] | None = None,
                most: int | None = None) -> list[tuple[str, bytes]]:
    """The ``(hash, plaintext)`` pairs of a ``/blocks/batch`` body, in order.

    The hash is only checked for form here; whether the plaintext matches it is the caller's
    check (it costs a SHA-256 per block, better spent off the event loop).

    Inflating is bounded before it happens (a body of tiny zstd frames that each inflate to
    4 MiB is a decompression bomb): ``budget`` bounds the decoded bytes of blocks not in
    ``known``; ``known`` gives the size of blocks whose size is settled (sent before under the
    same grant: inflated to that size and no further, not counted); a block repeated within
    the batch is decoded once; and nothing in all past ``most`` bytes.

    :raises FrameError: a truncated or malformed frame.
    :raises BudgetExceeded: a frame that would decode past what ``budget`` or ``most`` has left.
    :raises BlockCorrupt: a payload that does not decode (or is over one block).
    """
    out: list[tuple[str, bytes]] = []
    decoded: dict[str, bytes] = {}
    sizes = known or {}
    left = budget
    for h, enc, pos, length in _frames(body):
        if h in decoded:
            out.append((h, decoded[h]))
            continue
        payload = body[pos: pos + length]
        encoding = WIRE_ZSTD if enc else WIRE_IDENTITY
        counted = h not in sizes
        limit = sizes.get(h, BLOCK_SIZE)
        if counted and left is not None:
            limit = min(limit, left)
        if most is not None:
            limit = min(limit, most)
        try:
            data = decompress_from_wire(encoding, payload, limit)
        except BlockCorrupt:
            if limit < sizes.get(h, BLOCK_SIZE):  # more than is left (or corrupt): refused
                raise BudgetExceeded(budget if budget is not None else most or 0) from None
            raise
        if most is not None:
            most -= len(data)
        if counted and left is not None:
            left -= len(data)
        decoded[h] = data
        out.append((h, data))
    return out


# --- POST /api/files/content/batch ------------------------------------------------------------

def content_frame(header: Mapping[str, Any]) -> bytes:
    """A frame's length prefix and JSON header; its payload (``header["length"]`` bytes, none
    for an error frame) follows."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    return _CONTENT_HEADER_LEN.pack(len(raw)) + raw


async def read_content_frame(readexactly: Callable[[int], Awaitable[bytes]]
                             ) -> tuple[ContentHeader, bytes]:
    """Read one frame with ``readexactly`` (e.g. ``resp.content.readexactly``): its header and
    its payload as sent (still in ``header["encoding"]``; an error frame's is empty).

    :raises FrameError: a header that is not a JSON object with a sound ``length``.
    """
    (size,) = _CONTENT_HEADER_LEN.unpack(await readexactly(_CONTENT_HEADER_LEN.size))
    try:
        header = json.loads(await readexactly(size))
    except ValueError as exc:
        raise FrameError(f"content frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("content frame header is not an object")
    length = header.get("length", 0)
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise FrameError(f"content frame length {length!r} is not a byte count")
    payload = await readexactly(length) if length else b""
    return cast(ContentHeader, header), payload
