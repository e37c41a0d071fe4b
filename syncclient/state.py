"""The local state database: the synced tree, the remote tree cache, the cursor, errors.

One SQLite file in the config dir (WAL mode). Every write is its own short transaction made
*after* the effect it records is durable (a file renamed into place, a version committed on the
server), so a crash between the effect and the write only makes the next round redo a check,
never believe something that did not happen.

* ``synced`` — the last state both sides agreed on, per path: file id, version, size, mtime,
  inode, checksum and the ordered block hashes (also the index of blocks available locally).
* ``remote`` — the server's tree as the change feed described it, keyed by file id.
* ``kv`` — the feed cursor, the pause flag of the deletion guard, and similar single values.
* ``sync_errors`` — per-file problems shown by ``drive-sync status``.
* ``notices`` — per-path things ``drive-sync status`` tells the user that are not errors (a name
  this computer cannot create, a link kept here only), each with the ``kind`` of rule that
  made it, so that rule can replace all of its own at once.

Schema changes: columns and tables added later are added in place (``_upgrade``), so existing
state files keep working; a layout this code does not know is dropped and resynced, the way the
style guide allows for a client.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from driveproto.blocks import BLOCK_SIZE
from driveproto.replies import BlockReceipt

from .planner import Node

SCHEMA_VERSION = 2  # 2: notices in a table of their own (they were a JSON value in kv)

SCHEMA = """
CREATE TABLE IF NOT EXISTS synced (
    path TEXT PRIMARY KEY, is_dir INTEGER NOT NULL, file_id TEXT, version INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER, checksum TEXT,
    blocks TEXT NOT NULL DEFAULT '[]', verified_ns INTEGER NOT NULL DEFAULT 0,
    executable INTEGER NOT NULL DEFAULT 0, symlink INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS remote (
    file_id TEXT PRIMARY KEY, path TEXT NOT NULL, is_dir INTEGER NOT NULL,
    version INTEGER NOT NULL, size INTEGER NOT NULL, checksum TEXT,
    executable INTEGER NOT NULL DEFAULT 0, symlink INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS remote_path ON remote(path);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sync_errors (path TEXT PRIMARY KEY, message TEXT, at REAL);
CREATE TABLE IF NOT EXISTS receipts (hash TEXT PRIMARY KEY, receipt TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS notices (path TEXT PRIMARY KEY, message TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT '');
"""

# Which rule made a notice; ``replace_notices`` swaps all of one kind for the current ones. A
# notice of no kind ("") stays until its path gets another one.
NOTICE_KINDS = ("not_here", "not_on_windows", "twin")


def _notice_kind(message: str) -> str:
    """The kind of a notice, told by how its text ends (the rule that made it words it so)."""
    from .localtree import TWIN_NOTICE  # localtree imports this module

    if message.endswith("not synced to this computer"):
        return "not_here"
    if message.endswith("Windows computers will not get it"):
        return "not_on_windows"
    if message.endswith(TWIN_NOTICE):
        return "twin"
    return ""

# The server honours a block receipt for twice the upload grant's lifetime (12 h by default);
# the client uses its own for less, so a receipt it presents is never one the server just expired.
RECEIPT_SECONDS = 4 * 3600


@dataclass(frozen=True, slots=True)
class SyncedEntry:
    """A row of the synced tree."""

    path: str
    is_dir: bool
    file_id: str | None
    version: int
    size: int
    mtime_ns: int
    inode: int | None
    checksum: str | None
    blocks: tuple[str, ...]
    # When the content was read (file system clock); with mtime, says whether an unchanged
    # stat proves unchanged content (``localtree.stat_trusted``). 0: unknown, so it does not.
    verified_ns: int = 0
    executable: bool = False
    symlink: bool = False

    def node(self) -> Node:
        return Node(self.is_dir, self.checksum, self.file_id, self.version, self.inode, self.size,
                    self.executable, self.symlink)


def _like_prefix(path: str) -> str:
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


class State:
    """The state database. Plain ``sqlite3``: every query is a few microseconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The synced tree as last read or written here (see synced_entries), and the database's
        # data_version then.
        self._synced: dict[str, SyncedEntry] | None = None
        self._synced_version = -1
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            # An older client layout: drop and resync (the synced tree is rebuilt by a merge).
            for table in ("synced", "remote", "kv", "sync_errors"):
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
        self.db.executescript(SCHEMA)
        # Columns added later. verified_ns: such records are verified once more. executable:
        # records from before the exec bit was synced say "not executable", so an executable
        # file is sent once more (as a new version with the same blocks) and reaches the others.
        for table, column in (("synced", "verified_ns"), ("synced", "executable"),
                              ("remote", "executable"), ("synced", "symlink"),
                              ("remote", "symlink")):
            columns = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column in columns:
                continue
            try:
                self.db.execute(
                    f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
            except sqlite3.OperationalError as exc:  # another process (status) was first
                if "duplicate column" not in str(exc):
                    raise
        self._notices_from_kv()
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _notices_from_kv(self) -> None:
        """Schema 1 kept the notices as one JSON object under the ``notices`` key: move them to
        their table, in one transaction (another process opening the file at the same time
        finds them moved already)."""
        with self.transaction():
            row = self.db.execute("SELECT value FROM kv WHERE key = 'notices'").fetchone()
            if row is None:
                return
            try:
                old = json.loads(row[0] or "{}")
            except ValueError:
                old = {}
            if isinstance(old, dict):
                self.db.executemany(
                    "INSERT OR REPLACE INTO notices(path, message, kind) VALUES (?, ?, ?)",
                    [(str(p), str(m), _notice_kind(str(m))) for p, m in old.items()])
            self.db.execute("DELETE FROM kv WHERE key = 'notices'")

    def close(self) -> None:
        self.db.close()

    # --- key/value ------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

    # --- synced tree ----------------------------------------------------------------------------

    def synced_entries(self) -> dict[str, SyncedEntry]:
        """The synced tree (a copy the caller may keep). Every round reads it whole, and
        decoding 10,000 rows took longer than the round's own work while thousands of files
        arrived, round after round: so it is kept in memory, written through by
        :meth:`put_synced`, and read again after anything else changed the table (a subtree
        query, a rolled-back transaction, or another connection: SQLite's ``data_version``)."""
        version = self._data_version()
        if self._synced is None or version != self._synced_version:
            rows = self.db.execute("SELECT path, is_dir, file_id, version, size, mtime_ns, inode,"
                                   " checksum, blocks, verified_ns, executable, symlink FROM synced"
                                   ).fetchall()
            self._synced = {r[0]: SyncedEntry(r[0], bool(r[1]), r[2], r[3], r[4], r[5], r[6],
                                              r[7], tuple(json.loads(r[8])), r[9], bool(r[10]),
                                              bool(r[11]))
                            for r in rows}
            self._synced_version = version
        return dict(self._synced)

    def _data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _forget_synced_cache(self) -> None:
        self._synced = None

    def put_synced(self, e: SyncedEntry) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO synced(path, is_dir, file_id, version, size, mtime_ns, inode,"
            " checksum, blocks, verified_ns, executable, symlink)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (e.path, int(e.is_dir), e.file_id, e.version, e.size, e.mtime_ns, e.inode,
             e.checksum, json.dumps(list(e.blocks)), e.verified_ns, int(e.executable),
             int(e.symlink)))
        if self._synced is not None:
            self._synced[e.path] = e

    def synced_links_below(self, path: str) -> list[str]:
        """The synced symlinks at or below ``path`` (one subtree query, no other entry read)."""
        return [r[0] for r in self.db.execute(
            "SELECT path FROM synced WHERE symlink = 1 AND (path = ? OR path LIKE ? ESCAPE '\\')",
            (path, _like_prefix(path)))]

    def drop_synced(self, path: str) -> None:
        """Forget ``path`` and everything below it (one subtree query)."""
        self._forget_synced_cache()
        self.db.execute("DELETE FROM synced WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                        (path, _like_prefix(path)))

    def move_synced(self, src: str, dst: str) -> None:
        self._forget_synced_cache()
        with self.transaction():
            self.db.execute("DELETE FROM synced WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                            (dst, _like_prefix(dst)))
            self.db.execute(
                "UPDATE synced SET path = ? || substr(path, ?) WHERE path = ? OR path LIKE ?"
                " ESCAPE '\\'", (dst, len(src) + 1, src, _like_prefix(src)))

    # --- remote tree ----------------------------------------------------------------------------

    def remote_tree(self) -> dict[str, Node]:
        rows = self.db.execute("SELECT path, is_dir, checksum, file_id, version, size, executable,"
                               " symlink FROM remote").fetchall()
        return {r[0]: Node(bool(r[1]), r[2], r[3], r[4], None, r[5], bool(r[6]), bool(r[7]))
                for r in rows}

    def remote_by_path(self, path: str) -> Node | None:
        r = self.db.execute("SELECT path, is_dir, checksum, file_id, version, size, executable,"
                            " symlink FROM remote WHERE path = ?", (path,)).fetchone()
        return Node(bool(r[1]), r[2], r[3], r[4], None, r[5], bool(r[6]), bool(r[7])) \
            if r else None

    def remote_path_of(self, file_id: str) -> str | None:
        row = self.db.execute("SELECT path FROM remote WHERE file_id = ?", (file_id,)).fetchone()
        return row[0] if row else None

    def put_remote(self, path: str, node: Node) -> None:
        """Record an item at ``path``; whatever else the cache had there is replaced."""
        assert node.file_id is not None
        with self.transaction():
            self.db.execute("DELETE FROM remote WHERE path = ? AND file_id != ?",
                            (path, node.file_id))
            self.db.execute(
                "INSERT OR REPLACE INTO remote(file_id, path, is_dir, version, size, checksum,"
                " executable, symlink) VALUES (?,?,?,?,?,?,?,?)",
                (node.file_id, path, int(node.is_dir), node.version, node.size, node.checksum,
                 int(node.executable), int(node.symlink)))

    def drop_remote_id(self, file_id: str) -> None:
        """Forget the item with this id, wherever the cache has it."""
        self.db.execute("DELETE FROM remote WHERE file_id = ?", (file_id,))

    def drop_remote(self, path: str) -> None:
        self.db.execute("DELETE FROM remote WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                        (path, _like_prefix(path)))

    def move_remote(self, src: str, dst: str) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE remote SET path = ? || substr(path, ?) WHERE path = ? OR path LIKE ?"
                " ESCAPE '\\'", (dst, len(src) + 1, src, _like_prefix(src)))

    def clear_remote(self) -> None:
        self.db.execute("DELETE FROM remote")

    def transaction(self) -> _Tx:
        return _Tx(self.db, self._forget_synced_cache)

    # --- block index ----------------------------------------------------------------------------

    def block_sources(self) -> dict[str, tuple[str, int]]:
        """Block hash → (path, offset) of a synced file that had it, to reuse on download."""
        out: dict[str, tuple[str, int]] = {}
        for path, blocks, size in self.db.execute(
                "SELECT path, blocks, size FROM synced WHERE is_dir = 0 AND blocks != '[]'"):
            offset = 0
            for h, bsize in _block_sizes(json.loads(blocks), size):
                out.setdefault(h, (path, offset))
                offset += bsize
        return out

    # --- block receipts -------------------------------------------------------------------------

    def receipts(self, hashes: list[str]) -> dict[str, BlockReceipt]:
        """Receipts the server gave for blocks this device sent and has not yet committed: after
        a crash or a lost connection the upload resumes with only the blocks still missing."""
        fresh = time.time() - RECEIPT_SECONDS
        out: dict[str, BlockReceipt] = {}
        for h in hashes:
            row = self.db.execute("SELECT receipt, at FROM receipts WHERE hash = ?",
                                  (h,)).fetchone()
            if row is not None and row[1] > fresh:
                out[h] = json.loads(row[0])
        return out

    def put_receipt(self, h: str, receipt: BlockReceipt) -> None:
        self.db.execute("INSERT OR REPLACE INTO receipts(hash, receipt, at) VALUES (?,?,?)",
                        (h, json.dumps(receipt), time.time()))

    def drop_receipts(self, hashes: list[str] | None = None) -> None:
        """Forget receipts once committed (or refused): ``None`` forgets the stale ones."""
        if hashes is None:
            self.db.execute("DELETE FROM receipts WHERE at < ?",
                            (time.time() - RECEIPT_SECONDS,))
        else:
            self.db.executemany("DELETE FROM receipts WHERE hash = ?", [(h,) for h in hashes])

    # --- notices --------------------------------------------------------------------------------

    def notices(self) -> dict[str, str]:
        """Path -> notice, for ``drive-sync status``."""
        return dict(self.db.execute("SELECT path, message FROM notices ORDER BY path"))

    def notices_of(self, kind: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, message FROM notices WHERE kind = ?", (kind,)))

    def set_notice(self, path: str, message: str, kind: str | None = None) -> None:
        """Set the notice at ``path``; its kind, if not given, is told by how it ends (a twin
        renamed by another rule is still a twin notice)."""
        self.db.execute("INSERT OR REPLACE INTO notices(path, message, kind) VALUES (?, ?, ?)",
                        (path, message, _notice_kind(message) if kind is None else kind))

    def replace_notices(self, kind: str, current: dict[str, str]) -> None:
        """Make the notices of ``kind`` exactly ``current`` (a renamed or deleted item's notice
        goes away; another kind's notice at one of these paths is replaced)."""
        assert kind in NOTICE_KINDS
        with self.transaction():
            if self.notices_of(kind) == current:
                return
            self.db.execute("DELETE FROM notices WHERE kind = ?", (kind,))
            self.db.executemany(
                "INSERT OR REPLACE INTO notices(path, message, kind) VALUES (?, ?, ?)",
                [(p, m, kind) for p, m in current.items()])

    # --- errors ---------------------------------------------------------------------------------

    def set_error(self, path: str, message: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO sync_errors(path, message, at) VALUES (?,?,?)",
                        (path, message, time.time()))

    def clear_error(self, path: str) -> None:
        self.db.execute("DELETE FROM sync_errors WHERE path = ?", (path,))

    def clear_errors(self, keep: Iterable[str] = ()) -> None:
        keep = set(keep)
        for (path,) in self.db.execute("SELECT path FROM sync_errors").fetchall():
            if path not in keep:
                self.clear_error(path)

    def errors(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in
                self.db.execute("SELECT path, message FROM sync_errors ORDER BY path")]


def _block_sizes(hashes: list[str], size: int) -> Iterator[tuple[str, int]]:
    for i, h in enumerate(hashes):
        yield h, BLOCK_SIZE if i < len(hashes) - 1 else size - BLOCK_SIZE * (len(hashes) - 1)


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; nested uses join the outer transaction."""

    def __init__(self, db: sqlite3.Connection, on_rollback: Callable[[], None]) -> None:
        self.db = db
        self.outer = False
        self.on_rollback = on_rollback

    def __enter__(self) -> sqlite3.Connection:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self.outer:
            if exc_type is not None:
                self.on_rollback()  # what was written through is undone
                self.db.execute("ROLLBACK")
                return
            try:
                self.db.execute("COMMIT")
            except BaseException:
                self.on_rollback()
                raise
