"""Block pipeline: plaintext block → hash, compress, encrypt → store, and back, verified.

The CPU work (SHA-256, zstd, AES-GCM) of a large block runs in worker threads — all three
release the GIL — so the event loop keeps serving while a 4 MiB block is sealed. The pool is small and dedicated: one
thread per core is all the CPU there is, and fewer threads mean fewer malloc arenas holding on to
freed 4 MiB buffers (which is what keeps the server's RSS flat during a 10 GB upload).

**Storing costs the same whether or not the block is there** (issue 12, finding 10). Blocks are
stored once for everyone, so a store that skips the write when it finds the block already there
answers sooner, and anyone with an upload grant could time ``PUT /blocks/{hash}`` to learn
whether *anyone* has a given content (a known document, a password file): 1.3 ms against 1.9 ms,
ranges disjoint. :meth:`BlockPipeline.store_block` therefore asks whether the block is stored, and
writes either way: the block under its own name if it is new, else the same sealed bytes under
a random name of the same form (a decoy), deleted again in the background once the answer is
on its way. Both paths are one lookup plus one full write of a name that does not exist yet,
on any backend (local fsyncs, an S3 PUT). Deduplication still saves the space, not the write;
per-user deduplication would have kept the oracle away too, but at the cost of storing every
shared or common file once per user. A decoy left by a crash is an object no version records:
garbage collection removes it after the grace period like any never-committed upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from driveproto.blocks import BLOCK_SIZE, BlockCorrupt, block_hash

from ..storage.base import BlockNotFound, BlockStore, exists_many, put_many
from .keys import KeyRing

log = logging.getLogger("driveserver.blocks")
T = TypeVar("T")

# Blocks up to this size are sealed and opened on the loop's thread: that takes at most ~130 µs,
# less than handing the work to a thread and back, and a batch of small files is mostly those.
INLINE_BYTES = 64 * 1024
# A batch's small blocks are sealed this many to a worker-thread job: one hand-off per group,
# off the loop, the groups spread over the pool's threads.
SEAL_GROUP = 32


def default_threads() -> int:
    """The pool's size: one thread per core, at most 4 (``bench/upload_bench.py`` measures the
    sealing limit with the same number)."""
    return min(4, os.cpu_count() or 2)


class BlockPipeline:
    def __init__(self, keyring: KeyRing, store: BlockStore, threads: int | None = None) -> None:
        self.keyring = keyring
        self.store = store
        self.threads = threads or default_threads()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="blocks")
        self._cleanups: set[asyncio.Task[None]] = set()  # decoys being deleted

    async def _cpu(self, fn: Callable[..., T], nbytes: int, *args: Any) -> T:
        if nbytes <= INLINE_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """Finish deleting decoys (a few file or S3 deletes), then :meth:`close`. A decoy whose
        delete did not finish is collected by GC later."""
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=10)
        for task in self._cleanups:
            task.cancel()
        self.close()

    @staticmethod
    def _hash(data: bytes, expected: str | None) -> str:
        h = block_hash(data)
        if expected is not None and h != expected:
            raise BlockCorrupt(f"block content hashes to {h}, not {expected}")
        return h

    async def verified_hash(self, data: bytes, expected: str | None = None) -> str:
        """The block's hash (off the loop for a large block).

        :raises BlockCorrupt: ``expected`` is given and the data does not match it.
        """
        return await self._cpu(self._hash, len(data), data, expected)

    async def put(self, data: bytes, expected_hash: str | None = None) -> str:
        """Hash and :meth:`store_block` one plaintext block; return its hash.

        :raises BlockCorrupt: ``expected_hash`` is given and the data does not match it.
        """
        h = await self.verified_hash(data, expected_hash)
        await self.store_block(h, data)
        return h

    async def store_block(self, h: str, data: bytes, *, conceal: bool = True) -> None:
        """Seal and store block ``h`` (whose hash the caller verified), once for everyone.

        ``conceal`` (the default): take as long whether or not the block is stored already
        (see the module docstring). Without it, a block already stored is not written again;
        only for callers whose requester already knows the block is there (they sent it
        themselves under the same grant)."""
        sealed = await self._cpu(self.keyring.seal, len(data), h, data)
        name = self.keyring.object_name(h)
        if not conceal:
            await self.store.put_if_absent(name, sealed)
            return
        if not await self.store.exists(name):
            await self.store.put_if_absent(name, sealed)
            return
        decoy = os.urandom(len(name) // 2).hex()
        await self.store.put_if_absent(decoy, sealed)
        task = asyncio.ensure_future(self._delete_decoy(decoy))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def store_blocks(self, blocks: Sequence[tuple[str, bytes, bool]]) -> None:
        """:meth:`store_block` for each ``(hash, data, conceal)`` (distinct hashes the caller
        verified), as one batch: small blocks sealed in groups in the pool, large ones each
        on its own, one look-up for all the concealed ones and one batch write
        (:func:`~driveserver.storage.base.put_many`). Each block costs the same whether or not
        it was stored before, as with :meth:`store_block`: a block found there is written
        once more under a decoy name."""
        loop = asyncio.get_running_loop()
        small = [i for i, (_, d, _) in enumerate(blocks) if len(d) <= INLINE_BYTES]
        large = [i for i, (_, d, _) in enumerate(blocks) if len(d) > INLINE_BYTES]
        seal = self.keyring.seal

        def seal_group(group: list[int]) -> list[bytes]:
            return [seal(blocks[i][0], blocks[i][1]) for i in group]

        groups = [small[k:k + SEAL_GROUP] for k in range(0, len(small), SEAL_GROUP)]
        grouped, alone = await asyncio.gather(
            asyncio.gather(*(loop.run_in_executor(self._pool, seal_group, g) for g in groups)),
            asyncio.gather(*(loop.run_in_executor(self._pool, seal, blocks[i][0], blocks[i][1])
                             for i in large)))
        sealed: dict[int, bytes] = dict(zip(large, alone, strict=True))
        for group, out in zip(groups, grouped, strict=True):
            sealed.update(zip(group, out, strict=True))
        names = [self.keyring.object_name(h) for h, _, _ in blocks]
        concealed = [i for i, (_, _, conceal) in enumerate(blocks) if conceal]
        present = await exists_many(self.store, [names[i] for i in concealed])
        decoys = []
        for i, there in zip(concealed, present, strict=True):
            if there:
                names[i] = os.urandom(len(names[i]) // 2).hex()
                decoys.append(names[i])
        await put_many(self.store, [(names[i], sealed[i]) for i in range(len(blocks))])
        for decoy in decoys:
            task = asyncio.ensure_future(self._delete_decoy(decoy))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _delete_decoy(self, name: str) -> None:
        with contextlib.suppress(Exception):  # GC collects what is left
            await self.store.delete(name)

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

    async def missing(self, hashes: list[str]) -> list[str]:
        """The blocks among ``hashes`` that are not stored, in one batch look-up
        (:func:`~driveserver.storage.base.exists_many`: one worker-thread job for the local
        store, concurrent HEADs on S3): ``complete`` asks this of a whole batch (before its
        write transaction), and one lookup after another would make a batch of a thousand
        files wait for each."""
        found = await exists_many(self.store, [self.keyring.object_name(h) for h in hashes])
        return [h for h, there in zip(hashes, found, strict=True) if not there]

    async def stream(self, hashes: list[str], prefetch: int = 3) -> AsyncGenerator[bytes, None]:
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


__all__ = ["BlockPipeline", "BlockCorrupt", "BlockNotFound", "default_threads"]
