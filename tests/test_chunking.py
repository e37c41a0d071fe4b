"""Content-defined chunking (driveproto/chunking.py): the cut points are FastCDC 2020's (checked
against a reference written here from the algorithm), pinned to known values (a scheme's cuts
must never move), deterministic, bounded, and they resynchronise after an insertion or a
deletion, so an edit changes at most two blocks."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC
from pyfastcdc.py.constants import GEAR, MASKS

from driveproto.blocks import BLOCK_SIZE, content_checksum, iter_file_blocks
from driveproto.chunking import (
    CDC_AVG,
    CDC_MAX,
    CDC_MIN,
    CDC_SCHEME,
    FIXED_SCHEME,
    SCHEMES,
    chunk_lengths,
    file_identity,
    hash_file_as,
    iter_chunks,
    split_bytes,
)

MiB = 1024 * 1024
U64 = (1 << 64) - 1


def _random(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def reference_cuts(data: bytes, min_size: int, avg: int, max_size: int, nc: int = 1
                   ) -> list[int]:
    """FastCDC 2020 (Xia et al., "The Design of Fast Content-Defined Chunking", algorithm 2:
    gear hash, normalised chunking with a stricter mask below the average, cut-point skipping
    below the minimum, two bytes per step with the left-shifted gear), written out plainly.
    Only the gear table and the spread-bit masks are taken from the library, as data."""
    bits = round(math.log2(avg))
    mask_s, mask_l = MASKS[bits + nc], MASKS[bits - nc]
    lengths = []
    pos = 0
    while pos < len(data):
        n = len(data) - pos
        if n <= min_size:
            lengths.append(n)
            break
        center = avg if n > avg else n
        end = min(n, max_size)
        h = 0
        cut = end
        i = (min_size // 2) * 2
        while i < (end // 2) * 2:
            m = mask_s if i < (center // 2) * 2 else mask_l
            h = ((h << 2) + ((GEAR[data[pos + i]] << 1) & U64)) & U64
            if not h & ((m << 1) & U64):
                cut = i
                break
            h = (h + GEAR[data[pos + i + 1]]) & U64
            if not h & m:
                cut = i + 1
                break
            i += 2
        lengths.append(cut)
        pos += cut
    return lengths


@pytest.mark.parametrize("min_size, avg, max_size", [(256, 1024, 8192), (2048, 6144, 65536)])
def test_pyfastcdc_cuts_where_the_algorithm_says(min_size: int, avg: int, max_size: int) -> None:
    data = _random(300_000, 7)
    lib = [c.length for c in FastCDC(avg, min_size=min_size, max_size=max_size,
                                     normalized_chunking=1, seed=0).cut_buf(data)]
    assert lib == reference_cuts(data, min_size, avg, max_size)


def test_the_schemes_own_sizes_match_the_reference_too() -> None:
    data = _random(5 * MiB, 8)
    assert chunk_lengths(data, CDC_SCHEME) == reference_cuts(data, CDC_MIN, CDC_AVG, CDC_MAX)


def test_the_cut_points_are_pinned() -> None:
    """A change of library or parameters that moved one boundary would make every client
    re-upload every large file: the scheme's name must change with its cuts."""
    lengths = chunk_lengths(_random(24 * MiB, 0x601DE), CDC_SCHEME)
    assert len(lengths) == 16 and lengths[:4] == [1122189, 1172508, 1792639, 1566005]
    assert hashlib.sha256(repr(lengths).encode()).hexdigest() == \
        "9db3d2b94fe1828b50a9d0b8cae0298aad9b82c19ef006a72f6b0f8304badc09"


def test_a_file_of_at_most_one_block_is_one_block_under_every_scheme() -> None:
    for size in (1, 4096, CDC_MIN, CDC_MIN + 1, BLOCK_SIZE):
        data = _random(size, size)
        assert {s: chunk_lengths(data, s) for s in SCHEMES} == {s: [size] for s in SCHEMES}
    assert chunk_lengths(b"", CDC_SCHEME) == []
    assert len(chunk_lengths(_random(BLOCK_SIZE + 1), CDC_SCHEME)) > 1


def test_fixed_scheme_is_the_old_cutting() -> None:
    data = _random(9 * MiB + 3)
    assert chunk_lengths(data, FIXED_SCHEME) == [BLOCK_SIZE, BLOCK_SIZE, MiB + 3]


def test_unknown_scheme_refused() -> None:
    with pytest.raises(ValueError):
        chunk_lengths(b"x", "nope-v1")


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE, BLOCK_SIZE + 1, 20 * MiB + 17])
def test_reading_a_file_cuts_it_as_the_bytes_are_cut(tmp_path: Path, size: int) -> None:
    data = _random(size, size)
    path = tmp_path / "f"
    path.write_bytes(data)
    blocks = hash_file_as(path, CDC_SCHEME)
    assert [b.size for b in blocks] == chunk_lengths(data, CDC_SCHEME)
    assert [b.hash for b in blocks] == [hashlib.sha256(x).hexdigest()
                                        for x in split_bytes(data, CDC_SCHEME)]
    assert [d for _, d in iter_chunks(path, CDC_SCHEME)] == split_bytes(data, CDC_SCHEME)
    assert [b.offset for b in blocks] == [sum(b.size for b in blocks[:i])
                                          for i in range(len(blocks))]
    assert list(iter_chunks(path, FIXED_SCHEME)) == list(iter_file_blocks(path))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), where=st.floats(0, 1), edit=st.sampled_from(
    ["insert", "delete", "overwrite"]), length=st.integers(1, 2 * MiB))
def test_boundaries_resynchronise_after_an_edit(seed: int, where: float, edit: str,
                                                length: int) -> None:
    """Deterministic, within [min, max] (but the last), and after an edit anywhere the new
    version's blocks are the old ones again a few blocks past the edit (an edit longer than a
    block adds the blocks it fills). How many: the first cut after an edit skips any old
    boundary closer than CDC_MIN to the cut before it, so re-aligning can take another block,
    and another, each about one time in four. In 300 random edits of this kind (9 MiB files,
    edits up to 2 MiB) the fresh blocks beyond those the new bytes fill were at most 2 in 287,
    3 in 10 and 4 in 3; "at most two" was asserted here once and Hypothesis found a 4. Six
    leaves room for that tail, not for a chunker that fails to re-align after an edit near the
    start (every block after it would be fresh, about nine); the next test pins re-aligning at
    once on a 40 MiB file."""
    old = _random(9 * MiB + seed % 1000, seed)
    at = int(where * len(old))
    if edit == "insert":
        new = old[:at] + _random(length, seed + 1) + old[at:]
    elif edit == "delete":
        new = old[:at] + old[at + length:]
    else:
        new = old[:at] + _random(length, seed + 1) + old[at + length:]
    old_blocks = split_bytes(old, CDC_SCHEME)
    new_blocks = split_bytes(new, CDC_SCHEME)
    assert split_bytes(new, CDC_SCHEME) == new_blocks and b"".join(new_blocks) == new
    assert all(CDC_MIN <= len(b) <= CDC_MAX for b in new_blocks[:-1])
    held = {hashlib.sha256(b).digest() for b in old_blocks}
    fresh = [b for b in new_blocks if hashlib.sha256(b).digest() not in held]
    inserted = length if edit != "delete" else 0
    assert len(fresh) <= 6 + inserted // CDC_MIN, (edit, at, length, [len(b) for b in fresh])


def test_an_edit_changes_only_nearby_blocks_where_fixed_blocks_all_shift() -> None:
    old = _random(40 * MiB, 3)
    new = b"0123456789" + old
    def fresh(scheme: str) -> int:
        held = set(split_bytes(old, scheme))
        return sum(1 for b in split_bytes(new, scheme) if b not in held)
    assert fresh(CDC_SCHEME) == 1
    assert fresh(FIXED_SCHEME) == 11  # every block shifts, and a short one is added


def test_file_identity_keeps_an_old_schemes_checksum_for_unchanged_content(
        tmp_path: Path) -> None:
    """A file synced under the fixed scheme and merely touched since is "unchanged"; a file
    that changed is named by the default scheme."""
    path = tmp_path / "f"
    data = _random(10 * MiB)
    path.write_bytes(data)
    fixed = content_checksum(hashlib.sha256(b).hexdigest() for b in split_bytes(data,
                                                                                FIXED_SCHEME))
    cdc = content_checksum(hashlib.sha256(b).hexdigest() for b in split_bytes(data,
                                                                              CDC_SCHEME))
    assert fixed != cdc
    assert file_identity(path)[0] == cdc
    assert file_identity(path, like=fixed)[0] == fixed
    assert len(file_identity(path, like=fixed)[1]) == 3
    assert file_identity(path, like=cdc)[0] == cdc
    path.write_bytes(data + b"!")
    assert file_identity(path, like=fixed)[0] != fixed
    assert file_identity(path, like=fixed)[1] == tuple(
        hashlib.sha256(b).hexdigest() for b in split_bytes(data + b"!", CDC_SCHEME))


def test_reading_never_maps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file truncated under a mapping kills the reader with SIGBUS: the cutter reads."""
    import mmap

    def no(*args: object, **kwargs: object) -> None:
        raise AssertionError("mapped")

    monkeypatch.setattr(mmap, "mmap", no)
    path = tmp_path / "f"
    path.write_bytes(os.urandom(6 * MiB))
    assert sum(b.size for b in hash_file_as(path, CDC_SCHEME)) == 6 * MiB
