"""The BlockStore interface and the errors every store raises.

A block store keeps opaque, immutable objects under opaque names: sealed
blocks (ciphertext) named by ``KeyRing.object_name``. It knows nothing about
users, files or encryption, which is what lets the same blocks code run on a
local directory, S3 or a hot/cold pair.

Names are content-derived, so two writes under one name always carry the same
block (possibly sealed differently, but opening to the same plaintext). That
is why :meth:`BlockStore.put_if_absent` may keep whichever copy arrived first,
and why a write that races with another one is harmless.

Exceptions::

    StorageError             anything the store could not do
     ├── BlockNotFound       get() of a name that is not stored
     └── StorageUnavailable  the backend cannot be reached or refuses us
                             (down, wrong credentials, missing bucket or directory)

Stores translate their backend's errors (OSError, botocore) into these at their
boundary, so callers never need to know which backend they talk to.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

__all__ = [
    "BatchStore",
    "BlockStore",
    "StorageError",
    "BlockNotFound",
    "StorageUnavailable",
    "is_valid_name",
    "validate_name",
    "exists_many",
    "put_many",
]


class StorageError(Exception):
    """A block store operation failed."""


class BlockNotFound(StorageError):
    """The requested object is not stored."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        super().__init__(f"block {name} not found" + (f" in {where}" if where else ""))


class StorageUnavailable(StorageError):
    """The backend cannot be reached or rejects us; retrying later or fixing config may help."""


_NAME_RE = re.compile(r"[0-9a-f]{8,128}")


def is_valid_name(name: object) -> bool:
    """Tell whether ``name`` is a well-formed object name: 8 to 128 lowercase hex digits.

    Object names are hex digests; accepting nothing else means no name can
    climb out of a directory, collide with a temp file or a foreign object in
    a bucket, or be confused with a prefix.
    """
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def validate_name(name: str) -> str:
    """Return ``name`` if valid, else raise ValueError (a caller bug, not a storage failure)."""
    if not is_valid_name(name):
        raise ValueError(f"invalid object name {name!r} (want 8-128 lowercase hex digits)")
    return name


@runtime_checkable
class BlockStore(Protocol):
    """Async storage of immutable objects under hex names.

    Lifecycle: ``await start()`` before use, ``await close()`` after; both are
    idempotent so an app's cleanup can call close() whatever happened before.
    """

    async def start(self) -> None:
        """Open connections and do start-up housekeeping. Idempotent."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent; the store is unusable afterwards."""
        ...

    async def put_if_absent(self, name: str, data: bytes) -> bool:
        """Store ``data`` under ``name`` unless something is stored there already.

        Returns True if this call wrote it, False if it was already there (the
        existing object is kept). When it returns, the object is durable. A
        crash never leaves a partial object under ``name``.
        """
        ...

    async def get(self, name: str) -> bytes:
        """Return the object stored under ``name``.

        :raises BlockNotFound: nothing is stored under ``name``.
        """
        ...

    async def exists(self, name: str) -> bool:
        """Tell whether an object is stored under ``name``."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the object under ``name``; deleting a missing name is not an error."""
        ...

    def iterate(self) -> AsyncIterator[str]:
        """Yield every stored name once, in no particular order, skipping foreign or temp files.

        Names written or deleted while iterating may or may not appear.
        """
        ...

    async def stat_mtime(self, name: str) -> float | None:
        """When the object was stored (POSIX seconds), or None if it is not stored.

        Garbage collection uses it for a grace period: an object younger than
        that may belong to an upload that has not been committed yet. A
        put_if_absent that finds the object already there does not refresh it.
        """
        ...

    async def check(self) -> None:
        """Verify the backend is reachable and usable.

        :raises StorageUnavailable: with a message that says what to fix.
        """
        ...


@runtime_checkable
class BatchStore(Protocol):
    """A store that does many operations faster together than one by one (the local directory:
    one thread hand-off and grouped fsyncs for a batch of small blocks). Optional: callers go
    through :func:`put_many` and :func:`exists_many`, which fall back to the single calls."""

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """:meth:`BlockStore.put_if_absent` for each ``(name, data)``, with the same result and
        guarantees for each (durable when this returns, never partial under its name); the
        names are distinct."""
        ...

    async def exists_many(self, names: Sequence[str]) -> list[bool]:
        """:meth:`BlockStore.exists` for each name."""
        ...


BATCH_CONCURRENCY = 16  # single calls in flight at once when a store has no batch calls


async def put_many(store: BlockStore, items: Sequence[tuple[str, bytes]]) -> list[bool]:
    """Store each ``(name, data)`` unless present (distinct names), in one batch where the store
    can (:class:`BatchStore`), else a few single calls at a time (an S3 PUT each)."""
    if isinstance(store, BatchStore):
        return await store.put_many_if_absent(items)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(name: str, data: bytes) -> bool:
        async with gate:
            return await store.put_if_absent(name, data)

    return list(await asyncio.gather(*(one(n, d) for n, d in items)))


async def exists_many(store: BlockStore, names: Sequence[str]) -> list[bool]:
    """Whether each name is stored, in one batch where the store can."""
    if isinstance(store, BatchStore):
        return await store.exists_many(names)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(name: str) -> bool:
        async with gate:
            return await store.exists(name)

    return list(await asyncio.gather(*(one(n) for n in names)))


class AsyncContextStore:
    """``async with store:`` for any store with ``start()`` and ``close()``."""

    async def start(self) -> None:  # pragma: no cover - every store defines its own
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - every store defines its own
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
