"""Files saved again while they upload: the device adopts what the server committed for it and
sends the rest next round, instead of dropping the result and uploading on a stale base for
ever (each attempt a 409)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from driveproto.blocks import BLOCK_SIZE
from syncclient.errors import Offline
from syncclient.remote import Remote
from tests.helpers import RunningServer, wait_for
from tests.sync_helpers import EMAIL, Device, make_devices, with_engine


def save(path: Path, data: bytes) -> None:
    """As editors save: a temp file beside it, renamed over it (a new inode)."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def server_file(srv: RunningServer, path: str) -> dict[str, Any]:
    """The server's entry for a file at the root (version, checksum, size)."""
    alice = await srv.login(EMAIL)
    r = await alice.get("/api/files", params={"path": "/"})
    assert r.status == 200, r.body
    found = [e for e in r.body["entries"] if e["name"] == path.lstrip("/")]
    assert found, (path, r.body)
    return found[0]


async def recorded(device: Device, path: str) -> tuple[int | None, str | None]:
    """The version and checksum the device's synced tree holds for ``path``."""
    async def read(engine: Any) -> tuple[int | None, str | None]:
        entry = engine.state.synced_entries().get(path)
        return (entry.version, entry.checksum) if entry else (None, None)
    return await with_engine(device, read)


def save_after(monkeypatch: pytest.MonkeyPatch, method: str, path: Path,
               saves: list[bytes]) -> list[int]:
    """The user saves ``path`` again each time just after the server committed its upload
    (the reply is on its way): ``saves`` land one after each call of ``Remote.<method>``."""
    real = getattr(Remote, method)
    calls: list[int] = []

    async def then_save(self: Remote, *args: Any, **kwargs: Any) -> Any:
        out = await real(self, *args, **kwargs)
        if len(calls) < len(saves):
            save(path, saves[len(calls)])
        calls.append(1)
        return out
    monkeypatch.setattr(Remote, method, then_save)
    return calls


async def assert_agree(srv: RunningServer, a: Device, b: Device, rel: str) -> None:
    """The server has the folder's content; the device that wrote it records that version."""
    meta = await server_file(srv, "/" + rel)
    assert await recorded(a, "/" + rel) == (meta["version"], meta["checksum"])
    await b.sync()
    assert b.read(rel) == a.read(rel)


@pytest.mark.parametrize(("size", "saves"), [(100, 1), (2 * BLOCK_SIZE + 5, 6)],
                         ids=["batch", "single"])
async def test_a_file_saved_during_its_own_upload_is_sent_next_round(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch, size: int,
        saves: int) -> None:
    """Saved again right after each commit (a log appended to, a document autosaved): every
    committed version is recorded, the newest content goes up on top of the last one."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    batch = size < 1024
    if batch:
        a.write("other.txt", "so that the small file goes in a batch")
    target = a.write("doc.bin", os.urandom(size))
    newer = [os.urandom(size) for _ in range(saves)]
    calls = save_after(monkeypatch, "complete_batch" if batch else "complete",
                       target, newer)
    await a.sync()
    assert len(calls) >= saves  # every save landed
    assert a.read("doc.bin") == newer[-1]
    await assert_agree(srv, a, b, "doc.bin")
    assert b.read("doc.bin") == newer[-1]
    # One version a commit: each snapshot, then the rest on top of it; no conflicted copy.
    meta = await server_file(srv, "/doc.bin")
    r = await (await srv.login(EMAIL)).get(f"/api/files/{meta['file_id']}/versions")
    assert [v["version"] for v in r.body["versions"]] == list(range(saves + 1, 0, -1))
    assert not [p for p in a.tree() if "conflicted" in p]


async def test_a_reply_lost_after_the_commit_is_learned_from_the_server(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server committed, the answer never arrived (a dropped connection), and the user
    saved again: the device finds its own version on the server and sends the edit on top of
    it, with no conflicted copy of itself."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    target = a.write("notes.txt", "v1")
    await a.sync()
    a.write("notes.txt", "v2 " * 10)
    real = Remote.complete_batch

    async def lost(self: Remote, *args: Any, **kwargs: Any) -> Any:
        await real(self, *args, **kwargs)
        monkeypatch.setattr(Remote, "complete_batch", real)
        save(target, b"v3, saved while the reply was lost")
        raise Offline("the reply was lost")
    a.write("other.txt", "a second file, so that the batch path is taken")
    monkeypatch.setattr(Remote, "complete_batch", lost)
    await a.cli("run", "--once")  # fails in the first round: the connection dropped
    await a.sync()
    assert a.read("notes.txt") == b"v3, saved while the reply was lost"
    await assert_agree(srv, a, b, "notes.txt")
    assert not [p for p in a.tree() if "conflicted" in p]


async def test_editors_on_both_daemons_converge_after_they_stop(
        tmp_path: Path, srv: RunningServer) -> None:
    """The workload that found it: on A a file rewritten (temp + rename) every 30 ms and a log
    appended every 20 ms, on B another file saved every 30 ms, for seconds, while both daemons
    run. Once the writers stop, both folders and the server agree, and each daemon's record of
    every file is the version the server committed."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("log.txt", "")
    await a.sync()
    await b.sync()
    a.start_daemon(tmp_path / "a.log")
    b.start_daemon(tmp_path / "b.log")
    stop = threading.Event()

    def rewrite(device: Device, name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            save(device.folder / name, f"{name} save {n}\n".encode() * (1 + n % 50))
            time.sleep(0.03)

    def append() -> None:
        n = 0
        with open(a.folder / "log.txt", "ab") as log:
            while not stop.is_set():
                n += 1
                log.write(os.urandom(2000) + f" line {n}\n".encode())
                log.flush()
                time.sleep(0.02)

    writers = [threading.Thread(target=rewrite, args=(a, "a-doc.txt")),
               threading.Thread(target=rewrite, args=(b, "b-doc.txt")),
               threading.Thread(target=append)]
    try:
        for w in writers:
            w.start()
        await asyncio.sleep(4)  # the workload's duration, not a wait for a result
        stop.set()
        for w in writers:
            w.join()

        async def agreed() -> bool:
            try:
                ta, tb = a.tree(), b.tree()
            except FileNotFoundError:  # a daemon's temp file, gone between listing and reading
                return False
            if ta != tb or set(ta) < {"a-doc.txt", "b-doc.txt", "log.txt"}:
                return False
            for rel, data in ta.items():
                if (await server_file(srv, rel))["size"] != len(data or b""):
                    return False
            return True
        await wait_for(agreed, within=30, what="both folders and the server to agree")
    finally:
        stop.set()
        for d in (a, b):
            if d.daemon is not None:
                d.stop_daemon()
    for rel in ("a-doc.txt", "b-doc.txt", "log.txt"):
        meta = await server_file(srv, "/" + rel)
        for d in (a, b):
            assert await recorded(d, "/" + rel) == (meta["version"], meta["checksum"]), (d, rel)
    assert not [p for p in a.tree() if "conflicted" in p]
