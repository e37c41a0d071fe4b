"""Patches on the client's side (docs/chunking.md): a changed block sent up as a patch
against the pieces of its base that it kept, and fetched down as a patch against the blocks
of this device's own copy. The format and the choice of bases are :mod:`driveproto.patches`';
:mod:`.transfer` decides when to use these."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from driveproto import patches
from driveproto.blocks import BlockCorrupt, block_hash
from driveproto.chunking import SCHEMES, hash_file_as
from driveproto.replies import BlockReceipt, DownloadBlock
from driveproto.wire import compress_for_wire, decompress_from_wire

from .errors import ApiError, AuthError, Offline
from .remote_api import RemoteApi

PATCH_MIN_BYTES = 64 * 1024  # below this a signature's round trip costs more than it saves


async def send_patch(remote: RemoteApi, block_url: str, h: str, data: bytes,
                      bases: list[str], signature: Callable[[str], Awaitable[bytes]]
                      ) -> BlockReceipt | None:
    """Send block ``h`` as a patch against what it shares with ``bases`` (found through their
    signatures, since this device's copy of the base was overwritten by the edit), if that
    is smaller than the block compressed. None: send the block whole instead (no base in
    common, a base this user may not read, or a patch the server refused: it stored nothing).
    """
    if not bases or len(data) < PATCH_MIN_BYTES:
        return None
    try:
        sigs = []
        for got in await asyncio.gather(*(signature(b) for b in bases), return_exceptions=True):
            if isinstance(got, AuthError | Offline) or not isinstance(got, bytes | ApiError):
                raise got
            sigs.append(got if isinstance(got, bytes) else b"")  # a base we may not read
        runs, dictionary = await asyncio.to_thread(
            patches.find_pieces, data, [patches.parse_signature(s) for s in sigs])
        if not dictionary:
            return None
        patch = await asyncio.to_thread(patches.make_patch, data, dictionary)
        whole = len((await asyncio.to_thread(compress_for_wire, data))[1])
        refs = [patches.BaseRef(b, r) for b, r in zip(bases, runs, strict=True) if r]
        body = patches.encode_upload(refs, patch)
        if len(body) >= whole:
            return None
        return await remote.put_patch(block_url, h, body)
    except (AuthError, Offline):
        raise
    except (ApiError, patches.PatchError):
        return None


def held_chunks(path: Path, scheme: str, base_blocks: tuple[str, ...]
                 ) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """The blocks of the local file at ``path`` (this device's copy of the synced version),
    cut by ``scheme`` (the new version's, so its unchanged blocks are found even when the
    synced version was cut another way): hash -> (offset, size); and, in file order, those
    of them the synced version has (the server has those, and this user may read them: the
    bases a patch may name). Empty if the file cannot be read."""
    held: dict[str, tuple[int, int]] = {}
    order: list[str] = []
    synced = set(base_blocks)
    if path.is_symlink():  # a link's content is its target's text, never what it points at
        return {}, []
    try:
        for cut in (scheme, *[s for s in SCHEMES if s != scheme]):
            at = 0
            for b in hash_file_as(path, cut):
                held.setdefault(b.hash, (at, b.size))
                at += b.size
                if b.hash in synced:
                    order.append(b.hash)
            if order:
                break
    except (OSError, ValueError):
        return {}, []
    return held, order


async def fetch_patched(remote: RemoteApi, url: str, b: DownloadBlock, bases: list[str],
                        datas: list[bytes]) -> bytes | None:
    """Block ``b`` as a patch against ``bases`` (whose bytes, ``datas``, the caller read from
    this device's copy and re-hashed), or as the server's usual wire form when a patch is not
    smaller; verified either way. None: the server refused the bases."""
    try:
        encoding, payload = await remote.get_patch(url, bases)
    except (AuthError, Offline):
        raise
    except ApiError:
        return None

    def decode() -> bytes:
        if encoding == patches.PATCH_ENCODING:
            return patches.apply_patch(payload, b"".join(datas))
        return decompress_from_wire(encoding, payload)

    try:
        out = await asyncio.to_thread(decode)
    except BlockCorrupt:
        out = b""
    if len(out) != b["size"] or block_hash(out) != b["hash"]:
        raise ApiError(502, "block_mismatch", f"block {b['hash']} failed verification")
    return out
