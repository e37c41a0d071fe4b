"""Patches (driveproto/patches.py): round trips for random old/new pairs, both ways (the
whole base as dictionary, and the pieces an uploader found through a signature), bounded
decoding, a wrong base never yielding the block, and the upload body's format."""

from __future__ import annotations

import hashlib
import json
import random
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from driveproto import patches
from driveproto.blocks import BLOCK_SIZE, BlockCorrupt
from driveproto.patches import BaseRef, PatchError

KiB, MiB = 1024, 1024 * 1024


def _random(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def _text(size: int, seed: int) -> bytes:
    """Words drawn at random from 5,000 (zstd makes it about 2.8 times smaller)."""
    rnd = random.Random(seed)
    vocab = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 10)))
             for _ in range(5000)]
    return b" ".join(rnd.choices(vocab, k=size // 5 + 1))[:size]


@st.composite
def pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """An old block and a new one made from it by a few random edits (or unrelated)."""
    size = draw(st.integers(0, 2 * MiB))
    seed = draw(st.integers(0, 2**32))
    old = _random(size, seed) if draw(st.booleans()) else _text(size, seed)
    new = bytearray(old)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(new)))
        kind = draw(st.sampled_from(["insert", "delete", "overwrite", "unrelated"]))
        n = draw(st.integers(1, 64 * KiB))
        if kind == "insert":
            new[at:at] = _random(n, seed + at)
        elif kind == "delete":
            del new[at:at + n]
        elif kind == "overwrite":
            new[at:at + n] = _random(n, seed + at + 1)
        else:
            new = bytearray(_random(len(new), seed + 2))
    return old, bytes(new)


@settings(max_examples=40, deadline=None)
@given(pairs())
def test_a_patch_against_the_whole_base_round_trips(pair: tuple[bytes, bytes]) -> None:
    old, new = pair
    patch = patches.make_patch(new, old)
    assert patches.apply_patch(patch, old) == new


@settings(max_examples=40, deadline=None)
@given(pairs(), st.integers(1, 3))
def test_an_upload_patch_from_signatures_round_trips(pair: tuple[bytes, bytes],
                                                     nbases: int) -> None:
    """The uploader has only the new bytes and the bases' signatures; the server rebuilds
    the same dictionary from the bases and gets the new block back."""
    old, new = pair
    bases = [old, *(_random(len(old) // 2 + 1, i) for i in range(1, nbases))]
    sigs = [patches.parse_signature(patches.signature(b)) for b in bases]
    runs, dictionary = patches.find_pieces(new, sigs)
    refs = [BaseRef(hashlib.sha256(b).hexdigest(), r) for b, r in zip(bases, runs,
                                                                       strict=True)]
    assert patches.dictionary(bases, refs) == dictionary
    body = patches.encode_upload(refs, patches.make_patch(new, dictionary))
    got_refs, patch = patches.parse_upload(body)
    assert got_refs == [BaseRef(r.hash, r.pieces or ()) for r in refs]
    assert patches.apply_patch(patch, patches.dictionary(bases, got_refs)) == new


def test_a_small_edit_makes_a_small_patch_both_ways() -> None:
    old = _text(MiB, 1)
    new = old[:500_000] + _random(100, 2) + old[500_100:]
    whole = len(zstandard.ZstdCompressor(level=3).compress(new))
    assert len(patches.make_patch(new, old)) < 1000 < whole // 100
    runs, dictionary = patches.find_pieces(new, [patches.parse_signature(
        patches.signature(old))])
    assert len(patches.make_patch(new, dictionary)) < 10_000
    assert len(patches.signature(old)) < 2_000  # ~12 bytes per 8 KiB


def test_a_wrong_base_never_yields_the_block() -> None:
    old, other = _random(MiB, 1), _random(MiB, 2)
    new = old[:1000] + b"edit" + old[1000:]
    patch = patches.make_patch(new, old)
    try:
        out = patches.apply_patch(patch, other)
    except BlockCorrupt:
        return
    assert out != new  # decodable against the wrong base, it makes other bytes: the
    # receiver's SHA-256 check refuses them (tests/test_patch_routes.py)


def test_decoding_is_bounded() -> None:
    base = b"x" * 1000
    big = patches.make_patch(b"\0" * (BLOCK_SIZE + 1), base)
    with pytest.raises(BlockCorrupt, match="at most one block"):
        patches.apply_patch(big, base)
    small = patches.make_patch(b"y" * 5000, base)
    with pytest.raises(BlockCorrupt):
        patches.apply_patch(small, base, max_size=4000)
    with pytest.raises(BlockCorrupt):
        patches.apply_patch(small + b"trailing", base)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"z" * 100)
    with pytest.raises(BlockCorrupt, match="declare"):
        patches.apply_patch(unsized, base)
    with pytest.raises(BlockCorrupt):
        patches.apply_patch(b"not zstd at all", base)


@pytest.mark.parametrize("body", [
    b"", b"DPT1", b"XXXX\0\0\0\0{}", b"DPT1\0\0\0\x05{}",
    b"DPT1" + struct.pack(">I", 2) + b"[]",
    b"DPT1" + struct.pack(">I", 9) + b'{"bases":',
    b"DPT1" + struct.pack(">I", 12) + b'{"bases":[]}',
    b"DPT1" + struct.pack(">I", 23) + b'{"bases":[{"hash":1}]}',
    b"DPT1" + struct.pack(">I", 10**6) + b"{}",
])
def test_a_malformed_upload_body_is_refused(body: bytes) -> None:
    with pytest.raises(PatchError):
        patches.parse_upload(body)


def test_bases_and_pieces_are_checked() -> None:
    h = "a" * 64
    many = [BaseRef(h)] * (patches.MAX_BASES + 1)
    with pytest.raises(PatchError, match="bases"):
        patches.parse_upload(patches.encode_upload(many, b""))
    for pieces in ([[0, 1.5]], [[0]], "all", [[True, 2]]):
        raw = json.dumps({"bases": [{"hash": h, "pieces": pieces}]}).encode()
        with pytest.raises(PatchError, match="pieces"):
            patches.parse_upload(b"DPT1" + struct.pack(">I", len(raw)) + raw)
    base = _random(100 * KiB)
    n = len(patches.piece_lengths(base))
    assert patches.dictionary([base], [BaseRef(h, ((0, n),))]) == base
    for runs in (((0, n + 1),), ((3, 3),), ((-1, 2),)):
        with pytest.raises(PatchError):
            patches.dictionary([base], [BaseRef(h, runs)])
    with pytest.raises(PatchError, match="limit"):
        patches.dictionary([b"x" * (patches.MAX_DICTIONARY + 1)], [BaseRef(h)])


def test_a_signature_is_checked() -> None:
    assert patches.parse_signature(b"") == []
    with pytest.raises(PatchError):
        patches.parse_signature(b"x" * 13)
    with pytest.raises(PatchError):
        patches.parse_signature(struct.pack(">I8s", BLOCK_SIZE + 1, b"12345678"))
    with pytest.raises(PatchError):
        patches.parse_signature(struct.pack(">I8s", 0, b"12345678"))


@pytest.mark.parametrize("old, new, want", [
    ("abcdef", "abXdef", {2: ["c"]}),  # one block changed: its predecessor
    ("abcdef", "abXYef", {2: ["c", "d"], 3: ["d", "c"]}),  # two for two, nearest first
    ("abcdef", "abcdefG", {6: ["f"]}),  # appended: the old last block
    ("abcdef", "Xbcdef", {0: ["a"]}),  # the first block changed
    ("abcdef", "abXef", {2: ["c", "d"]}),  # two blocks became one
    ("abcdef", "abcXdef", {3: ["c", "d"]}),  # inserted between: its neighbours
    ("abc", "XYZ", {0: ["a", "b", "c"], 1: ["b", "c", "a"], 2: ["c", "b", "a"]}),
    ("abcdefgh", "aXh", {1: ["b", "g", "c"]}),  # a long deletion: both ends of the gap first
    ("", "XY", {}),  # nothing to patch against
    ("abc", "abc", {}),
])
def test_pick_bases(old: str, new: str, want: dict[int, list[str]]) -> None:
    assert patches.pick_bases(list(old), list(new)) == want
    for bases in patches.pick_bases(list(old), list(new), limit=1).values():
        assert len(bases) == 1
