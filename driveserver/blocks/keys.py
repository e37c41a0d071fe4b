"""Encryption at rest: master keys, sealed blocks and opaque object names.

The block store (a local disk or somebody else's S3) sees only ciphertext under
names that do not reveal plaintext hashes, and every read is verified against
its hash (DESIGN.md, invariant 6). Everything needed for that lives here.

**Key file.** One JSON document, mode 0600, written atomically::

    {"format": "drive-keyring", "version": 1,
     "active": "<id>", "naming": "<id>",
     "keys": {"<id>": "<base64 of 32 random bytes>", ...}}

An id is 16 lowercase hex digits (8 random bytes). ``active`` seals new
blocks; every listed key can open old ones, so :meth:`KeyRing.rotate` adds a
key and makes it active without re-encrypting anything. ``naming`` is the
first key ever created and never changes: object names derive from it, and a
rotation must not rename every stored object.

**Sealed block.** A fixed 86-byte header, then the AES-256-GCM ciphertext and
its 16-byte tag (all integers big-endian)::

    offset size  field
         0    4  magic b"DRVB"
         4    1  format version (1)
         5    1  flags: bit 0 = body was zstd-compressed before encryption
         6    8  id of the master key that wrapped the data key
        14   12  nonce for the key wrap
        26   48  data key (32 bytes) AES-GCM-encrypted under the wrap key + tag
        74   12  nonce for the body
        86    …  body: AES-256-GCM(data key, plaintext or zstd(plaintext)) + tag

Each block gets a fresh random data key. The wrap key is derived (HKDF) from
the master key. The block hash is associated data of both AES-GCM operations,
and the whole header is associated data of the body, so flipping a flag,
changing the key id or presenting block A's blob as block B fails
authentication.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from driveproto.blocks import BLOCK_SIZE, BlockCorrupt, is_block_hash
from driveproto.wire import WIRE_IDENTITY, WIRE_ZSTD, decompress_from_wire

from .keyfile import KeyRingError, locked_key_file, read_key_file, write_key_file

__all__ = [
    "KEY_FILE_FORMAT",
    "KEY_FILE_VERSION",
    "SEALED_MAGIC",
    "SEALED_VERSION",
    "SEALED_HEADER_SIZE",
    "SEALED_OVERHEAD",
    "FLAG_ZSTD",
    "KeyRing",
    "KeyRingError",
]

log = logging.getLogger(__name__)

KEY_FILE_FORMAT = "drive-keyring"
KEY_FILE_VERSION = 1
MASTER_KEY_SIZE = 32
KEY_ID_SIZE = 8

SEALED_MAGIC = b"DRVB"
SEALED_VERSION = 1
FLAG_ZSTD = 0x01
_KNOWN_FLAGS = FLAG_ZSTD

_NONCE_SIZE = 12
_TAG_SIZE = 16
_DATA_KEY_SIZE = 32
_PREFIX = struct.Struct(">4sBB8s")  # magic, version, flags, key id
_HEADER = struct.Struct(f">4sBB8s{_NONCE_SIZE}s{_DATA_KEY_SIZE + _TAG_SIZE}s{_NONCE_SIZE}s")
SEALED_HEADER_SIZE = _HEADER.size  # 86
SEALED_OVERHEAD = SEALED_HEADER_SIZE + _TAG_SIZE
"""Bytes a sealed block adds to its (possibly compressed) body."""

# HKDF "info" strings: each derived key has one purpose, and a future scheme
# gets a new string rather than reusing a key for something else.
_WRAP_INFO = b"drive/blocks/key-wrap/v1"
_NAMING_INFO = b"drive/blocks/object-name/v1"

_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_ZSTD_LEVEL = 3


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def _hash_digest(block_hash: str) -> bytes:
    if not is_block_hash(block_hash):
        raise ValueError(f"not a block hash (64 lowercase hex digits): {block_hash!r}")
    return bytes.fromhex(block_hash)


def _new_key_id(taken: Mapping[str, bytes]) -> str:
    while True:
        key_id = os.urandom(KEY_ID_SIZE).hex()
        if key_id not in taken:
            return key_id


class KeyRing:
    """The master keys, with one active key for sealing and a fixed naming key.

    Immutable: rotation builds a new ring. Sealing and opening are CPU-bound
    (SHA-256, zstd and AES over up to 4 MiB), so async callers should run them
    in a thread (``asyncio.to_thread``); a ring is safe to share between threads.
    """

    def __init__(self, keys: Mapping[str, bytes], *, active: str, naming: str) -> None:
        if not keys:
            raise KeyRingError("a key ring needs at least one key")
        for key_id, key in keys.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise KeyRingError(f"invalid key id {key_id!r} (want 16 lowercase hex digits)")
            if len(key) != MASTER_KEY_SIZE:
                raise KeyRingError(f"key {key_id} is {len(key)} bytes, want {MASTER_KEY_SIZE}")
        if active not in keys:
            raise KeyRingError(f"active key {active!r} is not in the key ring")
        if naming not in keys:
            raise KeyRingError(f"naming key {naming!r} is not in the key ring")
        self._keys: Mapping[str, bytes] = MappingProxyType(dict(keys))
        self._active = active
        self._naming = naming
        self._active_id_bytes = bytes.fromhex(active)
        self._wrappers = {
            bytes.fromhex(key_id): AESGCM(_hkdf(key, _WRAP_INFO)) for key_id, key in keys.items()
        }
        self._naming_key = _hkdf(keys[naming], _NAMING_INFO)

    def __repr__(self) -> str:  # never show key material
        return f"KeyRing(active={self._active!r}, naming={self._naming!r}, keys={len(self._keys)})"

    # -- construction -------------------------------------------------------

    @classmethod
    def generate(cls) -> KeyRing:
        """A new in-memory ring with one fresh key (tests; the first start of a server)."""
        key_id = _new_key_id({})
        return cls({key_id: os.urandom(MASTER_KEY_SIZE)}, active=key_id, naming=key_id)

    def with_new_active_key(self) -> KeyRing:
        """A copy of this ring with one more key, which becomes the active one."""
        key_id = _new_key_id(self._keys)
        keys = dict(self._keys)
        keys[key_id] = os.urandom(MASTER_KEY_SIZE)
        return KeyRing(keys, active=key_id, naming=self._naming)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read the key file at ``path``.

        :raises KeyRingError: if it is missing, unreadable or malformed.
        """
        path = Path(path)
        raw = read_key_file(path)
        if raw is None:
            raise KeyRingError(f"key file {path} does not exist")
        return cls.from_json(raw, source=str(path))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read the key file at ``path``, creating it with one new key if it is missing.

        Creation links the finished file into place, which fails if the name
        exists, so two processes starting at once end up with the same key
        rather than one of them sealing blocks with a key nobody saved. A file
        that exists but cannot be parsed is an error, never replaced.
        """
        path = Path(path)
        raw = read_key_file(path)
        if raw is not None:
            return cls.from_json(raw, source=str(path))
        ring = cls.generate()
        if write_key_file(path, ring.to_json(), replace=False):
            log.info("created key file %s with key %s", path, ring.active_key_id)
            return ring
        return cls.load(path)  # somebody else created it first: use theirs

    @classmethod
    def rotate(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Add a new active key to the key file at ``path`` and return the new ring.

        Old keys stay for reading existing blocks; the naming key is kept, so
        object names do not change. Servers pick the new key up when they next
        load the file. Concurrent rotations are serialised with a lock on the
        file, so none of them loses another's key.

        :raises KeyRingError: if the file does not exist or is malformed.
        """
        path = Path(path)
        with locked_key_file(path) as raw:
            ring = cls.from_json(raw, source=str(path)).with_new_active_key()
            write_key_file(path, ring.to_json(), replace=True)
        log.info("rotated key file %s: new active key %s", path, ring.active_key_id)
        return ring

    @classmethod
    def from_json(cls, raw: bytes | str, *, source: str = "key file") -> KeyRing:
        """Parse the key file format (see the module docstring)."""
        try:
            doc: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyRingError(f"{source}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
            raise KeyRingError(f"{source}: not a {KEY_FILE_FORMAT} file")
        if doc.get("version") != KEY_FILE_VERSION:
            raise KeyRingError(f"{source}: unsupported version {doc.get('version')!r}")
        entries = doc.get("keys")
        active, naming = doc.get("active"), doc.get("naming")
        if not isinstance(entries, dict) or not entries:
            raise KeyRingError(f"{source}: 'keys' must be a non-empty object")
        if not isinstance(active, str) or not isinstance(naming, str):
            raise KeyRingError(f"{source}: 'active' and 'naming' must be key ids")
        keys: dict[str, bytes] = {}
        for key_id, encoded in entries.items():
            if not isinstance(encoded, str):
                raise KeyRingError(f"{source}: key {key_id!r} is not a base64 string")
            try:
                keys[key_id] = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise KeyRingError(f"{source}: key {key_id!r} is not valid base64") from None
        try:
            return cls(keys, active=active, naming=naming)
        except KeyRingError as exc:
            raise KeyRingError(f"{source}: {exc}") from None

    def to_json(self) -> bytes:
        """Serialise in the key file format (contains the secret keys)."""
        doc = {
            "format": KEY_FILE_FORMAT,
            "version": KEY_FILE_VERSION,
            "active": self._active,
            "naming": self._naming,
            "keys": {k: base64.b64encode(v).decode("ascii") for k, v in self._keys.items()},
        }
        return (json.dumps(doc, indent=2) + "\n").encode("ascii")

    # -- inspection ---------------------------------------------------------

    @property
    def active_key_id(self) -> str:
        """Id of the key that seals new blocks."""
        return self._active

    @property
    def naming_key_id(self) -> str:
        """Id of the key object names derive from (the first key; never changes)."""
        return self._naming

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of every key that can open blocks."""
        return frozenset(self._keys)

    @staticmethod
    def sealed_key_id(sealed: bytes) -> str:
        """Id of the master key a sealed block was wrapped with (e.g. to find blocks to re-seal).

        :raises BlockCorrupt: if ``sealed`` does not start with a valid header.
        """
        _, _, key_id, _, _, _ = _parse_header(sealed)
        return key_id.hex()

    # -- blocks -------------------------------------------------------------

    def object_name(self, block_hash: str) -> str:
        """The storage name of a block: HMAC-SHA256 of its hash under the naming key, in hex.

        A storage provider who knows the hash of some file cannot tell whether
        we store it, because it cannot compute the name without our key.
        """
        return hmac.new(self._naming_key, _hash_digest(block_hash), hashlib.sha256).hexdigest()

    def seal(self, block_hash: str, plaintext: bytes) -> bytes:
        """Compress (when that helps) and encrypt a block for storage.

        The plaintext is checked against ``block_hash`` first: a blob sealed
        under the wrong hash could never be opened, and storing one would turn
        a caller's bug into silent data loss.

        :raises BlockCorrupt: the plaintext does not hash to ``block_hash`` or exceeds a block.
        :raises ValueError: ``block_hash`` is not a well-formed hash.
        """
        digest = _hash_digest(block_hash)
        if len(plaintext) > BLOCK_SIZE:
            raise BlockCorrupt(f"block of {len(plaintext)} bytes exceeds {BLOCK_SIZE}")
        if hashlib.sha256(plaintext).digest() != digest:
            raise BlockCorrupt(f"plaintext does not match block hash {block_hash}")
        flags = 0
        body = bytes(plaintext)
        compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(body)
        if len(compressed) < len(body):
            body, flags = compressed, FLAG_ZSTD
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, body_nonce = os.urandom(_NONCE_SIZE), os.urandom(_NONCE_SIZE)
        prefix = _PREFIX.pack(SEALED_MAGIC, SEALED_VERSION, flags, self._active_id_bytes)
        wrapped = self._wrappers[self._active_id_bytes].encrypt(
            wrap_nonce, data_key, prefix + digest
        )
        header = prefix + wrap_nonce + wrapped + body_nonce
        return header + AESGCM(data_key).encrypt(body_nonce, body, header + digest)

    def open(self, block_hash: str, sealed: bytes) -> bytes:
        """Decrypt a sealed block and return its plaintext, verified against ``block_hash``.

        Never returns data that has not been authenticated and hashed.

        :raises BlockCorrupt: bad header, unknown key, failed authentication
            (tampering, or a blob that belongs to another block), bad compression,
            or a hash mismatch.
        :raises ValueError: ``block_hash`` is not a well-formed hash.
        """
        return self._open(block_hash, sealed)[0]

    def open_for_wire(self, block_hash: str, sealed: bytes) -> tuple[str, bytes, int]:
        """Verify a sealed block like :meth:`open`, and return ``(encoding, payload, size)`` for
        sending it: the stored zstd frame when it was stored compressed, so a download does not
        pay for compressing the same block again."""
        plain, compressed = self._open(block_hash, sealed)
        if compressed is not None:
            return WIRE_ZSTD, compressed, len(plain)
        return WIRE_IDENTITY, plain, len(plain)

    def _open(self, block_hash: str, sealed: bytes) -> tuple[bytes, bytes | None]:
        digest = _hash_digest(block_hash)
        _, flags, key_id, wrap_nonce, wrapped, body_nonce = _parse_header(sealed)
        wrapper = self._wrappers.get(key_id)
        if wrapper is None:
            raise BlockCorrupt(
                f"block {block_hash} is sealed with unknown master key {key_id.hex()} "
                f"(key file has {', '.join(sorted(self._keys))})"
            )
        prefix = bytes(sealed[: _PREFIX.size])
        try:
            data_key = wrapper.decrypt(wrap_nonce, wrapped, prefix + digest)
        except InvalidTag:
            raise BlockCorrupt(
                f"block {block_hash}: data key fails authentication "
                "(tampered header, or the blob belongs to another block)"
            ) from None
        header = bytes(sealed[:SEALED_HEADER_SIZE])
        try:
            body = AESGCM(data_key).decrypt(
                body_nonce, bytes(sealed[SEALED_HEADER_SIZE:]), header + digest
            )
        except InvalidTag:
            raise BlockCorrupt(f"block {block_hash}: ciphertext fails authentication") from None
        compressed = None
        if flags & FLAG_ZSTD:
            compressed = body
            try:
                body = decompress_from_wire(WIRE_ZSTD, body, max_size=BLOCK_SIZE)
            except BlockCorrupt as exc:
                raise BlockCorrupt(f"block {block_hash}: {exc}") from None
        if hashlib.sha256(body).digest() != digest:
            raise BlockCorrupt(f"block {block_hash}: decrypted data does not match its hash")
        return body, compressed


def _parse_header(sealed: bytes) -> tuple[int, int, bytes, bytes, bytes, bytes]:
    if len(sealed) < SEALED_OVERHEAD:
        raise BlockCorrupt(f"sealed block is too short ({len(sealed)} bytes)")
    magic, version, flags, key_id, wrap_nonce, wrapped, body_nonce = _HEADER.unpack_from(sealed)
    if magic != SEALED_MAGIC:
        raise BlockCorrupt("not a sealed block (bad magic)")
    if version != SEALED_VERSION:
        raise BlockCorrupt(f"unsupported sealed block version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise BlockCorrupt(f"unknown sealed block flags 0x{flags:02x}")
    return version, flags, key_id, wrap_nonce, wrapped, body_nonce
