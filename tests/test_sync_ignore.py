"""The ignore rules: ``.drivesyncignore`` in gitignore syntax, the built-in names, what
``drive-sync status --ignored`` lists, and a pattern added to a synced folder (end to end).

The expected verdicts of the pattern table are git's own: ``test_the_table_is_what_git_says``
checks every row with ``git check-ignore`` on a real tree, walked from the root down as git
walks it (a path inside an ignored folder is ignored).
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
from watchdog.events import FileCreatedEvent, FileModifiedEvent

from syncclient.ignore import IGNORE_FILE, Ignore, _Rules, ignored_paths
from syncclient.watcher import _Handler
from tests.helpers import RunningServer
from tests.needs import need
from tests.sync_helpers import EMAIL, Device, converge, make_devices

# (the ignore file's lines, [(path, is a folder, ignored)])
CASES: list[tuple[list[str], list[tuple[str, bool, bool]]]] = [
    (["build/"], [("/build", True, True), ("/build/x.o", False, True),
                  ("/build/a/b/c.txt", False, True), ("/src/build", True, True),
                  ("/src/build/y.o", False, True), ("/docs/build", False, False),
                  ("/builds", True, False)]),
    (["**/node_modules"], [("/node_modules/a.js", False, True),
                           ("/a/b/node_modules/c.js", False, True),
                           ("/node_modulesx/a.js", False, False)]),
    (["*.log", "!keep.log"], [("/a.log", False, True), ("/keep.log", False, False),
                              ("/d/keep.log", False, False), ("/d/b.log", False, True)]),
    (["/dist"], [("/dist/app.js", False, True), ("/src/dist/app.js", False, False)]),
    (["docs/*.md"], [("/docs/a.md", False, True), ("/docs/x/b.md", False, False),
                     ("/other/docs/c.md", False, False)]),
    (["# a comment", "\\#hash", "\\!bang"], [("/# a comment", False, False),
                                             ("/#hash", False, True), ("/!bang", False, True)]),
    (["trail  ", "esc\\ ", "two\\   ", " lead"],
     [("/trail", False, True), ("/trail  ", False, False), ("/esc ", False, True),
      ("/esc", False, False), ("/two ", False, True), ("/ lead", False, True),
      ("/lead", False, False)]),
    # A folder ignored is ignored with everything in it: git never looks inside.
    (["build/", "!build/keep.txt"], [("/build/keep.txt", False, True),
                                     ("/build/a.o", False, True)]),
    (["build/*", "!build/keep.txt"], [("/build/keep.txt", False, False),
                                      ("/build/a.o", False, True)]),
    # Ignore everything but text files, in any folder.
    (["*", "!*/", "!*.txt"], [("/a.txt", False, False), ("/a.bin", False, True),
                              ("/sub/b.txt", False, False), ("/sub/b.bin", False, True),
                              ("/sub/deeper", True, False)]),
    (["a/**/b"], [("/a/b", False, True), ("/a/x/y/b", False, True), ("/x/a/b", False, False)]),
    (["cache/**"], [("/cache", True, False), ("/cache/x", False, True),
                    ("/cache/d/y", False, True)]),
    (["out/**/"], [("/out", True, False), ("/out/f", False, False), ("/out/d", True, True),
                   ("/out/d/g", False, True)]),
    (["*.txt", "!keep/"], [("/keep/a.txt", False, True), ("/keep/b.bin", False, False)]),
    (["[ab]c", "d?"], [("/ac", False, True), ("/cc", False, False), ("/dx", False, True)]),
    (["*", "!/"], [("/f", False, True), ("/d", True, True)]),
]


def _rows() -> list[tuple[list[str], str, bool, bool]]:
    return [(lines, path, is_dir, ignored) for lines, rows in CASES
            for path, is_dir, ignored in rows]


def _make_tree(root: Path, rows: list[tuple[str, bool, bool]]) -> None:
    for path, is_dir, _ in rows:
        target = root / path.lstrip("/")
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("x")


def _folder_with(tmp_path: Path, lines: list[str], rows: list[tuple[str, bool, bool]] = ()
                 ) -> Path:
    root = tmp_path / "folder"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / IGNORE_FILE).write_text("".join(line + "\n" for line in lines))
    _make_tree(root, list(rows))
    return root


def test_the_table_is_what_git_says(tmp_path: Path) -> None:
    need(shutil.which("git") is not None,
         "needs the `git` command on PATH as the oracle for .gitignore semantics: install git "
         "(e.g. `apt-get install git`)")
    wrong = []
    for n, (lines, rows) in enumerate(CASES):
        repo = tmp_path / f"repo{n}"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / ".gitignore").write_text("".join(line + "\n" for line in lines))
        _make_tree(repo, rows)
        queries = {p.lstrip("/") for p, _, _ in rows}
        for p in list(queries):
            parts = p.split("/")
            queries.update("/".join(parts[:i]) for i in range(1, len(parts)))
        out = subprocess.run(["git", "-C", str(repo), "check-ignore", "-v", "-n", "--no-index",
                              "--stdin"], input="".join(q + "\n" for q in sorted(queries)),
                             capture_output=True, text=True, check=False).stdout
        itself = {}  # path -> the last pattern matching the path itself ignores it
        for line in out.splitlines():
            source, path = line.split("\t", 1)
            pattern = source.split(":", 2)[2]
            itself[path] = pattern != "" and not pattern.startswith("!")
        for path, _, expected in rows:
            parts = path.lstrip("/").split("/")
            git = any(itself["/".join(parts[:i])] for i in range(1, len(parts) + 1))
            if git != expected:
                wrong.append((lines, path, git))
    assert wrong == [], f"(lines, path, git's verdict) where the table differs: {wrong}"


@pytest.mark.parametrize(("lines", "path", "is_dir", "ignored"), _rows())
def test_gitignore_syntax(tmp_path: Path, lines: list[str], path: str, is_dir: bool,
                          ignored: bool) -> None:
    ignore = Ignore(_folder_with(tmp_path, lines))
    assert ignore(path, is_dir=is_dir) is ignored


@pytest.mark.parametrize(("lines", "rows"), CASES)
def test_without_is_dir_the_disk_decides(tmp_path: Path, lines: list[str],
                                         rows: list[tuple[str, bool, bool]]) -> None:
    """Callers that do not say whether a path is a folder get the same verdicts."""
    ignore = Ignore(_folder_with(tmp_path, lines, rows))
    assert {p: ignore(p) for p, _, _ in rows} == {p: want for p, _, want in rows}


def test_a_folder_pattern_leaves_a_missing_path_alone(tmp_path: Path) -> None:
    """Where only the kind decides (``build/``) and nothing is on disk to say, the path is
    ignored: left alone on both sides, never deleted or sent for want of knowing."""
    root = _folder_with(tmp_path, ["build/"])
    ignore = Ignore(root)
    assert ignore("/build") is True
    assert ignore("/build", is_dir=False) is False
    (root / "build").write_text("a file named build")
    assert ignore("/build") is False
    assert ignore("/other") is False  # no pattern depends on the kind: no question asked


def test_built_in_names_cannot_be_re_included(tmp_path: Path) -> None:
    ignore = Ignore(_folder_with(tmp_path, [
        "!*.swp", "!.DS_Store", "!.drive-sync", "!.drive-sync/", "!.~drive-sync-*",
        "!*.tmp", "!*.tmp/", "!~$*"]))
    for path, is_dir in [("/a.swp", False), ("/d/.DS_Store", False), ("/.drive-sync", True),
                         ("/.drive-sync/state", False), ("/d/.~drive-sync-x1.tmp", False),
                         ("/part.tmp", False), ("/x.tmp", True), ("/x.tmp/inside.txt", False),
                         ("/~$doc.docx", False)]:
        assert ignore(path, is_dir=is_dir), path
    assert not ignore("/d/plain.txt", is_dir=False)


def test_no_ignore_file_means_only_the_built_in_names(tmp_path: Path) -> None:
    ignore = Ignore(tmp_path)
    assert not ignore("/build/x.o") and not ignore("/a.log")
    assert ignore("/.drive-sync") and ignore("/a/.DS_Store") and not ignore("/")


def test_crlf_bom_and_nfd_patterns(tmp_path: Path) -> None:
    """A file saved on Windows (CRLF, a BOM) or typed on macOS (NFD) reads the same."""
    (tmp_path / IGNORE_FILE).write_bytes("\ufeff*.log\r\n".encode()
                                         + unicodedata.normalize("NFD", "café/\r\n").encode())
    ignore = Ignore(tmp_path)
    assert ignore("/a.log", is_dir=False)
    assert ignore("/" + unicodedata.normalize("NFC", "café"), is_dir=True)
    assert not ignore("/cafe", is_dir=True)


def test_invalid_lines_are_skipped_and_named(tmp_path: Path) -> None:
    ignore = Ignore(_folder_with(tmp_path, ["*.log", "!", "trailing\\", "build/"]))
    assert ignore.invalid == [(2, "!"), (3, "trailing\\")]
    assert ignore("/a.log", is_dir=False) and ignore("/build", is_dir=True)


def test_a_query_about_the_ignore_file_reloads_it(tmp_path: Path) -> None:
    """The daemon's watcher keeps one Ignore for its whole run: the event on the ignore file
    itself is how it learns about an edit, so that it stops waking for what is now ignored."""
    notified: list[str] = []
    handler = _Handler(tmp_path, Ignore(tmp_path), lambda: notified.append("wake"))
    handler.dispatch(FileCreatedEvent(str(tmp_path / "debug.log")))
    assert notified == ["wake"]
    (tmp_path / IGNORE_FILE).write_text("*.log\n")
    handler.dispatch(FileModifiedEvent(str(tmp_path / IGNORE_FILE)))
    assert notified == ["wake", "wake"]  # the ignore file itself is synced
    handler.dispatch(FileCreatedEvent(str(tmp_path / "debug2.log")))
    assert notified == ["wake", "wake"]
    (tmp_path / IGNORE_FILE).unlink()
    handler.dispatch(FileModifiedEvent(str(tmp_path / IGNORE_FILE)))
    handler.dispatch(FileCreatedEvent(str(tmp_path / "debug3.log")))
    assert notified == ["wake"] * 4


def test_a_folder_is_judged_once_however_many_paths_are_below(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scanned path and watcher event is asked about (tens of thousands a minute): the
    folders above a path are decided once, not again for each path in them."""
    ignore = Ignore(_folder_with(tmp_path, ["build/", "*.log", "!keep.log"]))
    decided: list[str] = []
    real = _Rules.decide

    def counting(self: _Rules, rel: str, is_dir: bool | None, start: int = 0) -> bool | None:
        if start == 0:
            decided.append(rel)
        return real(self, rel, is_dir, start)
    monkeypatch.setattr(_Rules, "decide", counting)
    for i in range(500):
        assert not ignore(f"/a/b/c/d/f{i}.txt", is_dir=False)
    assert len(decided) == 500 + 4  # each file, and a, a/b, a/b/c, a/b/c/d once
    decided.clear()
    for i in range(500):
        assert ignore(f"/a/build/x/f{i}.txt", is_dir=False)
    assert decided == ["a/build"]  # a is known; below an ignored folder nothing is asked


def test_ignored_paths_lists_each_ignored_folder_once(tmp_path: Path) -> None:
    root = _folder_with(tmp_path, ["build/", "*.log", "!keep.log", "**/node_modules"], [
        ("/build/x.o", False, True), ("/build/sub/y.o", False, True),
        ("/src/app/node_modules/m/index.js", False, True), ("/src/app/main.py", False, False),
        ("/a.log", False, True), ("/logs/keep.log", False, False), ("/logs/b.log", False, True),
        ("/.drive-sync/state.db", False, True), ("/notes.txt", False, False)])
    (root / "two\nlines.log").write_text("x")
    (root / ".DS_Store").write_text("x")
    assert list(ignored_paths(root)) == [
        ".DS_Store", "a.log", "build/", "logs/b.log", "src/app/node_modules/", "two\nlines.log"]


# --- through the CLI and the server ----------------------------------------------------------

async def test_status_ignored_lists_relative_paths(two: tuple[Device, Device], capsys) -> None:
    a, _ = two
    a.write(IGNORE_FILE, "build/\n*.log\n!\n")
    a.write("build/deep/x.o", "o")
    a.write("src/debug.log", "log")
    a.write("src/main.c", "int main;")
    a.write("two\nlines.log", "log")
    capsys.readouterr()
    assert await a.cli("status", "--ignored") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["build/", "src/debug.log", '"two\\nlines.log"']
    assert f"{IGNORE_FILE} line 3: not a valid pattern" in err


async def _server_entries(srv: RunningServer, path: str) -> dict[str, tuple[int, int]]:
    client = await srv.login(EMAIL)
    r = await client.get("/api/files", params={"path": path})
    assert r.status == 200, r
    return {e["name"]: (e["version"], e["size"]) for e in r.body["entries"]}


async def test_a_pattern_added_later_stops_syncing_without_deleting(
        two: tuple[Device, Device], srv: RunningServer) -> None:
    """Paths synced before a pattern names them stay where they are, on the server and in
    both folders; what is done to them afterwards, on either side, goes nowhere."""
    a, b = two
    a.write("build/out.o", "object v1")
    a.write("build/sub/deep.o", "deep")
    a.write("logs/a.log", "log v1")
    a.write("logs/keep.log", "keep v1")
    a.write("notes.txt", "notes v1")
    await converge(a, b)
    assert b.read("build/sub/deep.o") == b"deep" and b.read("logs/a.log") == b"log v1"
    before = {p: await _server_entries(srv, p) for p in ("/", "/build", "/build/sub", "/logs")}

    a.write(IGNORE_FILE, "build/\n*.log\n!keep.log\n")
    await converge(a, b)
    assert b.read(IGNORE_FILE) == a.read(IGNORE_FILE)
    for d in (a, b):
        assert d.read("build/out.o") == b"object v1" and d.read("logs/a.log") == b"log v1"
    # Edits, deletions and new files under the pattern, on both sides; and edits elsewhere.
    a.write("build/out.o", "object v2, ignored")
    a.write("build/new.o", "new, ignored")
    (a.folder / "logs/a.log").unlink()
    shutil.rmtree(b.folder / "build/sub")
    a.write("logs/keep.log", "keep v2")
    b.write("notes.txt", "notes v2")
    await converge(a, b)

    assert b.read("logs/keep.log") == b"keep v2" and a.read("notes.txt") == b"notes v2"
    assert b.read("build/out.o") == b"object v1" and not (b.folder / "build/new.o").exists()
    assert b.read("logs/a.log") == b"log v1"  # A's deletion did not travel
    assert a.read("build/sub/deep.o") == b"deep"  # nor B's
    after = {p: await _server_entries(srv, p) for p in ("/", "/build", "/build/sub", "/logs")}
    assert after["/build"] == before["/build"] and after["/build/sub"] == before["/build/sub"]
    assert after["/logs"]["a.log"] == before["/logs"]["a.log"]
    assert after["/logs"]["keep.log"][0] > before["/logs"]["keep.log"][0]
    assert set(after["/"]) == set(before["/"]) | {IGNORE_FILE}
    trash = await (await srv.login(EMAIL)).get("/api/trash")
    assert trash.body["entries"] == []


async def test_a_folder_deleted_on_the_server_keeps_what_was_ignored_in_it(
        tmp_path: Path, srv: RunningServer) -> None:
    """Ignored files were never sent: in no trash nor history on the server. A folder deleted
    elsewhere goes, but they stay here, with the folders that hold them."""
    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    a.write(".drivesyncignore", ".env\n")
    a.write("proj/notes.txt", "n")
    a.write("proj/deep/.env", "API_KEY=never-uploaded")
    a.write("proj/.DS_Store", "litter")
    a.write("proj/.notes.txt.swp", "unsaved work")
    await a.sync()
    alice = await srv.login(EMAIL)
    r = await alice.get("/api/files", params={"path": "/"})
    fid = {x["name"]: x for x in r.body["entries"]}["proj"]["file_id"]
    assert (await alice.delete(f"/api/files/{fid}")).status == 204
    await a.sync()
    assert a.read("proj/deep/.env") == b"API_KEY=never-uploaded"
    assert a.read("proj/.notes.txt.swp") == b"unsaved work"  # an editor's swap file stays
    assert not (a.folder / "proj/notes.txt").exists()
    assert not (a.folder / "proj/.DS_Store").exists()
    # What stays is left alone: the deletion is not undone on the server.
    await a.sync()
    r = await alice.get("/api/files", params={"path": "/"})
    assert [x["name"] for x in r.body["entries"]] == [".drivesyncignore"]
