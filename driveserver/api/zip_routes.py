"""Folders and selections as one zip, streamed: ``POST /api/files/zip`` and
``GET /api/files/zip?file_id=…`` (the same answer; the GET is for a browser, which can only
save a response to disk as it arrives when it navigates to it, and a GET needs no CSRF token).

**Before anything is sent**, every picked item is checked by :func:`permissions.authorize`
(404 for what the asker cannot read, exactly as for an id that does not exist) and the whole
plan is made (:mod:`driveserver.meta.archive`): entries at their paths relative to what was
picked, folders as directory entries (empty ones too), at most ``MAX_ENTRIES``.

**Then the bytes**, file by file: each file's current version is read block by block through
the block pipeline (:meth:`BlockPipeline.stream`, the content route's path: every block is
decrypted and checked against its hash before a byte of it is used), one block ahead, and
zipped by stream-zip (ZIP64 where a file or the archive needs it). stream-zip is a generator
that pulls each file's bytes and yields the archive's; it runs in a small thread pool of its
own (:class:`ZipStreams`), a step at a time, so that deflate never runs on the event loop, and
it asks the loop for each block (``run_coroutine_threadsafe``). A step holds a thread only
while it computes or waits for a block, not while the client is slow to read, so two threads
serve many downloads; memory is a few blocks per download, and downloads are capped per user
and in all (429 past either). stream-zip's own async wrapper would have used the loop's
default executor, whose few threads the database's ``BEGIN``/``COMMIT`` need.

A file whose first block looks incompressible (a deflate of its first 64 KiB saves under 10 %:
photos, video, archives) is stored at deflate level 0, a plain copy; others at level 1.
A block that fails its check or cannot be read once the first bytes are out cuts the connection
(the archive then has no central directory, so no unzip takes it for whole).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import stat
import threading
import urllib.parse
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
)
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web
from stream_zip import ZIP_32, ZIP_AUTO, stream_zip

from .. import appkeys
from ..errors import BadRequest, NotFound, TooManyRequests
from ..meta import archive
from ..meta.archive import Member
from ..meta.mounts import mounts_for
from ..permissions import Action, authorize
from .common import field, principal, read_json

log = logging.getLogger("driveserver.zip")
# How a member's bytes are read: an async iterator of its verified plaintext, block by block.
Reader = Callable[[Member], AsyncIterator[bytes]]
routes = web.RouteTableDef()

MAX_PICKED = 1000        # ids in one request
MAX_ENTRIES = 20_000     # files and folders in one archive
PER_USER, IN_ALL = 2, 16  # downloads streaming at once
THREADS = 2
CHUNK = 1 << 20          # bytes of archive per step
STEP_TIMEOUT = 300.0     # a block read the loop never answers (shutting down) ends the step
# What the DOS and Unix timestamps of a zip entry can hold (1980-01-01 .. 2038-01-19).
_EARLIEST, _LATEST = 315532800, 2**31 - 1


class ZipStreams:
    """The zips being sent: a thread pool of their own, and how many stream per user."""

    def __init__(self, threads: int = THREADS, per_user: int = PER_USER,
                 in_all: int = IN_ALL) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="zip")
        self.per_user, self.in_all = per_user, in_all
        self._open: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, user_id: str) -> Iterator[None]:
        """Count one download of ``user_id``'s while it runs; 429 if they (or all) have the
        most that may run at once."""
        if self._open.get(user_id, 0) >= self.per_user:
            raise TooManyRequests(f"at most {self.per_user} zip downloads at once per user",
                                  retry_after=5, code="too_many_downloads")
        if sum(self._open.values()) >= self.in_all:
            raise TooManyRequests("the server is sending as many zip downloads as it may",
                                  retry_after=5, code="too_many_downloads")
        self._open[user_id] = self._open.get(user_id, 0) + 1
        try:
            yield
        finally:
            self._open[user_id] -= 1
            if not self._open[user_id]:
                del self._open[user_id]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def archive(self, members: list[Member],
                      read: Reader) -> AsyncGenerator[bytes, None]:
        """The zip of ``members`` in chunks; ``read(member)`` is an async iterator of the
        member's verified bytes. Use with :func:`contextlib.aclosing`, so that a download cut
        short frees its thread's generator at once."""
        loop = asyncio.get_running_loop()
        gen = cast(Generator[bytes, None, None], stream_zip(
            _member_files(loop, threading.get_ident(), members, read), chunk_size=CHUNK))
        step: concurrent.futures.Future[bytes | None] | None = None
        try:
            while True:
                step = self._pool.submit(next, gen, None)
                chunk = await asyncio.wrap_future(step)
                if chunk is None:
                    return
                yield chunk
        finally:
            # A step still running (the client left meanwhile) must end before the generator
            # can be closed; it may be waiting for a block from this loop, which goes on.
            while step is not None and not step.done():
                with contextlib.suppress(BaseException):
                    await asyncio.wrap_future(step)
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(self._pool.submit(gen.close))


def _timestamp(member: Member) -> datetime:
    return datetime.fromtimestamp(min(max(member.modified_at, _EARLIEST), _LATEST),
                                  tz=UTC)


def _incompressible(sample: bytes) -> bool:
    sample = sample[:65536]
    return bool(sample) and len(zlib.compress(sample, 1)) > 0.9 * len(sample)


def _from_loop(loop: asyncio.AbstractEventLoop, loop_thread: int,
               chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
    """An async iterator on ``loop`` (run by the thread ``loop_thread``) read from a zip
    thread, one item at a time."""
    async def next_chunk() -> bytes | None:
        return await anext(chunks, None)

    async def close() -> None:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    try:
        while True:
            data = asyncio.run_coroutine_threadsafe(next_chunk(), loop).result(STEP_TIMEOUT)
            if data is None:
                return
            yield data
    finally:
        if threading.get_ident() == loop_thread:
            loop.create_task(close())  # dropped on the loop's own thread: never block it
        elif not loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), loop).result(STEP_TIMEOUT)


def _member_files(loop: asyncio.AbstractEventLoop, loop_thread: int, members: list[Member],
                  read: Reader) -> Iterator[Any]:
    """stream-zip's member tuples (runs in a zip thread): name, time, mode, method, bytes."""
    for m in members:
        name = m.path.replace("\\", "_")  # a backslash is a separator to Windows' unzippers
        if m.is_directory:
            yield name + "/", _timestamp(m), stat.S_IFDIR | 0o755, ZIP_32, ()
            continue
        data = _from_loop(loop, loop_thread, read(m))
        first = next(data, b"")
        level = 0 if _incompressible(first) else 1
        mode = stat.S_IFREG | (0o755 if m.executable else 0o644)
        yield name, _timestamp(m), mode, ZIP_AUTO(m.size, level=level), \
            itertools.chain((first,), data)


class _Changed(Exception):
    """A file's planned version is gone (pruned since the plan): the stream is cut."""


def _reader(request: web.Request) -> Reader:
    db, pipeline = request.app[appkeys.DB], request.app[appkeys.PIPELINE]

    async def read(member: Member) -> AsyncIterator[bytes]:
        blocks = await archive.member_blocks(db, member)
        if sum(b.size for b in blocks) != member.size:
            raise _Changed(f"version {member.version_id} of {member.file_id} changed")
        stream = pipeline.stream([b.hash for b in blocks], prefetch=1)
        try:
            async for data in stream:
                yield data
        finally:
            await stream.aclose()
    return read


def _unique(name: str, is_directory: bool, taken: set[str]) -> str:
    """``name``, or ``name (2)`` (before a file's extension: ``report (2).txt``) and so on, so
    that two picked items of one name from different folders both get into the archive."""
    stem, dot, ext = name.rpartition(".")
    if is_directory or not stem:
        stem, dot, ext = name, "", ""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{stem} ({n}){dot}{ext}"
    taken.add(candidate.casefold())
    return candidate


async def _plan(request: web.Request, user_id: str, ids: list[str]) -> tuple[list[Member], str]:
    """Every picked item checked, then the archive's entries; and the archive's file name."""
    db = request.app[appkeys.DB]
    picked = []
    async with db.snapshot() as snap:
        mount_names = {m.root_id: m.mount_name for m in (await mounts_for(snap, user_id))
                       .values() if m.mount_name is not None}
        for file_id in dict.fromkeys(ids):
            file = await authorize(snap, user_id, Action.READ, file_id)
            if file["trashed_at"] is not None or (not file["is_directory"]
                                                  and file["version"] == 0):
                raise NotFound("no such file")
            picked.append((file, mount_names.get(file["id"]) or file["name"] or "drive"))
    members: list[Member] = []
    seen: set[str] = set()
    taken: set[str] = set()
    for file, name in picked:
        if file["id"] in seen:  # picked, and inside a folder also picked
            continue
        found = await archive.subtree(db, file["id"],
                                      _unique(name, bool(file["is_directory"]), taken),
                                      MAX_ENTRIES - len(members) + 1)
        members += [m for m in found if m.file_id not in seen]
        seen.update(m.file_id for m in found)
        if len(members) > MAX_ENTRIES:
            raise BadRequest(f"a zip holds at most {MAX_ENTRIES} files and folders; pick fewer",
                             code="too_many_entries", max_entries=MAX_ENTRIES)
    _check_path_lengths(members)
    return members, (f"{picked[0][1]}.zip" if len(picked) == 1 else "download.zip")


def _check_path_lengths(members: list[Member]) -> None:
    too_long = next((m.path for m in members if len(m.path.encode()) > 65_000), None)
    if too_long is not None:  # a zip entry's name has 16 bits of length
        raise BadRequest("a path in this selection is too long for a zip entry",
                         code="path_too_long")


def _disposition(filename: str) -> str:
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                       for c in filename)
    return (f'attachment; filename="{fallback}";'
            f" filename*=UTF-8''{urllib.parse.quote(filename, safe='')}")


def _ids(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PICKED or not all(
            isinstance(i, str) and 0 < len(i) <= 100 for i in raw):
        raise BadRequest(f"file_ids must be a list of 1 to {MAX_PICKED} file ids",
                         code="invalid_field", field="file_ids")
    return raw


async def send_archive(request: web.Request, holder: str,
                       plan: Callable[[], Awaitable[tuple[list[Member], str]]],
                       headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """Plan (``plan()``, which checks every permission before a byte is sent) and stream one
    zip, counted as one of ``holder``'s downloads: a user id, or a link's own key."""
    streams = request.app[ZIP_STREAMS]
    with streams.slot(holder):
        members, filename = await plan()
        resp = web.StreamResponse(headers={
            **(headers or {}),
            "Content-Type": "application/zip", "Content-Disposition": _disposition(filename),
            "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})
        await resp.prepare(request)
        try:
            async with contextlib.aclosing(streams.archive(members, _reader(request))) as zipped:
                async for chunk in zipped:
                    await resp.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # Headers are gone: the honest signal left is to cut the connection short.
            log.error("zip download cut short: %s: %s", type(exc).__name__, exc)
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("zip stream failed") from None
        await resp.write_eof()
        return resp


async def folder_members(request: web.Request, folder_id: str,
                         name: str) -> list[Member]:
    """A folder already authorized (a link's) and what lies below it, ``name/...``."""
    members = await archive.subtree(request.app[appkeys.DB], folder_id, name, MAX_ENTRIES + 1)
    if len(members) > MAX_ENTRIES:
        raise BadRequest(f"a zip holds at most {MAX_ENTRIES} files and folders",
                         code="too_many_entries", max_entries=MAX_ENTRIES)
    _check_path_lengths(members)
    return members


async def _send(request: web.Request, ids: list[str]) -> web.StreamResponse:
    user_id = principal(request).user_id
    return await send_archive(request, user_id, lambda: _plan(request, user_id, ids))


@routes.post("/api/files/zip")
async def zip_post(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    return await _send(request, _ids(field(body, "file_ids", list)))


@routes.get("/api/files/zip")
async def zip_get(request: web.Request) -> web.StreamResponse:
    return await _send(request, _ids(request.query.getall("file_id", [])))


ZIP_STREAMS: web.AppKey[ZipStreams] = web.AppKey("zip_streams", ZipStreams)


def setup(app: web.Application) -> None:
    """The routes and the pool behind them (closed with the app)."""
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[ZIP_STREAMS] = streams = ZipStreams()
        yield
        streams.close()

    app.cleanup_ctx.append(pool_ctx)
    app.add_routes(routes)
