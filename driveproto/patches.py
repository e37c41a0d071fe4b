"""Patches: a block sent as the difference from blocks the other side already holds.

A patch is one zstd frame of the new block compressed against a *dictionary* (zstandard's
raw-content dictionary, long-distance matching, a hash table sized so that a 16 MiB dictionary
is indexed whole) that both sides can build from base blocks they both hold:

* **down** (the server to a client that names the blocks it holds): the dictionary is the
  bases' bytes whole, concatenated in the order named;
* **up** (a client whose own copy of the base was overwritten by the edit): the client asks
  the server for the base's *signature* (:func:`signature`: the base cut into pieces of about
  8 KiB by a small FastCDC, 12 bytes per piece), finds those pieces in its new block by cutting
  it the same way, and the dictionary is the base pieces it found, in the base's order. It
  names them (:func:`dictionary`'s ``pieces``), so the server builds the same bytes from the
  base it stores. The rest of the new block is literal, compressed.

The receiver decodes with a bounded output (:func:`apply_patch`, at most one block) and checks
the result's SHA-256 against the name the block is sent under: a wrong base, a wrong piece
list, or a truncated hash that collided all end as a refused block, never as wrong data. The
body of an upload (:func:`encode_upload`) is ``DPT1`` + u32 header length + JSON header + the
frame; docs/chunking.md has the protocol and why it is safe.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zstandard
from pyfastcdc import FastCDC

from .blocks import BLOCK_SIZE, BlockCorrupt, is_block_hash

__all__ = [
    "MAX_BASES",
    "MAX_DICTIONARY",
    "PATCH_ENCODING",
    "BaseRef",
    "PatchError",
    "apply_patch",
    "dictionary",
    "encode_upload",
    "find_pieces",
    "make_patch",
    "parse_signature",
    "parse_upload",
    "pick_bases",
    "piece_lengths",
    "signature",
]

PATCH_ENCODING = "patch"
"""``X-Block-Encoding`` of a block sent as a patch (``GET /blocks/{hash}?base=``)."""

MAX_BASES = 3
"""Base blocks one patch may name: an edit that joins two blocks' ends needs two, and a
deletion that swallows a block three."""

MAX_DICTIONARY = MAX_BASES * BLOCK_SIZE
MAX_HEADER = 64 * 1024
MAGIC = b"DPT1"

_LEVEL = 3
_HASH_LOG = 21  # zstd indexes only the last 2**(hash_log + 3) bytes of a dictionary: 16 MiB
_WINDOW_LOG = 23  # the frame's window: one block (the dictionary is referenced beyond it)
_SIG = struct.Struct(">I8s")

# Pieces of about 8 KiB (pyfastcdc: min + avg), the grain at which an upload finds the base.
_PIECE_MIN, _PIECE_AVG, _PIECE_MAX = 2048, 6144, 65536


class PatchError(Exception):
    """A patch (or its header, or a signature) is malformed: refused, nothing is built."""


@dataclass(frozen=True, slots=True)
class BaseRef:
    """One base of an uploaded patch: its hash, the pieces of it in the dictionary (runs of
    piece indexes ``[start, end)``; None for the whole block) and an optional receipt."""

    hash: str
    pieces: tuple[tuple[int, int], ...] | None = None
    receipt: str | None = None


def _pieces_cdc() -> FastCDC:
    return FastCDC(_PIECE_AVG, min_size=_PIECE_MIN, max_size=_PIECE_MAX,
                   normalized_chunking=1, seed=0)


def piece_lengths(data: bytes | memoryview) -> list[int]:
    """The lengths of the pieces ``data`` is cut into for signatures (deterministic)."""
    if len(data) == 0:
        return []
    return [c.length for c in _pieces_cdc().cut_buf(data)]


def _digest8(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()[:8]


def signature(data: bytes) -> bytes:
    """A block's signature: per piece, u32 length + the first 8 bytes of its SHA-256."""
    out = bytearray()
    pos = 0
    view = memoryview(data)
    for n in piece_lengths(view):
        out += _SIG.pack(n, _digest8(view[pos:pos + n]))
        pos += n
    return bytes(out)


def parse_signature(raw: bytes, max_size: int = BLOCK_SIZE) -> list[tuple[int, bytes]]:
    """``(length, digest8)`` per piece of a :func:`signature`; :class:`PatchError` if it is not
    one (the wrong length, pieces adding up to more than a block)."""
    if len(raw) % _SIG.size:
        raise PatchError("a signature is a whole number of 12-byte records")
    out = [_SIG.unpack_from(raw, i) for i in range(0, len(raw), _SIG.size)]
    if sum(n for n, _ in out) > max_size or any(n == 0 for n, _ in out):
        raise PatchError("a signature describes more than one block")
    return [(int(n), bytes(d)) for n, d in out]


def find_pieces(new: bytes, signatures: Sequence[list[tuple[int, bytes]]]
                ) -> tuple[list[tuple[tuple[int, int], ...]], bytes]:
    """The pieces of each base (by its signature) that occur in ``new``, as runs of indexes
    per base, and the dictionary they make (taken from ``new``'s own bytes, which are the
    base's wherever the digests match). An empty dictionary: nothing in common."""
    where: dict[bytes, tuple[int, int]] = {}
    for b, sig in enumerate(signatures):
        for i, (n, d) in enumerate(sig):
            where.setdefault(d + n.to_bytes(4, "big"), (b, i))
    found: list[dict[int, bytes]] = [{} for _ in signatures]
    view = memoryview(new)
    pos = 0
    for n in piece_lengths(view):
        piece = view[pos:pos + n]
        hit = where.get(_digest8(piece) + n.to_bytes(4, "big"))
        if hit is not None:
            found[hit[0]].setdefault(hit[1], bytes(piece))
        pos += n
    runs = [_runs(sorted(f)) for f in found]
    dictionary = b"".join(f[i] for f in found for i in sorted(f))
    return runs, dictionary


def _runs(indexes: list[int]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return tuple(out)


def dictionary(bases: Sequence[bytes], refs: Sequence[BaseRef]) -> bytes:
    """The dictionary a patch was made against, built from the bases' bytes: each base whole,
    or the pieces its ref names. :class:`PatchError` if a ref names a piece the base lacks."""
    parts: list[bytes | memoryview] = []
    for data, ref in zip(bases, refs, strict=True):
        if ref.pieces is None:
            parts.append(data)
            continue
        lengths = piece_lengths(data)
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        view = memoryview(data)
        for start, end in ref.pieces:
            if not 0 <= start < end <= len(lengths):
                raise PatchError(f"pieces [{start}, {end}) are not in base {ref.hash}")
            parts.append(view[offsets[start]:offsets[end]])
    out = b"".join(parts)
    if len(out) > MAX_DICTIONARY:
        raise PatchError("the bases make a dictionary over the limit")
    return out


def _dict(data: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def make_patch(new: bytes, dictionary: bytes) -> bytes:
    """``new`` as one zstd frame against ``dictionary`` (content size declared)."""
    # zstd indexes only the last 2**(hash_log + 3) bytes of a dictionary: tables as large as
    # this one needs (a 1 MiB base: 2**17), no larger (memory and time grow with them).
    log = min(_HASH_LOG, max(17, (max(1, len(dictionary)) - 1).bit_length() - 3))
    params = zstandard.ZstdCompressionParameters.from_level(
        _LEVEL, window_log=_WINDOW_LOG, hash_log=log, chain_log=log,
        enable_ldm=True, write_content_size=True)
    return zstandard.ZstdCompressor(dict_data=_dict(dictionary),
                                    compression_params=params).compress(new)


def apply_patch(patch: bytes, dictionary: bytes, max_size: int = BLOCK_SIZE) -> bytes:
    """Undo :func:`make_patch`, producing at most ``max_size`` bytes.

    The frame must declare its content size, at most ``max_size``, and be the whole payload;
    the window it may use is bounded too. :raises BlockCorrupt: anything else, or a dictionary
    that is not the one the patch was made against (zstd's checks) — the caller still
    verifies the result's SHA-256, which is what catches a wrong but decodable base."""
    try:
        params = zstandard.get_frame_parameters(patch)
    except zstandard.ZstdError as exc:
        raise BlockCorrupt(f"invalid patch frame header: {exc}") from None
    if params.content_size == zstandard.CONTENTSIZE_UNKNOWN or params.content_size > max_size:
        raise BlockCorrupt("a patch must declare its size, at most one block")
    dctx = zstandard.ZstdDecompressor(dict_data=_dict(dictionary),
                                      max_window_size=1 << _WINDOW_LOG)
    try:
        out = dctx.decompress(patch, max_output_size=max_size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise BlockCorrupt(f"the patch does not apply: {exc}") from None
    if len(out) != params.content_size:
        raise BlockCorrupt("the patch decodes to another size than it declares")
    return out


def encode_upload(bases: Sequence[BaseRef], patch: bytes) -> bytes:
    """The body of ``PUT /blocks/{hash}/patch``."""
    header: dict[str, Any] = {"bases": [
        {"hash": b.hash, **({"pieces": [list(r) for r in b.pieces]} if b.pieces is not None
                            else {}), **({"receipt": b.receipt} if b.receipt else {})}
        for b in bases]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw + patch


def parse_upload(body: bytes) -> tuple[list[BaseRef], bytes]:
    """The bases and the patch frame of an upload body; :class:`PatchError` if malformed."""
    if body[:4] != MAGIC or len(body) < 8:
        raise PatchError("a patch body starts with DPT1 and a header length")
    (n,) = struct.unpack_from(">I", body, 4)
    if n > MAX_HEADER or 8 + n > len(body):
        raise PatchError("the patch header's length is out of range")
    try:
        header = json.loads(body[8:8 + n])
    except ValueError:
        raise PatchError("the patch header is not JSON") from None
    raw = header.get("bases") if isinstance(header, dict) else None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BASES:
        raise PatchError(f"a patch names 1..{MAX_BASES} bases")
    return [_base_ref(b) for b in raw], body[8 + n:]


def _base_ref(raw: object) -> BaseRef:
    if not isinstance(raw, dict) or not is_block_hash(raw.get("hash")):
        raise PatchError("each base is an object with a block hash")
    pieces = raw.get("pieces")
    runs: tuple[tuple[int, int], ...] | None = None
    if pieces is not None:
        if not isinstance(pieces, list) or len(pieces) > BLOCK_SIZE // _PIECE_MIN or not all(
                isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)
                for r in pieces):
            raise PatchError("a base's pieces are a list of [start, end] index pairs")
        runs = tuple((r[0], r[1]) for r in pieces)
    receipt = raw.get("receipt")
    if receipt is not None and not isinstance(receipt, str):
        raise PatchError("a base's receipt is a string")
    return BaseRef(raw["hash"], runs, receipt)


def pick_bases(old: Sequence[str], new: Sequence[str], limit: int = MAX_BASES
               ) -> dict[int, list[str]]:
    """For each block of ``new`` that ``old`` lacks, the blocks of ``old`` it most likely came
    from: those between the same two unchanged neighbours, mapped by position within that gap
    (at most ``limit``, nearest first). Blocks shared by both lists are the anchors; a new
    block with no old block in its gap gets its neighbours' old blocks."""
    if not old or limit < 1:
        return {}
    held = set(old)
    first_old: dict[str, int] = {}
    for i, h in enumerate(old):
        first_old.setdefault(h, i)
    out: dict[int, list[str]] = {}
    i = 0
    last_anchor = -1  # index in old of the previous anchor
    while i < len(new):
        if new[i] in held:
            last_anchor = max(last_anchor, first_old[new[i]])
            i += 1
            continue
        j = i
        while j < len(new) and new[j] not in held:
            j += 1
        nxt = first_old[new[j]] if j < len(new) else len(old)
        if nxt <= last_anchor:  # moved blocks: take the gap after the previous anchor
            nxt = len(old)
        gap = list(range(last_anchor + 1, nxt))
        if not gap:  # a pure insertion: its neighbours are the best guess
            gap = [k for k in (last_anchor, nxt) if 0 <= k < len(old)]
        for k in range(i, j):
            out[k] = _nearest(old, gap, (k - i) / max(1, j - i), (k - i + 1) / max(1, j - i),
                              limit)
        i = j
    return {k: v for k, v in out.items() if v}


def _nearest(old: Sequence[str], gap: list[int], lo: float, hi: float, limit: int) -> list[str]:
    """The blocks of ``gap`` overlapping the fraction ``[lo, hi)`` of it (the two ends first
    when they are more than ``limit``), then the nearest around them."""
    n = len(gap)
    if n == 0:
        return []
    first = min(n - 1, int(lo * n))
    last = max(first, min(n - 1, int(hi * n - 1e-9)))
    picked = list(range(first, last + 1))
    if len(picked) > limit:  # a block that spans a deletion starts in the first, ends in the last
        picked = [picked[0], picked[-1], *picked[1:-1]]
    step = 1
    while len(picked) < limit and (first - step >= 0 or last + step < n):
        for k in (last + step, first - step):
            if 0 <= k < n and len(picked) < limit:
                picked.append(k)
        step += 1
    seen: list[str] = []
    for k in picked[:limit]:
        if old[gap[k]] not in seen:
            seen.append(old[gap[k]])
    return seen
