"""The shared block format (splitting, hashing, wire compression) and sealing at rest."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest
import zstandard

from driveproto.blocks import (
    BLOCK_SIZE,
    CHUNKING_SCHEME,
    BlockCorrupt,
    BlockInfo,
    BlockSplitter,
    block_hash,
    hash_file,
    is_block_hash,
    iter_file_blocks,
)
from driveproto.wire import compress_for_wire, decompress_from_wire
from driveserver.blocks.keys import (
    FLAG_ZSTD,
    SEALED_HEADER_SIZE,
    SEALED_MAGIC,
    KeyRing,
    KeyRingError,
)

MiB = 1024 * 1024


def _random(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes (SHAKE-256 stream): reproducible failures."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def _split(data: bytes, chunk_sizes: list[int]) -> list[bytes]:
    splitter = BlockSplitter()
    blocks: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        size = chunk_sizes[i % len(chunk_sizes)]
        blocks += splitter.feed(data[pos : pos + size])
        pos += size
        i += 1
    tail = splitter.finish()
    if tail is not None:
        blocks.append(tail)
    return blocks


# -- hashing and splitting ---------------------------------------------------


def test_constants() -> None:
    assert BLOCK_SIZE == 4 * MiB
    assert CHUNKING_SCHEME == "fixed-4MiB-v1"


def test_block_hash_is_sha256_hex() -> None:
    assert block_hash(b"") == hashlib.sha256(b"").hexdigest()
    assert block_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert is_block_hash(block_hash(b"abc"))
    assert not is_block_hash(block_hash(b"abc").upper())
    assert not is_block_hash("../" + "a" * 61)
    assert not is_block_hash(None)


@pytest.mark.parametrize(
    "size, expected_sizes",
    [
        (0, []),
        (1, [1]),
        (BLOCK_SIZE - 1, [BLOCK_SIZE - 1]),
        (BLOCK_SIZE, [BLOCK_SIZE]),
        (BLOCK_SIZE + 1, [BLOCK_SIZE, 1]),
        (2 * BLOCK_SIZE + 5, [BLOCK_SIZE, BLOCK_SIZE, 5]),
    ],
)
def test_file_blocks_and_splitter_agree(
    tmp_path: Path, size: int, expected_sizes: list[int]
) -> None:
    data = _random(size, seed=size)
    path = tmp_path / "f"
    path.write_bytes(data)

    from_file = list(iter_file_blocks(path))
    assert [len(b) for _, b in from_file] == expected_sizes
    assert b"".join(b for _, b in from_file) == data
    assert all(h == block_hash(b) for h, b in from_file)

    infos = hash_file(path)
    assert infos == [
        BlockInfo(hash=h, size=len(b), offset=i * BLOCK_SIZE) for i, (h, b) in enumerate(from_file)
    ]

    # Odd chunk sizes, including ones larger than a block and ones that end on a boundary.
    for chunks in ([1], [7, 65536, 3], [BLOCK_SIZE + 3], [BLOCK_SIZE], [MiB - 1, 3 * MiB + 1]):
        if size > 3 * MiB and chunks == [1]:
            continue  # a byte at a time through 4 MiB is just slow, not more telling
        assert _split(data, chunks) == [b for _, b in from_file], chunks


def test_splitter_holds_at_most_one_block() -> None:
    splitter = BlockSplitter()
    for _ in range(10):
        splitter.feed(b"x" * (MiB + 17))
        assert splitter.pending < BLOCK_SIZE
    assert splitter.finish() is not None
    assert splitter.finish() is None
    with pytest.raises(RuntimeError):
        splitter.feed(b"more")


# -- wire compression ---------------------------------------------------------


def test_wire_compression_round_trip() -> None:
    text = b"hello block " * 10000
    encoding, payload = compress_for_wire(text)
    assert encoding == "zstd" and len(payload) < len(text)
    assert decompress_from_wire(encoding, payload) == text

    noise = _random(100_000)
    encoding, payload = compress_for_wire(noise)
    assert (encoding, payload) == ("identity", noise)
    assert decompress_from_wire(encoding, payload) == noise


def test_wire_decompression_is_capped() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 * MiB))
    assert len(bomb) < 64 * 1024
    with pytest.raises(BlockCorrupt, match="over the limit"):
        decompress_from_wire("zstd", bomb)

    # A frame that does not declare its size is cut off at the cap, not grown.
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (BLOCK_SIZE + 1))
    assert zstandard.get_frame_parameters(streamed).content_size == zstandard.CONTENTSIZE_UNKNOWN
    with pytest.raises(BlockCorrupt):
        decompress_from_wire("zstd", streamed)
    exact = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * BLOCK_SIZE)
    assert decompress_from_wire("zstd", exact) == b"\0" * BLOCK_SIZE

    with pytest.raises(BlockCorrupt):
        decompress_from_wire("identity", b"x" * (BLOCK_SIZE + 1))
    with pytest.raises(BlockCorrupt, match="unknown block encoding"):
        decompress_from_wire("gzip", b"x")
    with pytest.raises(BlockCorrupt):
        decompress_from_wire("zstd", b"not zstd at all")
    _, good = compress_for_wire(b"a" * 1000)
    with pytest.raises(BlockCorrupt):
        decompress_from_wire("zstd", good + b"trailing")
    with pytest.raises(BlockCorrupt):
        decompress_from_wire("zstd", good[:-2])


# -- sealing ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.mark.parametrize("size", [0, 1, 1000, BLOCK_SIZE])
def test_seal_open_round_trip(ring: KeyRing, size: int) -> None:
    data = _random(size, seed=size + 1)
    digest = block_hash(data)
    sealed = ring.seal(digest, data)
    assert sealed[:4] == SEALED_MAGIC
    assert ring.open(digest, sealed) == data
    if size >= 32:
        assert data[:32] not in sealed
    # Fresh data key and nonces each time: equal blocks do not give equal blobs.
    assert ring.seal(digest, data) != sealed


def test_compressible_blocks_are_stored_compressed(ring: KeyRing) -> None:
    text = b"the same line again\n" * 200_000
    sealed = ring.seal(block_hash(text), text)
    assert sealed[5] & FLAG_ZSTD
    assert len(sealed) < len(text) // 10
    assert ring.open(block_hash(text), sealed) == text

    noise = _random(MiB)
    sealed = ring.seal(block_hash(noise), noise)
    assert not sealed[5] & FLAG_ZSTD
    assert len(sealed) == len(noise) + SEALED_HEADER_SIZE + 16


def test_seal_refuses_data_that_does_not_match_its_hash(ring: KeyRing) -> None:
    with pytest.raises(BlockCorrupt, match="does not match"):
        ring.seal(block_hash(b"a"), b"b")
    with pytest.raises(BlockCorrupt, match="exceeds"):
        big = b"\0" * (BLOCK_SIZE + 1)
        ring.seal(block_hash(big), big)
    with pytest.raises(ValueError):
        ring.seal("not-a-hash", b"")


@pytest.mark.parametrize(
    "where",
    [0, 4, 5, 6, 14, 30, 74, SEALED_HEADER_SIZE, SEALED_HEADER_SIZE + 10, -1],
    ids=[
        "magic",
        "version",
        "flags",
        "key-id",
        "wrap-nonce",
        "wrapped-key",
        "body-nonce",
        "body",
        "body-middle",
        "tag",
    ],
)
def test_any_tampering_is_detected(ring: KeyRing, where: int) -> None:
    data = b"some text that compresses " * 100
    digest = block_hash(data)
    sealed = bytearray(ring.seal(digest, data))
    sealed[where] ^= 0x01
    with pytest.raises(BlockCorrupt):
        ring.open(digest, bytes(sealed))


def test_truncated_and_foreign_blobs_are_rejected(ring: KeyRing) -> None:
    data = b"x" * 100
    digest = block_hash(data)
    sealed = ring.seal(digest, data)
    for bad in (b"", sealed[:10], sealed[:-1], b"\0" * 200, data):
        with pytest.raises(BlockCorrupt):
            ring.open(digest, bad)


def test_blob_of_one_block_cannot_pass_for_another(ring: KeyRing) -> None:
    a, b = b"block A" * 10, b"block B" * 10
    sealed_a = ring.seal(block_hash(a), a)
    with pytest.raises(BlockCorrupt, match="another block"):
        ring.open(block_hash(b), sealed_a)


def test_other_key_ring_cannot_open(ring: KeyRing) -> None:
    data = b"secret"
    sealed = ring.seal(block_hash(data), data)
    with pytest.raises(BlockCorrupt, match="unknown master key"):
        KeyRing.generate().open(block_hash(data), sealed)


def test_object_name_hides_the_hash(ring: KeyRing) -> None:
    digest = block_hash(b"known file")
    name = ring.object_name(digest)
    assert len(name) == 64 and name != digest
    assert digest not in name and digest[:16] not in name
    assert ring.object_name(digest) == name
    assert KeyRing.generate().object_name(digest) != name


# -- the key file -----------------------------------------------------------------


def test_key_file_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "master.key"
    ring = KeyRing.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left

    doc = json.loads(path.read_text())
    assert doc["active"] == doc["naming"] == ring.active_key_id
    assert list(doc["keys"]) == [ring.active_key_id]

    again = KeyRing.load_or_create(path)
    data = b"persisted"
    assert again.open(block_hash(data), ring.seal(block_hash(data), data)) == data
    assert again.object_name(block_hash(data)) == ring.object_name(block_hash(data))
    secret = doc["keys"][ring.active_key_id]
    assert secret not in repr(again) and secret not in str(vars(again))


def test_rotation_keeps_old_blocks_readable_and_names_stable(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    old = KeyRing.load_or_create(path)
    data = b"written before the rotation"
    digest = block_hash(data)
    old_blob = old.seal(digest, data)

    rotated = KeyRing.rotate(path)
    assert rotated.active_key_id != old.active_key_id
    assert rotated.key_ids == {old.active_key_id, rotated.active_key_id}
    assert rotated.naming_key_id == old.active_key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    reloaded = KeyRing.load(path)
    assert reloaded.active_key_id == rotated.active_key_id
    assert reloaded.open(digest, old_blob) == data
    new_blob = reloaded.seal(digest, data)
    assert KeyRing.sealed_key_id(new_blob) == rotated.active_key_id
    assert KeyRing.sealed_key_id(old_blob) == old.active_key_id
    assert reloaded.open(digest, new_blob) == data
    assert reloaded.object_name(digest) == old.object_name(digest)
    # The old ring cannot read what the new key sealed.
    with pytest.raises(BlockCorrupt, match="unknown master key"):
        old.open(digest, new_blob)


def test_concurrent_rotations_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = KeyRing.load_or_create(path)
    results: list[KeyRing] = []
    threads = [
        threading.Thread(target=lambda: results.append(KeyRing.rotate(path))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = KeyRing.load(path)
    assert final.key_ids == {first.active_key_id} | {r.active_key_id for r in results}
    assert len(final.key_ids) == 5


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    results: list[KeyRing] = []
    threads = [
        threading.Thread(target=lambda: results.append(KeyRing.load_or_create(path)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.active_key_id for r in results}) == 1


def test_bad_key_files_are_reported_clearly(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.load(path)
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.rotate(path)
    path.write_text("{not json")
    with pytest.raises(KeyRingError, match="not valid JSON"):
        KeyRing.load_or_create(path)  # never silently replaced
    good = json.loads(KeyRing.generate().to_json())
    for broken, message in [
        ({**good, "version": 99}, "unsupported version"),
        ({**good, "active": "0" * 16}, "not in the key ring"),
        ({**good, "keys": {k: "!!!" for k in good["keys"]}}, "base64"),
        ({**good, "keys": {k: "AAAA" for k in good["keys"]}}, "bytes"),
        ({**good, "keys": {}}, "non-empty"),
    ]:
        path.write_text(json.dumps(broken))
        with pytest.raises(KeyRingError, match=message):
            KeyRing.load(path)


def test_exposed_key_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "master.key"
    KeyRing.load_or_create(path)
    os.chmod(path, 0o644)
    KeyRing.load(path)
    assert "chmod 600" in caplog.text
