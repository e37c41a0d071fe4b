"""A request body cut into blocks as it streams in, a few blocks stored at once.

Shared by ``POST /blocks/upload`` and WebDAV's PUT: memory stays bounded by a few blocks
whatever the body's size, and past ``limit`` bytes the caller's own error ends the request
(blocks already stored stay as unreferenced blocks for GC, as a cut-off upload's do).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from driveproto.blocks import BlockSplitter

from .. import appkeys

READ_CHUNK = 1024 * 1024
IN_FLIGHT = 3  # blocks being sealed/stored at once while the body streams in


async def store_body(request: web.Request, limit: int, store: Callable[[bytes], Awaitable[str]],
                     stored: Callable[[str, int], None],
                     too_large: Callable[[], Exception]) -> int:
    """Cut the body into blocks, ``store(block)`` each (returning its hash), and call
    ``stored(hash, size)`` in the body's order; ``too_large()`` is raised past ``limit``.
    Returns the bytes received (also in ``request[BYTES_IN]``, for the access log)."""
    splitter = BlockSplitter()
    in_flight: deque[asyncio.Task[str]] = deque()
    sizes: deque[int] = deque()
    received = 0

    async def settle(keep: int) -> None:
        while len(in_flight) > keep:
            h = await in_flight.popleft()
            stored(h, sizes.popleft())

    def start(block: bytes) -> None:
        in_flight.append(asyncio.ensure_future(store(block)))
        sizes.append(len(block))

    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            received += len(chunk)
            if received > limit:
                raise too_large()
            for block in splitter.feed(chunk):
                start(block)
                await settle(IN_FLIGHT - 1)
        tail = splitter.finish()
        if tail is not None:
            start(tail)
        await settle(0)
    finally:
        for task in in_flight:
            task.cancel()
        request[appkeys.BYTES_IN] = received
    return received
