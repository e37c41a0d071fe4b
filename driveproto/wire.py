"""How one block travels between client and server: as-is or zstd-compressed.

The encoding is named in ``X-Block-Encoding`` (``PUT``/``GET /blocks/{hash}``), in a batch
frame's encoding byte, and in a ``content/batch`` frame's header. Decoding is bounded:
:func:`decompress_from_wire` never produces more than one block's worth of output, whatever the
payload claims, so a small upload cannot make the server (nor a hostile server the client)
allocate gigabytes.
"""

from __future__ import annotations

import zstandard

from .blocks import BLOCK_SIZE, BlockCorrupt

__all__ = [
    "WIRE_ENCODINGS",
    "WIRE_IDENTITY",
    "WIRE_ZSTD",
    "compress_for_wire",
    "decompress_from_wire",
]

WIRE_IDENTITY = "identity"
WIRE_ZSTD = "zstd"
WIRE_ENCODINGS = frozenset({WIRE_IDENTITY, WIRE_ZSTD})

_ZSTD_LEVEL = 3
"""zstd's default level: most of the gain at a fraction of the CPU of higher levels."""


def compress_for_wire(data: bytes) -> tuple[str, bytes]:
    """Compress a block for transfer.

    Returns ``("zstd", compressed)``, or ``("identity", data)`` when zstd does
    not make it smaller (already-compressed media, random data) so the receiver
    does not pay for a useless decompression.
    """
    compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)
    if len(compressed) < len(data):
        return WIRE_ZSTD, compressed
    return WIRE_IDENTITY, data


def decompress_from_wire(encoding: str, payload: bytes, max_size: int = BLOCK_SIZE) -> bytes:
    """Undo :func:`compress_for_wire`, producing at most ``max_size`` bytes.

    The payload is untrusted. A zstd frame header may declare any content size,
    and python-zstandard would allocate it up front, so the declared size is
    checked before decompressing, and frames that do not declare one are
    decompressed into a buffer of ``max_size`` that fails rather than grows.
    Trailing bytes after the frame are rejected, so one payload has exactly one
    meaning.

    :raises BlockCorrupt: unknown encoding, undecodable payload, or output over ``max_size``.
    """
    if encoding == WIRE_IDENTITY:
        if len(payload) > max_size:
            raise BlockCorrupt(f"block of {len(payload)} bytes exceeds the limit of {max_size}")
        return bytes(payload)
    if encoding != WIRE_ZSTD:
        raise BlockCorrupt(f"unknown block encoding {encoding!r}")
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise BlockCorrupt(f"invalid zstd frame header: {exc}") from None
    declared = params.content_size
    dctx = zstandard.ZstdDecompressor()
    try:
        if declared == zstandard.CONTENTSIZE_UNKNOWN:
            data = dctx.decompress(payload, max_output_size=max_size, allow_extra_data=False)
        elif declared > max_size:
            raise BlockCorrupt(
                f"zstd frame declares {declared} bytes, over the limit of {max_size}"
            )
        else:
            data = dctx.decompress(payload, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise BlockCorrupt(
            f"zstd payload is corrupt or decompresses to more than {max_size} bytes: {exc}"
        ) from None
    if len(data) > max_size:  # belt and braces; the paths above already bound it
        raise BlockCorrupt(f"block of {len(data)} bytes exceeds the limit of {max_size}")
    return data
