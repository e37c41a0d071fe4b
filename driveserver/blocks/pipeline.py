"""Block pipeline: plaintext block → hash, compress, encrypt → store, and back, verified.

The CPU work (SHA-256, zstd, AES-GCM) of a large block runs in worker threads — all three
release the GIL — so the event loop keeps serving while a 4 MiB block is sealed. The pool is small and dedicated: one
thread per core is all the CPU there is, and fewer threads mean fewer malloc arenas holding on to
freed 4 MiB buffers (which is what keeps the server's RSS flat during a 10 GB upload).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..storage.base import BlockNotFound, BlockStore
from .format import BLOCK_SIZE, BlockCorrupt, block_hash
from .keys import KeyRing

log = logging.getLogger("driveserver.blocks")
T = TypeVar("T")

# Blocks up to this size are sealed and opened on the loop's thread: that takes at most ~130 µs,
# less than handing the work to a thread and back, and a batch of small files is mostly those.
INLINE_BYTES = 64 * 1024


class BlockPipeline:
    def __init__(self, keyring: KeyRing, store: BlockStore, threads: int | None = None) -> None:
        self.keyring = keyring
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 2),
                                        thread_name_prefix="blocks")

    async def _cpu(self, fn: Callable[..., T], nbytes: int, *args: Any) -> T:
        if nbytes <= INLINE_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _seal(self, data: bytes, expected: str | None) -> tuple[str, bytes]:
        h = block_hash(data)
        if expected is not None and h != expected:
            raise BlockCorrupt(f"block content hashes to {h}, not {expected}")
        return h, self.keyring.seal(h, data)

    async def put(self, data: bytes, expected_hash: str | None = None) -> str:
        """Store one plaintext block (once: equal blocks are stored once); return its hash.

        :raises BlockCorrupt: ``expected_hash`` is given and the data does not match it.
        """
        h, sealed = await self._cpu(self._seal, len(data), data, expected_hash)
        await self.store.put_if_absent(self.keyring.object_name(h), sealed)
        return h

    async def get(self, h: str) -> bytes:
        """The verified plaintext of block ``h``.

        :raises BlockNotFound: not stored.
        :raises BlockCorrupt: stored bytes fail authentication or their hash (logged here).
        """
        return await self._opened(h, self.keyring.open)

    async def get_for_wire(self, h: str, size: int | None = None) -> tuple[str, bytes, int]:
        """Like :meth:`get`, verified the same way, but as ``(encoding, payload, size)`` to send.

        ``size``, the block's plaintext size when the caller knows it, lets a small block be
        opened inline (a small stored blob alone says nothing: 4 MiB of zeros seal to 1 KiB)."""
        return await self._opened(h, self.keyring.open_for_wire, size)

    async def _opened(self, h: str, opener: Callable[[str, bytes], T],
                      size: int | None = None) -> T:
        sealed = await self.store.get(self.keyring.object_name(h))
        try:
            return await self._cpu(opener, BLOCK_SIZE if size is None else size, h, sealed)
        except BlockCorrupt as exc:
            log.error("CORRUPT BLOCK %s (object %s): %s", h, self.keyring.object_name(h), exc)
            raise

    async def exists(self, h: str) -> bool:
        return await self.store.exists(self.keyring.object_name(h))

    async def missing(self, hashes: list[str], concurrency: int = 16) -> list[str]:
        """The blocks among ``hashes`` that are not stored, looked up concurrently: ``complete``
        asks this of a whole batch while it holds the write lock, so one lookup after another
        (a stat or an S3 HEAD each) would hold up every other writer."""
        sem = asyncio.Semaphore(concurrency)

        async def absent(h: str) -> bool:
            async with sem:
                return not await self.exists(h)

        found = await asyncio.gather(*(absent(h) for h in hashes))
        return [h for h, gone in zip(hashes, found, strict=True) if gone]

    async def stream(self, hashes: list[str], prefetch: int = 3) -> AsyncIterator[bytes]:
        """Yield the verified plaintext of each block in order, fetching ahead of the reader."""
        pending: list[asyncio.Task[bytes]] = []
        it = iter(hashes)
        try:
            for h in it:
                pending.append(asyncio.ensure_future(self.get(h)))
                if len(pending) > prefetch:
                    yield await pending.pop(0)
            while pending:
                yield await pending.pop(0)
        finally:
            for task in pending:
                task.cancel()


__all__ = ["BlockPipeline", "BlockCorrupt", "BlockNotFound"]
