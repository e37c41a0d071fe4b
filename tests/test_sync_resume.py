"""An upload cut short after its blocks reached the server (a crash before ``complete``)
resumes by sending nothing again: the receipts were kept in the state database."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from driveproto.blocks import BLOCK_SIZE
from driveproto.chunking import hash_file_as
from syncclient.remote import Remote
from syncclient.state import State
from syncclient.transfer import upload_file
from tests.helpers import RunningServer, start_server
from tests.sync_helpers import metric


class Crash(Exception):
    pass


async def crash_before_complete(remote: Remote, path: Path, remote_path: str,
                                state: State) -> None:
    """Send every block, then die where ``complete`` would run (as a kill -9 would)."""
    real_complete = remote.complete

    async def crash(*args: object, **kwargs: object) -> None:
        raise Crash("killed before complete")

    remote.complete = crash  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            await upload_file(remote, path, remote_path, None, 0, receipts=state)
    finally:
        remote.complete = real_complete  # type: ignore[method-assign]


@pytest.fixture
async def srv(tmp_path: Path):
    server = await start_server(tmp_path / "data")
    await server.register("r@example.com")
    try:
        yield server
    finally:
        await server.stop()


async def test_resumed_upload_sends_no_block_twice(tmp_path: Path, srv: RunningServer) -> None:
    client = await srv.login("r@example.com", device="r")
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(5).randbytes(3 * BLOCK_SIZE + 10))
    state = State(tmp_path / "state.sqlite3")
    try:
        async with Remote(srv.url, client.token) as remote:
            await crash_before_complete(remote, path, "/big.bin", state)
            sent_first = await metric(srv, "drive_blocks_total", "in")
            assert sent_first == len(hash_file_as(path))  # every block, under the default scheme
            # A new process: the same state database, the receipts are still there.
            up = await upload_file(remote, path, "/big.bin", None, 0, receipts=state)
            assert up.version == 1
            assert await metric(srv, "drive_blocks_total", "in") == sent_first  # nothing resent
            assert state.receipts(list(up.blocks)) == {}  # forgotten once committed
    finally:
        state.close()
    r = await client.get(f"/api/files/{up.file_id}/content")
    assert r.body == path.read_bytes()


async def test_a_stale_receipt_falls_back_to_sending(tmp_path: Path, srv: RunningServer) -> None:
    """If the server no longer has a block a kept receipt names, the upload sends it."""
    from driveserver import appkeys
    from driveserver.gc import collect_garbage

    client = await srv.login("r@example.com", device="r")
    path = tmp_path / "f.bin"
    path.write_bytes(b"resume me" * 1000)
    state = State(tmp_path / "state.sqlite3")
    try:
        async with Remote(srv.url, client.token) as remote:
            await crash_before_complete(remote, path, "/f.bin", state)
            await collect_garbage(srv.app[appkeys.DB], srv.app[appkeys.STORE], -1)
            up = await upload_file(remote, path, "/f.bin", None, 0, receipts=state)
    finally:
        state.close()
    assert (await client.get(f"/api/files/{up.file_id}/content")).body == path.read_bytes()
