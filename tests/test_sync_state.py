"""The client's state database (``syncclient.state``): a file written by an older client keeps
working, and notices live in a table of their own."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from syncclient.localtree import TWIN_NOTICE
from syncclient.state import State, SyncedEntry

# The layout of schema 1, as a client before the notices table left it.
SCHEMA_1 = """
CREATE TABLE synced (
    path TEXT PRIMARY KEY, is_dir INTEGER NOT NULL, file_id TEXT, version INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER, checksum TEXT,
    blocks TEXT NOT NULL DEFAULT '[]', verified_ns INTEGER NOT NULL DEFAULT 0,
    executable INTEGER NOT NULL DEFAULT 0, symlink INTEGER NOT NULL DEFAULT 0);
CREATE TABLE remote (
    file_id TEXT PRIMARY KEY, path TEXT NOT NULL, is_dir INTEGER NOT NULL,
    version INTEGER NOT NULL, size INTEGER NOT NULL, checksum TEXT,
    executable INTEGER NOT NULL DEFAULT 0, symlink INTEGER NOT NULL DEFAULT 0);
CREATE INDEX remote_path ON remote(path);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE sync_errors (path TEXT PRIMARY KEY, message TEXT, at REAL);
CREATE TABLE receipts (hash TEXT PRIMARY KEY, receipt TEXT NOT NULL, at REAL NOT NULL);
PRAGMA user_version=1;
"""

OLD_NOTICES = {
    "/a:b.txt": "the name contains ':': it stays on the server and is not synced to this computer",
    "/CON.txt": "the name is reserved for a device on Windows: Windows computers will not get it",
    "/Index (Case Conflict).html": f"renamed from Index.html{TWIN_NOTICE}",
    "/copy.txt": "your edit of /x.txt (shared with you to view only) was kept here",
}


def schema_1_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO synced(path, is_dir, file_id, version, size, mtime_ns, inode,"
               " checksum) VALUES ('/kept.txt', 0, 'f1', 3, 5, 7, 9, 'c1')")
    db.execute("INSERT INTO kv VALUES ('cursor', '42'), ('notices', ?)",
               (json.dumps(OLD_NOTICES),))
    db.commit()
    db.close()


def test_a_schema_1_state_file_keeps_its_tree_cursor_and_notices(tmp_path: Path) -> None:
    """Opened by this client, an older file is not dropped and resynced: its synced tree and
    cursor stay, and its notices move into their table, each with the rule that made it, so
    that rule still replaces its own (and nothing else) on the next scan."""
    db_path = tmp_path / "state.db"
    schema_1_file(db_path)
    state = State(db_path)
    try:
        assert state.get("cursor") == "42" and state.get("notices") is None
        assert state.synced_entries()["/kept.txt"].version == 3
        assert state.notices() == OLD_NOTICES
        assert set(state.notices_of("not_here")) == {"/a:b.txt"}
        assert set(state.notices_of("not_on_windows")) == {"/CON.txt"}
        assert set(state.notices_of("twin")) == {"/Index (Case Conflict).html"}
        state.replace_notices("not_here", {})
        assert set(state.notices()) == set(OLD_NOTICES) - {"/a:b.txt"}
    finally:
        state.close()
    again = State(db_path)  # opening it again changes nothing
    try:
        assert set(again.notices()) == set(OLD_NOTICES) - {"/a:b.txt"}
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        again.close()


def test_one_rule_replaces_only_its_own_notices(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    try:
        state.set_notice("/link", "a symbolic link to '../x': kept on this computer only")
        state.replace_notices("not_on_windows", {"/a?": "…: Windows computers will not get it",
                                                 "/link": "…: Windows computers will not get it"})
        assert set(state.notices()) == {"/a?", "/link"}  # the other notice at /link replaced
        state.replace_notices("not_on_windows", {"/b?": "…: Windows computers will not get it"})
        assert set(state.notices()) == {"/b?"}
        state.set_notice("/kept", "kept on this computer only: the folder is no longer shared")
        state.replace_notices("twin", {})
        assert set(state.notices()) == {"/b?", "/kept"}
    finally:
        state.close()


def _entry(path: str, version: int = 1) -> SyncedEntry:
    return SyncedEntry(path, False, f"id{path}", version, 3, 10, 20, "sum", ("h",))


def test_the_synced_tree_kept_in_memory_is_always_what_the_file_says(tmp_path: Path) -> None:
    """``synced_entries`` is served from memory between rounds (issue 15): it still answers
    what the database holds after a write here, a rolled-back transaction, a subtree query, and
    a write by another connection (another process on the same state file)."""
    state = State(tmp_path / "state.db")
    state.put_synced(_entry("/a"))
    first = state.synced_entries()
    assert set(first) == {"/a"}
    first.clear()  # a copy: the caller's to keep or change
    state.put_synced(_entry("/dir/b"))
    assert set(state.synced_entries()) == {"/a", "/dir/b"}
    try:
        with state.transaction():
            state.put_synced(_entry("/c"))
            state.put_synced(_entry("/a", version=9))
            raise RuntimeError("the round failed")
    except RuntimeError:
        pass
    entries = state.synced_entries()
    assert set(entries) == {"/a", "/dir/b"} and entries["/a"].version == 1
    state.move_synced("/dir", "/moved")
    assert set(state.synced_entries()) == {"/a", "/moved/b"}
    state.drop_synced("/moved")
    assert set(state.synced_entries()) == {"/a"}
    other = sqlite3.connect(tmp_path / "state.db")
    other.execute("UPDATE synced SET version = 5 WHERE path = '/a'")
    other.execute("INSERT INTO synced(path, is_dir, version, size, mtime_ns) "
                  "VALUES ('/e', 0, 1, 0, 0)")
    other.commit()
    other.close()
    entries = state.synced_entries()
    assert set(entries) == {"/a", "/e"} and entries["/a"].version == 5
    reopened = State(tmp_path / "state.db")
    assert reopened.synced_entries() == entries
    reopened.close()
    state.close()
