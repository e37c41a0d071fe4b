"""A hot tier in front of a cold one, behind the ordinary BlockStore interface.

New blocks go to the hot tier (fast, expensive: a local SSD or a STANDARD
bucket). A background job moves blocks nobody has read for a while to the cold
tier (cheap: another prefix or bucket with storage class ``GLACIER_IR`` or
``STANDARD_IA``) with :meth:`TieredBlockStore.move_to_cold`. Readers do not
know or care where a block is: reads fall back to the cold tier.

Moving copies first and deletes second, so at every instant the block is in at
least one tier; a crash in between leaves it in both, which reads and
:meth:`TieredBlockStore.iterate` handle, and the next move finishes the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from driveserver.storage.base import (
    AsyncContextStore,
    BlockNotFound,
    BlockStore,
    exists_many,
    put_many,
    validate_name,
)

__all__ = ["TieredBlockStore"]


class TieredBlockStore(AsyncContextStore):
    """Two BlockStores seen as one: ``hot`` first, ``cold`` as fallback.

    The tiered store owns both: :meth:`start` and :meth:`close` start and
    close them.
    """

    def __init__(self, hot: BlockStore, cold: BlockStore) -> None:
        self.hot = hot
        self.cold = cold

    def __repr__(self) -> str:
        return f"TieredBlockStore(hot={self.hot!r}, cold={self.cold!r})"


    async def start(self) -> None:
        await self.hot.start()
        try:
            await self.cold.start()
        except BaseException:
            await self.hot.close()
            raise

    async def close(self) -> None:
        try:
            await self.hot.close()
        finally:
            await self.cold.close()

    async def put_if_absent(self, name: str, data: bytes) -> bool:
        """Write to the hot tier unless either tier already has ``name``."""
        validate_name(name)
        if await self.cold.exists(name):
            return False
        return await self.hot.put_if_absent(name, data)

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """:meth:`put_if_absent` for each, in one batch per tier where it has batches."""
        for name, _ in items:
            validate_name(name)
        in_cold = await exists_many(self.cold, [name for name, _ in items])
        rest = [i for i, cold in enumerate(in_cold) if not cold]
        wrote = await put_many(self.hot, [items[i] for i in rest]) if rest else []
        results = [False] * len(items)
        for i, written in zip(rest, wrote, strict=True):
            results[i] = written
        return results

    async def exists_many(self, names: Sequence[str]) -> list[bool]:
        """:meth:`exists` for each (both tiers asked at once, as there)."""
        for name in names:
            validate_name(name)
        hot, cold = await asyncio.gather(exists_many(self.hot, names),
                                         exists_many(self.cold, names), return_exceptions=True)
        if isinstance(hot, BaseException):
            raise hot
        if all(hot):  # a cold-tier outage must not fail what the hot tier answers alone
            return hot
        if isinstance(cold, BaseException):
            raise cold
        return [h or c for h, c in zip(hot, cold, strict=True)]

    async def get(self, name: str) -> bytes:
        try:
            return await self.hot.get(name)
        except BlockNotFound:
            pass
        # A concurrent move deletes from hot only after the cold copy exists,
        # so a miss in hot followed by a read of cold cannot fall in between.
        try:
            return await self.cold.get(name)
        except BlockNotFound:
            raise BlockNotFound(name, repr(self)) from None

    async def exists(self, name: str) -> bool:
        # Both tiers are asked, at once: an answer that came sooner for a hot block than for
        # a missing one would tell an uploader whether anyone stores that block (issue 12,
        # finding 10; see blocks/pipeline.py).
        hot, cold = await asyncio.gather(self.hot.exists(name), self.cold.exists(name),
                                         return_exceptions=True)
        if hot is True:  # a cold-tier outage must not fail what the hot tier answers alone
            return True
        for answer in (hot, cold):
            if isinstance(answer, BaseException):
                raise answer
        return bool(cold)

    async def delete(self, name: str) -> None:
        """Delete from both tiers.

        A move of the same name running concurrently can still land a copy in
        the cold tier; GC sees that name again on its next pass.
        """
        await self.hot.delete(name)
        await self.cold.delete(name)

    async def stat_mtime(self, name: str) -> float | None:
        """Age of the hot copy if there is one, else of the cold copy.

        A move to cold resets the object's time; for a GC grace period that
        only errs on the side of keeping a block longer.
        """
        mtime = await self.hot.stat_mtime(name)
        if mtime is None:
            mtime = await self.cold.stat_mtime(name)
        return mtime

    async def iterate(self) -> AsyncIterator[str]:
        """Yield each name once, hot tier first.

        Remembers the hot tier's names (about 100 bytes each) to skip blocks
        caught in both tiers by an interrupted move; the hot tier is the small one.
        """
        seen: set[str] = set()
        async for name in self.hot.iterate():
            seen.add(name)
            yield name
        async for name in self.cold.iterate():
            if name not in seen:
                yield name

    async def check(self) -> None:
        await self.hot.check()
        await self.cold.check()

    async def move_to_cold(self, name: str) -> bool:
        """Move ``name`` from the hot tier to the cold one.

        The hot copy is deleted only after the cold tier has durably accepted
        the block (its put_if_absent returned). Returns True if a hot copy was
        moved, False if the block was already only in the cold tier.

        :raises BlockNotFound: the block is in neither tier.
        """
        validate_name(name)
        try:
            data = await self.hot.get(name)
        except BlockNotFound:
            if await self.cold.exists(name):
                return False
            raise BlockNotFound(name, repr(self)) from None
        await self.cold.put_if_absent(name, data)
        await self.hot.delete(name)
        return True
