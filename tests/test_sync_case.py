"""Names the server takes for one (issue 11, finding 7): two items in one folder whose names differ
only in letter case (``index.html`` / ``Index.html``, as in /usr/share/doc) or in Unicode form
(NFC / NFD) can only arise in a case-sensitive local folder. Both are kept, as Dropbox does: the
one not synced yet is renamed to ``Index (Case Conflict).html``, with a notice, and the device is
in sync again."""

from __future__ import annotations

import logging
import os
import unicodedata
from pathlib import Path

import pytest

from syncclient.ignore import Ignore
from syncclient.localtree import rename_twins, scan
from tests.helpers import RunningServer
from tests.sync_helpers import Device

RENAMED = "renamed to"  # in the log line the rename writes


async def run_once(d: Device, capsys: pytest.CaptureFixture[str]) -> str:
    """``run --once``, which must exit 0 (in sync); what it printed."""
    capsys.readouterr()
    await d.sync()
    return capsys.readouterr().out


async def status(d: Device, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert await d.cli("status") == 0
    return capsys.readouterr().out


def renames(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if RENAMED in r.getMessage()]


async def test_files_differing_only_in_case_are_both_kept(
        two: tuple[Device, Device], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = two
    caplog.set_level(logging.INFO, logger="syncclient")
    a.write("doc/index.html", "<p>lower</p>")
    a.write("doc/Index.html", "<p>Upper</p>")
    a.write("doc/other.txt", "other")
    assert await a.cli("run", "--dry-run") == 0  # a dry run renames nothing
    assert sorted(a.tree()) == ["doc", "doc/Index.html", "doc/index.html", "doc/other.txt"]

    assert "In sync" in await run_once(a, capsys)
    # "Index.html" sorts first and keeps its name; the later one is renamed, content and all.
    want = {"doc": None, "doc/Index.html": b"<p>Upper</p>",
            "doc/index (Case Conflict).html": b"<p>lower</p>", "doc/other.txt": b"other"}
    assert a.tree() == want
    out = await status(a, capsys)
    assert "State:   idle" in out and "Problems" not in out
    assert "/doc/index (Case Conflict).html: renamed from 'index.html' to keep both: " \
           "'Index.html' is in the same folder" in out
    assert len(renames(caplog)) == 1

    await b.sync()
    assert b.tree() == want
    assert "In sync (0 operation(s)" in await run_once(a, capsys)  # nothing more to do
    assert a.tree() == want and len(renames(caplog)) == 1

    # The notice lasts while the renamed file keeps its new name.
    (a.folder / "doc/index (Case Conflict).html").rename(a.folder / "doc/index-old.html")
    await a.sync()
    assert "Case Conflict" not in await status(a, capsys)


async def test_folders_differing_only_in_case_are_both_kept(
        two: tuple[Device, Device], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two
    a.write("Docs/a.txt", "in Docs")
    a.write("docs/b.txt", "in docs")
    a.write("docs/deeper/c.txt", "deeper in docs")
    assert "In sync" in await run_once(a, capsys)
    want = {"Docs": None, "Docs/a.txt": b"in Docs", "docs (Case Conflict)": None,
            "docs (Case Conflict)/b.txt": b"in docs", "docs (Case Conflict)/deeper": None,
            "docs (Case Conflict)/deeper/c.txt": b"deeper in docs"}
    assert a.tree() == want
    out = await status(a, capsys)
    assert "State:   idle" in out and "/docs (Case Conflict): renamed from 'docs'" in out
    await b.sync()
    assert b.tree() == want
    assert "In sync (0 operation(s)" in await run_once(a, capsys)


async def test_the_synced_one_keeps_its_name(
        two: tuple[Device, Device], srv: RunningServer, capsys: pytest.CaptureFixture[str]
        ) -> None:
    a, b = two
    a.write("readme.txt", "synced")
    await a.sync()
    await b.sync()
    inode = (a.folder / "readme.txt").stat().st_ino
    # "README.txt" sorts before "readme.txt", but the synced one is never the one renamed.
    a.write("README.txt", "new")
    assert "In sync" in await run_once(a, capsys)
    want = {"readme.txt": b"synced", "README (Case Conflict).txt": b"new"}
    assert a.tree() == want
    assert (a.folder / "readme.txt").stat().st_ino == inode
    await b.sync()
    assert b.tree() == want
    assert "/README (Case Conflict).txt: renamed from 'README.txt'" in await status(a, capsys)
    assert "In sync (0 operation(s)" in await run_once(a, capsys)


async def test_a_new_name_taken_in_any_case_is_skipped(
        two: tuple[Device, Device], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two
    a.write("a.txt", "1")
    a.write("A.txt", "2")
    a.write("a (case conflict).txt", "already there")
    assert "In sync" in await run_once(a, capsys)
    want = {"A.txt": b"2", "a (Case Conflict 2).txt": b"1", "a (case conflict).txt":
            b"already there"}
    assert a.tree() == want
    await b.sync()
    assert b.tree() == want


async def test_the_same_name_in_nfc_and_nfd_is_kept_twice(
        two: tuple[Device, Device], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    a.write(f"{nfc}.txt", "composed")
    a.write(f"{nfd}.txt", "decomposed")
    assert "In sync" in await run_once(a, capsys)
    # The NFD spelling sorts first and keeps the name; the NFC one is renamed.
    assert sorted(os.listdir(a.folder)) == sorted(
        [".drive-sync", f"{nfd}.txt", f"{nfc} (Unicode Encoding Conflict).txt"])
    out = await status(a, capsys)
    assert "State:   idle" in out
    assert f"/{nfc} (Unicode Encoding Conflict).txt: renamed from '{nfc}.txt'" in out
    await b.sync()
    assert b.tree() == {f"{nfc}.txt": b"decomposed",
                        f"{nfc} (Unicode Encoding Conflict).txt": b"composed"}
    assert "In sync (0 operation(s)" in await run_once(a, capsys)


def test_only_what_the_scan_saw_is_renamed(tmp_path: Path) -> None:
    """Another item put in the twin's place since the scan is left alone; the twin itself,
    edited since, is renamed (a rename loses nothing)."""
    (tmp_path / "X.txt").write_text("kept")  # sorts first: keeps its name
    (tmp_path / "x.txt").write_text("twin")
    (tmp_path / "Y").mkdir()
    (tmp_path / "y").mkdir()
    seen = scan(tmp_path, {}, Ignore(tmp_path), None)
    assert sorted(t.path for t in seen.twins) == ["/x.txt", "/y"]
    assert "/x.txt" in seen.problems and "/X.txt" in seen.items
    (tmp_path / "x.txt").write_text("twin, edited")  # the same file, changed
    (tmp_path / "new").mkdir()
    (tmp_path / "y").rmdir()
    (tmp_path / "new").rename(tmp_path / "y")  # another folder in its place
    done = rename_twins(tmp_path, seen.twins)
    assert [r.path for r in done] == ["/x (Case Conflict).txt"]
    assert sorted(os.listdir(tmp_path)) == ["X.txt", "Y", "x (Case Conflict).txt", "y"]
    assert (tmp_path / "x (Case Conflict).txt").read_text() == "twin, edited"
