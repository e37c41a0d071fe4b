"""Carrying out one round's plan: every operation kind has one handler (``HANDLERS``, checked
against ``planner.OP_KINDS``), small uploads go in batches, small downloads are fetched and
written in batches (``batch_download``) and other downloads run several at a time, and what a
failure means for the round is decided here, in one place.

Failure policy, per operation:

* an ``ApiError`` is that file's problem: recorded (``drive-sync status``), the round goes on;
  except a 403 on a deletion or move on the server, which is a view-only shared item: the
  server keeps it, so it comes back here (with a notice) instead;
* the file changed, vanished or was replaced while we worked on it (``FileChanged``,
  ``FileNotFoundError``...): deferred, the next round plans again from what is there;
* anything else (``Offline``, ``AuthError`` from a batch, a bug) ends the round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from . import batch_download, down, up
from .context import BATCH_FILES, RoundResult, SyncContext
from .errors import ApiError
from .localtree import LocalFile, Scan
from .planner import OP_KINDS, Op, OpKind
from .progress import report_round
from .state import SyncedEntry
from .transfer import FileChanged

log = logging.getLogger(__name__)

PARALLEL_FILES = 8  # downloads in flight at once
PARALLEL_BATCHES = 3  # upload batches in flight at once
PARALLEL_FOLDERS = 8  # folders being made on the server at once (siblings only)
DEFERRED = (FileChanged, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, FileExistsError)

Handler = Callable[[SyncContext, Op, Scan], Awaitable[None]]


async def record(ctx: SyncContext, op: Op, local: Scan) -> None:
    """Both sides agree: remember what they hold."""
    node = ctx.state.remote_by_path(op.path)
    item: LocalFile | None = local.items.get(op.path)
    assert node is not None and item is not None
    ctx.put_synced(SyncedEntry(op.path, node.is_dir, node.file_id, node.version,
                               item.size, item.mtime_ns, item.inode, item.checksum,
                               item.blocks, executable=item.executable,
                               symlink=item.symlink))


async def forget(ctx: SyncContext, op: Op, local: Scan) -> None:
    """Gone on both sides (or kept here only): drop the synced record."""
    del local
    ctx.state.drop_synced(op.path)


HANDLERS: Mapping[OpKind, Handler] = {
    "upload": up.upload,
    "mkdir_remote": up.mkdir_remote,
    "delete_remote": up.delete_remote,
    "move_remote": up.move_remote,
    "download": down.download,
    "mkdir_local": down.mkdir_local,
    "delete_local": down.delete_local,
    "move_local": down.move_local,
    "conflict": down.conflict,
    "record": record,
    "forget": forget,
}
assert set(HANDLERS) == set(OP_KINDS), "every operation kind has exactly one handler"


async def execute(ctx: SyncContext, ops: list[Op], local: Scan) -> RoundResult:
    """Carry out one round's operations in plan order. Small uploads are grouped into
    batches and downloads run several at a time (each touches its own path; parents are
    created as needed); anything else first waits for those groups to finish. A round
    that takes a while reports how far it got every 2 s (log and ``status``)."""
    out = RoundResult()
    reporter = asyncio.create_task(report_round(out.ops, len(ops), ctx.status))
    try:
        await _execute_round(ctx, ops, local, out)
    finally:
        reporter.cancel()
    return out


async def _execute_round(ctx: SyncContext, ops: list[Op], local: Scan,
                         out: RoundResult) -> None:
    ctx.sources = None
    uploads: list[Op] = []
    downloads: list[Op] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def upload_group(group: list[Op]) -> None:
        if len(group) == 1:
            await run_one(ctx, group[0], local, out)
            return
        try:
            await up.upload_many(ctx, group, local, out)
        except ApiError as exc:
            for op in group:
                out.errors[op.path] = str(exc)

    async def start_uploads() -> None:
        # A few batches in flight at once: the server spends most of a batch storing
        # blocks and committing, so overlapping them keeps it busy.
        if uploads:
            in_flight.add(asyncio.create_task(upload_group(list(uploads))))
            uploads.clear()
        while len(in_flight) >= PARALLEL_BATCHES:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight.difference_update(done)
            for t in done:
                t.result()

    async def flush() -> None:
        await start_uploads()
        while in_flight:
            done, _ = await asyncio.wait(in_flight)
            in_flight.difference_update(done)
            for t in done:
                t.result()
        if downloads:
            group = list(downloads)
            downloads.clear()
            await down.prefetch_small(ctx, group)
            # The small files fetched in batches are written in batches too; what is left
            # (large files, symlinks, content that changed meanwhile) goes one by one.
            group = await batch_download.write_prefetched(ctx, group, local, out)
            sem = asyncio.Semaphore(PARALLEL_FILES)

            async def one(op: Op) -> None:
                async with sem:
                    await run_one(ctx, op, local, out)

            await asyncio.gather(*(one(op) for op in group))
            ctx.prefetched = {}

    folders: list[Op] = []  # consecutive folders to make on the server

    async def make_folders() -> None:
        # Level by level (a parent before its children), several at once within a level:
        # one after another, a hundred new folders cost a hundred round trips in a row.
        levels: dict[int, list[Op]] = {}
        for op in folders:
            levels.setdefault(op.path.count("/"), []).append(op)
        folders.clear()
        sem = asyncio.Semaphore(PARALLEL_FOLDERS)

        async def one(op: Op) -> None:
            async with sem:
                await run_one(ctx, op, local, out)

        for depth in sorted(levels):
            await asyncio.gather(*(one(op) for op in levels[depth]))

    for op in ops:
        if op.kind == "mkdir_remote":
            folders.append(op)
            continue
        if folders:
            await make_folders()
        if op.kind == "upload" and _batchable(ctx, op, local):
            uploads.append(op)
            if len(uploads) >= BATCH_FILES:
                await start_uploads()
        elif op.kind == "download":
            downloads.append(op)
            if len(downloads) >= BATCH_FILES:
                await flush()
        else:
            if op.kind not in ("upload", "mkdir_remote", "mkdir_local"):
                await flush()
            await run_one(ctx, op, local, out)
    if folders:
        await make_folders()
    await flush()


def _batchable(ctx: SyncContext, op: Op, local: Scan) -> bool:
    item = local.items.get(op.path)
    return item is not None and item.size <= ctx.config.batch_max_file_bytes


async def run_one(ctx: SyncContext, op: Op, local: Scan, out: RoundResult) -> None:
    """Run one operation by its handler; a per-file failure is recorded in ``out``, not
    raised (see the module docstring for which failures end the round)."""
    try:
        await HANDLERS[op.kind](ctx, op, local)
        out.ops.append(op)
        ctx.state.clear_error(op.path)
    except ApiError as exc:
        if exc.status == 403 and op.kind in ("delete_remote", "move_remote"):
            # A view-only shared item: the server keeps it, so it comes back here.
            gone = op.src if op.kind == "move_remote" else op.path
            assert gone is not None
            ctx.state.drop_synced(gone)
            ctx.notice(gone, "shared with you to view only: restored from the server")
            out.ops.append(op)
            return
        if op.kind == "mkdir_remote" and up.view_only_refusal(exc):
            # A new folder in a folder shared to view only: the server cannot have it. Its
            # files become conflicted copies (their uploads are refused the same way); once
            # it is empty it goes (rmdir never removes anything but an empty folder).
            with contextlib.suppress(OSError):
                ctx.os_path(op.path, local).rmdir()
            ctx.notice(op.path, "shared with you to view only: no new folder there "
                                "(removed once empty)")
            out.ops.append(op)
            return
        if op.kind == "move_remote" and exc.code == "nested_share" and op.src is not None \
                and not ctx.os_path(op.src).exists():
            # The server keeps shared folders apart (none inside another): undo the move
            # where the user made it, so the folder is where the server has it.
            ctx.os_path(op.path, local).rename(ctx.os_path(op.src))
            ctx.notice(op.src, "a shared folder cannot go inside another: moved back")
            out.ops.append(op)
            return
        log.warning("%s %s failed: %s", op.kind, op.path, exc)
        out.errors[op.path] = str(exc)
        ctx.state.set_error(op.path, str(exc))
    except DEFERRED as exc:
        log.info("%s %s deferred: %s", op.kind, op.path, exc)
        out.ops.append(op)  # the next round sees the new state
