"""The batch paths that make thousands of small files fast (issue 15), held to the guarantees of
the one-by-one paths they replace: the block pipeline's batch store, on a real local store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from driveproto.blocks import block_hash
from driveserver.blocks.keys import KeyRing
from driveserver.blocks.pipeline import INLINE_BYTES, BlockPipeline
from driveserver.storage import LocalBlockStore, TieredBlockStore


def _objects(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts}


async def test_store_blocks_seals_stores_and_conceals_like_store_block(tmp_path: Path) -> None:
    """A batch of small and large blocks is sealed and stored, each readable and verified; a
    block stored before, sent again with ``conceal``, costs one more write under a decoy name
    (deleted again) and leaves the stored object as it was; without ``conceal`` nothing more
    is written."""
    store = TieredBlockStore(LocalBlockStore(tmp_path / "hot"), LocalBlockStore(tmp_path / "cold"))
    async with store:
        pipeline = BlockPipeline(KeyRing.generate(), store)
        try:
            datas = [os.urandom(100 + 37 * i) for i in range(70)] + \
                    [os.urandom(INLINE_BYTES + 1), b"z" * (3 * INLINE_BYTES)]
            blocks = [(block_hash(d), d, True) for d in datas]
            await pipeline.store_blocks(blocks)
            for h, d, _ in blocks:
                assert await pipeline.get(h) == d
            stored = _objects(tmp_path / "hot")
            assert len(stored) == len(blocks)
            first = stored.pop()
            before = (tmp_path / "hot" / first[:2] / first[2:4] / first).read_bytes()

            writes: list[str] = []
            real = store.hot.put_many_if_absent  # type: ignore[attr-defined]

            async def counted(items: list[tuple[str, bytes]]) -> list[bool]:
                writes.extend(name for name, _ in items)
                return await real(items)

            store.hot.put_many_if_absent = counted  # type: ignore[attr-defined]
            again = blocks[:5] + [(block_hash(b"new"), b"new", True)]
            await pipeline.store_blocks(again)
            assert len(writes) == 6  # the five known ones too, under decoy names
            assert sum(w in {pipeline.keyring.object_name(h) for h, _, _ in again}
                       for w in writes) == 1  # only the new block under its own name
            for _ in range(100):  # the decoys are deleted in the background
                if not pipeline._cleanups:
                    break
                await asyncio.sleep(0.02)
            assert _objects(tmp_path / "hot") == stored | {first} | \
                {pipeline.keyring.object_name(block_hash(b"new"))}
            assert (tmp_path / "hot" / first[:2] / first[2:4] / first).read_bytes() == before

            writes.clear()
            await pipeline.store_blocks([(h, d, False) for h, d, _ in blocks[:3]])
            assert writes == [pipeline.keyring.object_name(h) for h, _, _ in blocks[:3]]
            assert len(_objects(tmp_path / "hot")) == len(blocks) + 1
        finally:
            await pipeline.aclose()
