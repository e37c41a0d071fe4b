"""The local tree: a scan of the folder, hashing only what changed since the synced tree.

A file whose size, mtime and inode equal its synced record keeps the synced checksum and block
list (the same shortcut as Dropbox and rsync), if that mtime can vouch for it
(:func:`stat_trusted`); anything else is hashed with the shared block module, so the client's
hashes are the server's. Symlinks are skipped with a
warning; files the daemon cannot read are skipped and reported (``problems``), and retried on the
next scan.
"""

from __future__ import annotations

import logging
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from driveserver.blocks.format import hash_file

from .checksum import content_checksum
from .ignore import TEMP_PREFIX, Ignore
from .names import not_utf8
from .planner import Node
from .state import SyncedEntry

log = logging.getLogger(__name__)

# Coarsest mtime granularity we may meet: FAT keeps 2 s; HFS+, ext3 and many network file
# systems 1 s; ext4 a kernel tick.
RACY_NS = 2_000_000_000


def stat_trusted(mtime_ns: int, verified_ns: int, now_ns: int | None) -> bool:
    """Can an unchanged mtime vouch for unchanged content read at ``verified_ns``? Only if no
    save since could have stamped that very mtime: it is older than the read by more than a
    tick. Otherwise a second save of the same size in the same tick ("racily clean", in git's
    words) would look unchanged: never sent, and overwritten by the next remote edit. Times are
    the folder's file system clock (``Engine._fs_clock``); a read stamped later than ``now_ns``
    (the clock went back since) vouches for nothing. A file dated in the future is hashed at
    every scan: a clock that reads behind the one stamping files would otherwise make every
    fresh save look like one."""
    return mtime_ns < verified_ns - RACY_NS and (now_ns is None or verified_ns <= now_ns + RACY_NS)


@dataclass(frozen=True, slots=True)
class LocalFile:
    """What the scan saw at a path: enough to detect a later change and to record it."""

    is_dir: bool
    size: int
    mtime_ns: int
    inode: int
    checksum: str | None
    blocks: tuple[str, ...]
    executable: bool = False  # the owner's exec bit (what is synced, as git and Syncthing do)

    def node(self) -> Node:
        return Node(self.is_dir, self.checksum, None, 0, self.inode, self.size,
                    self.executable)


@dataclass
class Scan:
    items: dict[str, LocalFile] = field(default_factory=dict)
    os_paths: dict[str, str] = field(default_factory=dict)  # tree path -> path relative to root
    problems: dict[str, str] = field(default_factory=dict)  # tree path -> why it was skipped
    temp_files: list[Path] = field(default_factory=list)  # our download temp files

    def tree(self) -> dict[str, Node]:
        return {p: f.node() for p, f in self.items.items()}


def hash_local(path: Path) -> tuple[str, tuple[str, ...]]:
    blocks = tuple(b.hash for b in hash_file(path))
    return content_checksum(blocks), blocks


def stat_file(path: Path, synced: SyncedEntry | None, now_ns: int | None) -> LocalFile:
    """Stat (and if needed hash) one file or folder. Raises OSError if it cannot be read."""
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        return LocalFile(True, 0, st.st_mtime_ns, st.st_ino, None, ())
    if synced is not None and not synced.is_dir and synced.size == st.st_size and \
            synced.mtime_ns == st.st_mtime_ns and synced.inode == st.st_ino and \
            stat_trusted(st.st_mtime_ns, synced.verified_ns, now_ns):
        return LocalFile(False, st.st_size, st.st_mtime_ns, st.st_ino, synced.checksum,
                         synced.blocks, is_executable(st.st_mode))
    checksum, blocks = hash_local(path)
    after = path.lstat()
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise BlockingIOError("the file changed while it was being read")
    return LocalFile(False, st.st_size, st.st_mtime_ns, st.st_ino, checksum, blocks,
                     is_executable(st.st_mode))


def is_executable(mode: int) -> bool:
    return bool(mode & stat.S_IXUSR)


def _inodes_under(entry: os.DirEntry[str]) -> list[tuple[int, bool]]:
    """(inode, is folder) of ``entry`` and, for a folder, of everything below it."""
    found: list[tuple[int, bool]] = []
    try:
        found.append((entry.inode(), entry.is_dir(follow_symlinks=False)))
        if found[0][1]:
            for top, dirs, files in os.walk(entry.path):
                for name in dirs + files:
                    st = os.lstat(os.path.join(top, name))
                    found.append((st.st_ino, stat.S_ISDIR(st.st_mode)))
    except OSError:
        pass  # what could be read is enough: this only protects synced items
    return found


def _protect_moved_into_bad_names(out: Scan, synced: dict[str, SyncedEntry],
                                  hidden: dict[tuple[int, bool], str]) -> None:
    """A synced item missing from the scan whose inode now lives under a name that is not UTF-8
    (renamed to one, or moved into a folder with one) is not deleted: it is a problem, left
    alone with everything below it until the name is fixed."""
    for path, entry in synced.items():
        where = hidden.get((entry.inode, entry.is_dir))
        if where is not None and path not in out.items:
            out.problems[path] = (f"now at {where}, under a name that is not valid UTF-8; "
                                  "rename it to sync it")


def scan(root: Path, synced: dict[str, SyncedEntry], ignore: Ignore, now_ns: int | None
         ) -> Scan:
    """Walk the folder (blocking: run it in a thread). ``now_ns``: when the scan began, on the
    folder's file system clock, if it could be read."""
    out = Scan()

    def walk(folder: Path, rel: str, os_rel: str) -> None:
        # rel: the tree path (NFC); os_rel: the same folder as spelled on disk
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            out.problems[rel or "/"] = "permission denied" if isinstance(exc, PermissionError) \
                else f"cannot list folder: {exc.strerror or exc}"
            # Left alone as a whole (see Engine.gather), not synced as an empty folder.
            out.items.pop(rel, None)
            out.os_paths.pop(rel, None)
            return
        seen_keys: dict[str, str] = {}  # case-folded name -> the name that has it
        for entry in sorted(entries, key=lambda e: e.name):
            name = unicodedata.normalize("NFC", entry.name)
            path = f"{rel}/{name}"
            if ignore(path, is_dir=entry.is_dir(follow_symlinks=False)):
                if name.startswith(TEMP_PREFIX):
                    out.temp_files.append(Path(entry.path))
                continue
            if not_utf8(name):  # no other system, nor the server, can hold such a name
                shown = os.fsencode(entry.name).decode("utf-8", "backslashreplace")
                out.problems[f"{rel}/{shown}"] = "the name is not valid UTF-8; rename it to sync it"
                # Synced items renamed to such a name, or moved below it, must not look
                # deleted: see _protect_moved_into_bad_names.
                for key in _inodes_under(entry):
                    hidden.setdefault(key, f"{rel}/{shown}")
                continue
            try:
                if entry.is_symlink():
                    if path not in out.problems:
                        log.warning("skipping symlink %s", path)
                    out.problems[path] = "symlink (not synced)"
                    continue
                if not entry.is_dir(follow_symlinks=False) and \
                        not entry.is_file(follow_symlinks=False):
                    continue  # sockets, fifos, devices
                key = name.casefold()
                if key in seen_keys:
                    # The server (like macOS and Windows) keeps one name per folder whatever
                    # the letter case or Unicode form: sync the first, report the other.
                    out.problems[path] = (f"differs from {seen_keys[key]!r} only in letter "
                                          "case or Unicode form; not synced")
                    continue
                seen_keys[key] = name
                item = stat_file(Path(entry.path), synced.get(path), now_ns)
            except PermissionError:
                out.problems[path] = "permission denied"
                continue
            except FileNotFoundError:
                continue  # deleted while we looked
            except OSError as exc:
                out.problems[path] = str(exc)
                continue
            out.items[path] = item
            out.os_paths[path] = f"{os_rel}/{entry.name}"
            if item.is_dir:
                walk(Path(entry.path), path, f"{os_rel}/{entry.name}")

    hidden: dict[tuple[int, bool], str] = {}  # (inode, is folder) under non-UTF-8 names
    walk(root, "", "")
    if hidden:
        _protect_moved_into_bad_names(out, synced, hidden)
    return out
