"""Names one computer can hold and another cannot (``syncclient.names``), end to end against a
real server: never a crash, never a deletion, always a message saying what happened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncclient import names
from tests.helpers import ApiClient, RunningServer
from tests.sync_helpers import EMAIL, Device, make_devices


async def notices(d: Device, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert await d.cli("status") == 0
    return capsys.readouterr().out


def test_windows_rules() -> None:
    for bad in ("a:b.txt", 'say "hi"', "q?", "back\\slash", "tab\there", "trailing.",
                "trailing ", "CON", "con.txt", "Lpt9.log", "NUL .tar.gz"):
        assert names.windows_problem(bad), bad
    for good in ("report.txt", "CONSOLE.txt", "COM10", ".hidden", "naïve café.md", "a.b.c"):
        assert names.windows_problem(good) is None, good


async def test_names_windows_cannot_hold_stay_on_the_server_for_a_windows_device(
        tmp_path: Path, srv: RunningServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    a, win = make_devices(tmp_path, "linux-laptop", "windows-pc")
    await a.init(srv)
    await win.init(srv)
    for rel in ("plan: v2.txt", "CON.txt", "fine.txt", "dir./inner.txt"):
        a.write(rel, f"content of {rel}")
    await a.sync()  # Linux holds them all; the notices say Windows will not
    out = await notices(a, capsys)
    assert "/plan: v2.txt: the name contains ':'" in out and "Windows computers will not get it" \
        in out and "/CON.txt: the name is reserved" in out and "/fine.txt" not in out

    # Both devices run in this process: only the Windows one's syncs see Windows rules.
    async def windows_sync() -> None:
        with monkeypatch.context() as m:
            m.setattr(names, "LOCAL_RULES", names.windows_problem)
            await win.sync()  # exits 0: nothing this device could do differently

    await windows_sync()
    assert win.tree() == {"fine.txt": b"content of fine.txt"}
    out = await notices(win, capsys)
    for rel in ("/plan: v2.txt", "/CON.txt", "/dir."):
        assert f"{rel}: the name " in out
    assert "not synced to this computer" in out
    await windows_sync()  # stable: nothing is retried or deleted
    await a.sync()
    assert sorted(a.tree()) == ["CON.txt", "dir.", "dir./inner.txt", "fine.txt", "plan: v2.txt"]

    # Renamed on the server to a name Windows allows: it arrives, and its notice goes away.
    alice: ApiClient = await srv.login(EMAIL)
    listing = (await alice.get("/api/files", params={"path": "/"})).body["entries"]
    plan_id = next(e["file_id"] for e in listing if e["name"] == "plan: v2.txt")
    r = await alice.patch(f"/api/files/{plan_id}", {"path": "/plan - v2.txt"})
    assert r.status == 200, r
    await windows_sync()
    assert win.read("plan - v2.txt") == b"content of plan: v2.txt"
    assert "plan: v2.txt" not in await notices(win, capsys)

    # The other way round: renamed elsewhere to a name Windows cannot hold. The Windows copy
    # stays where it was, unsynced and explained; nothing comes back to the server.
    os.rename(a.folder / "fine.txt", a.folder / "fine: final.txt")
    await a.sync()
    await windows_sync()
    assert win.read("fine.txt") == b"content of fine.txt"
    out = await notices(win, capsys)
    assert "/fine.txt: renamed on the server to /fine: final.txt, a name this computer cannot" \
        " create: the copy here is kept as it was" in out
    await windows_sync()  # stable
    await a.sync()
    assert "fine.txt" not in a.tree() and a.read("fine: final.txt") == b"content of fine.txt"
    # Another item then takes the old name on the server: that one is what the name holds.
    a.write("fine.txt", "a new file under the old name")
    await a.sync()
    await windows_sync()
    assert win.read("fine.txt") == b"a new file under the old name"
    assert "renamed on the server" not in await notices(win, capsys)

async def test_a_local_name_that_is_not_utf8_is_reported_not_uploaded(
        tmp_path: Path, srv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("ok.txt", "fine")
    latin1 = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes, as an old archive may hold
    a.write(latin1, b"latin-1 named")
    assert await a.cli("run", "--once") == 1  # the user has something to fix
    out = await notices(a, capsys)
    assert "/caf\\xe9.txt: the name is not valid UTF-8; rename it to sync it" in out
    await b.sync()
    assert b.tree() == {"ok.txt": b"fine"}
    os.rename(a.folder / latin1, a.folder / "café.txt")  # renamed to UTF-8
    await a.sync()
    await b.sync()
    assert b.read("café.txt") == b"latin-1 named"
    assert "not valid UTF-8" not in await notices(a, capsys)


async def test_a_synced_folder_renamed_to_a_name_that_is_not_utf8_is_kept_on_the_server(
        tmp_path: Path, srv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("Photos/beach.jpg", "sand")
    await a.sync()
    latin1 = os.fsdecode(b"Fotos d\xe9t\xe9")
    os.rename(a.folder / "Photos", a.folder / latin1)
    assert await a.cli("run", "--once") == 1
    out = await notices(a, capsys)
    assert "/Photos: now at /Fotos d\\xe9t\\xe9, under a name that is not valid UTF-8" in out
    await b.sync()
    assert b.tree() == {"Photos": None, "Photos/beach.jpg": b"sand"}  # nothing deleted
    os.rename(a.folder / latin1, a.folder / "Fotos été")
    await a.sync()
    await b.sync()
    assert b.tree() == {"Fotos été": None, "Fotos été/beach.jpg": b"sand"}
    # A synced file moved into a folder with such a name is not deleted either.
    a.write("notes.txt", "keep me")
    await a.sync()
    (a.folder / latin1).mkdir()
    os.rename(a.folder / "notes.txt", a.folder / latin1 / "notes.txt")
    assert await a.cli("run", "--once") == 1
    assert "/notes.txt: now at /Fotos d\\xe9t\\xe9" in await notices(a, capsys)
    await b.sync()
    assert b.read("notes.txt") == b"keep me"
