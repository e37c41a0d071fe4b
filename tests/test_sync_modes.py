"""File modes: the exec bit is synced both ways (a property of each version), and a download
never widens who may read a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.helpers import RunningServer, upload
from tests.sync_helpers import EMAIL, make_devices, metric


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


async def test_the_exec_bit_travels_both_ways_without_resending_content(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    script = a.write("bin/run.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    a.write("notes.txt", "plain")
    await a.sync()
    await b.sync()
    assert mode(b.folder / "bin/run.sh") & 0o111 == 0o111 & ~umask()
    assert mode(b.folder / "notes.txt") & 0o111 == 0
    # Cleared on B: one new version with the same blocks, and A loses the bit.
    sent = await metric(srv, "drive_blocks_total", "in")
    (b.folder / "bin/run.sh").chmod(0o644)
    await b.sync()
    assert await metric(srv, "drive_blocks_total", "in") == sent
    await a.sync()
    assert mode(script) & 0o111 == 0
    assert a.read("bin/run.sh") == b"#!/bin/sh\necho hi\n"
    # And set again on A, with no content change either.
    script.chmod(0o700)
    await a.sync()
    await b.sync()
    assert mode(b.folder / "bin/run.sh") & 0o100
    assert not [p for d in (a, b) for p in d.tree() if "conflicted" in p]


async def test_a_download_keeps_the_mode_of_the_file_it_replaces(
        tmp_path: Path, srv: RunningServer) -> None:
    """A 0600 file edited elsewhere stays 0600 here (it became world-readable 0644)."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("tax-return.pdf", "private")
    await a.sync()
    await b.sync()
    (b.folder / "tax-return.pdf").chmod(0o600)
    await b.sync()
    a.write("tax-return.pdf", "private, amended")
    await a.sync()
    await b.sync()
    assert b.read("tax-return.pdf") == b"private, amended"
    assert mode(b.folder / "tax-return.pdf") == 0o600
    # A new file gets what any new file gets here: 0666 less the umask.
    a.write("new.txt", "new")
    await a.sync()
    await b.sync()
    assert mode(b.folder / "new.txt") == 0o666 & ~umask()


async def test_the_server_keeps_the_bit_per_version(srv: RunningServer) -> None:
    """``complete`` takes ``executable``; without it the current bit stays; a restore brings
    back the old version's bit; the feed and the listing carry it."""
    alice = await srv.login(EMAIL)
    made = await upload(alice, "/tool", b"content")
    fid = made["file_id"]
    r = await alice.get(f"/api/files/{fid}/download")
    blocks = [b["hash"] for b in r.body["blocks"]]
    r = await alice.post(f"/api/files/{fid}/complete",
                         {"blocks": blocks, "base_version": 1, "executable": True})
    assert r.status == 200 and r.body["version"] == 2, r.body
    r = await alice.post(f"/api/files/{fid}/complete", {"blocks": blocks})
    assert r.body["status"] == "unchanged"  # the same content, the bit kept: nothing new
    r = await alice.get(f"/api/files/{fid}")
    assert r.body["executable"] is True
    assert [v["executable"] for v in r.body["versions"]] == [True, False]
    r = await alice.post(f"/api/files/{fid}/complete", {"blocks": blocks, "executable": "yes"})
    assert r.status == 400 and r.body["error"]["field"] == "executable"
    r = await alice.post(f"/api/files/{fid}/restore/1")
    assert r.status == 200 and r.body["version"] == 3
    r = await alice.get(f"/api/files/{fid}/download")
    assert r.body["executable"] is False
    r = await alice.get("/api/sync/changes", params={"cursor": "0"})
    entry = [c for c in r.body["changes"] if c["file_id"] == fid][-1]
    assert entry["executable"] is False and entry["version"] == 3


async def test_the_file_a_conflict_brings_keeps_the_mode_of_the_one_it_displaces(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    tax = a.write("tax.txt", "v1")
    tax.chmod(0o600)
    await a.sync()
    await b.sync()
    b.write("tax.txt", "v2 from b")
    await b.sync()
    a.write("tax.txt", "v2 from a, different")
    await a.sync()
    copies = [p for p in a.folder.iterdir() if "conflicted" in p.name]
    assert len(copies) == 1 and mode(copies[0]) == 0o600
    assert a.read("tax.txt") == b"v2 from b" and mode(tax) == 0o600
