"""The local tree: a scan of the folder, hashing only what changed since the synced tree.

A file whose size, mtime and inode equal its synced record keeps the synced checksum and block
list (the same shortcut as Dropbox and rsync), if that mtime can vouch for it
(:func:`stat_trusted`); anything else is hashed with the shared block module, so the client's
hashes are the server's. Symlinks are skipped with a
warning; files the daemon cannot read are skipped and reported (``problems``), and retried on the
next scan.

Two items in one folder whose names the server takes for one (it keeps one item per name in a
folder, whatever the letter case or Unicode form: ``Index.html`` beside ``index.html``, or one name
in NFC beside the same in NFD) are both kept, as Dropbox does: the scan syncs one under its name
and leaves the other out (``twins``), which the engine then renames on disk with
:func:`rename_twins`, to ``Index (Case Conflict).html`` or ``café (Unicode Encoding Conflict)``.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import stat
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from driveproto.chunking import file_identity
from driveproto.names import MAX_DEPTH, MAX_NAME_BYTES, name_key, refused_characters

from .ignore import TEMP_PREFIX, Ignore
from .links import link_content, symlink_stays_inside
from .names import not_utf8
from .planner import Node
from .state import SyncedEntry

log = logging.getLogger(__name__)

# Coarsest mtime granularity we may meet: FAT keeps 2 s; HFS+, ext3 and many network file
# systems 1 s; ext4 a kernel tick.
RACY_NS = 2_000_000_000

CASE_CONFLICT = "Case Conflict"  # the labels Dropbox gives such a renamed item
UNICODE_CONFLICT = "Unicode Encoding Conflict"
# How every notice about a renamed twin ends (the engine drops the notice once the item is gone).
TWIN_NOTICE = (", and the server keeps one item per name in a folder, whatever the letter case "
               "or Unicode form")


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
    symlink: bool = False  # a symbolic link; its content is its target (see links.py)

    def node(self) -> Node:
        return Node(self.is_dir, self.checksum, None, 0, self.inode, self.size,
                    self.executable, self.symlink)


@dataclass(frozen=True, slots=True)
class NameTwin:
    """An item the scan left out because the server would take its name for another one's in
    the same folder (the one ``kept_os_rel`` names, which syncs under that name)."""

    path: str  # its tree path (NFC); the kept one's too if they differ in Unicode form only
    os_rel: str  # as spelled on disk, relative to the root
    kept_os_rel: str
    inode: int
    is_dir: bool
    label: str  # CASE_CONFLICT or UNICODE_CONFLICT


@dataclass(frozen=True, slots=True)
class RenamedTwin:
    path: str  # the new tree path
    os_rel: str  # the new name as on disk, relative to the root
    old_os_rel: str
    notice: str  # for ``drive-sync status``; ends with TWIN_NOTICE


@dataclass
class Scan:
    items: dict[str, LocalFile] = field(default_factory=dict)
    os_paths: dict[str, str] = field(default_factory=dict)  # tree path -> path relative to root
    problems: dict[str, str] = field(default_factory=dict)  # tree path -> why it was skipped
    temp_files: list[Path] = field(default_factory=list)  # our download temp files
    twins: list[NameTwin] = field(default_factory=list)  # left out, to be renamed

    def tree(self) -> dict[str, Node]:
        return {p: f.node() for p, f in self.items.items()}


def hash_local(path: Path, like: str | None = None) -> tuple[str, tuple[str, ...]]:
    """A file's checksum and block hashes; a symlink's are those of its target's text.
    ``like``: the checksum it is compared with (``driveproto.chunking.file_identity``)."""
    if path.is_symlink():
        checksum, link_blocks, _ = link_content(path)
        return checksum, link_blocks
    return file_identity(path, like)


def stat_file(path: Path, synced: SyncedEntry | None, now_ns: int | None) -> LocalFile:
    """Stat (and if needed hash) one file or folder. Raises OSError if it cannot be read."""
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        return LocalFile(True, 0, st.st_mtime_ns, st.st_ino, None, ())
    if stat.S_ISLNK(st.st_mode):  # reading the target is as cheap as trusting a record
        checksum, link_blocks, size = link_content(path)
        return LocalFile(False, size, st.st_mtime_ns, st.st_ino, checksum, link_blocks,
                         symlink=True)
    if synced is not None and not synced.is_dir and synced.size == st.st_size and \
            synced.mtime_ns == st.st_mtime_ns and synced.inode == st.st_ino and \
            stat_trusted(st.st_mtime_ns, synced.verified_ns, now_ns):
        return LocalFile(False, st.st_size, st.st_mtime_ns, st.st_ino, synced.checksum,
                         synced.blocks, is_executable(st.st_mode))
    checksum, blocks = hash_local(path, synced.checksum if synced is not None else None)
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


def _protect_moved_out_of_sight(out: Scan, synced: dict[str, SyncedEntry],
                                hidden: dict[tuple[int, bool], str]) -> None:
    """A synced item missing from the scan whose inode now lives where the scan does not look
    (renamed to a name that is not UTF-8 or to a twin's, or moved into a folder with one) is not
    deleted: it is a problem (``hidden`` says why), left alone with everything below it until
    the name is fixed."""
    for path, entry in synced.items():
        if entry.inode is None:  # its inode is not known (not recorded yet): nothing to match
            continue
        why = hidden.get((entry.inode, entry.is_dir))
        if why is not None and path not in out.items:
            out.problems.setdefault(path, why)


def _kept_twins(candidates: list[tuple[os.DirEntry[str], str]], rel: str,
                synced: dict[str, SyncedEntry]) -> dict[str, os.DirEntry[str]]:
    """Of the items of one folder whose names the server takes for one, which keeps its name:
    the synced one (at its synced path, then with its inode too), else the first in name order;
    never the synced one is renamed. Maps each other one's name (as on disk) to the kept one."""
    groups: dict[str, list[tuple[os.DirEntry[str], str]]] = {}
    for entry, name in candidates:
        groups.setdefault(name_key(name), []).append((entry, name))

    def rank(candidate: tuple[os.DirEntry[str], str]) -> tuple[bool, bool, str]:
        entry, name = candidate
        known = synced.get(f"{rel}/{name}")
        return known is None, known is None or known.inode != entry.inode(), entry.name

    twin_of: dict[str, os.DirEntry[str]] = {}
    for group in groups.values():
        if len(group) > 1:
            (kept, _), *others = sorted(group, key=rank)
            twin_of.update((entry.name, kept) for entry, _ in others)
    return twin_of


def _unreadable(exc: OSError) -> str | None:
    """Why an item could not be read, or None if it is gone (deleted while we looked)."""
    if isinstance(exc, FileNotFoundError):
        return None
    return "permission denied" if isinstance(exc, PermissionError) else str(exc)


def scan(root: Path, synced: dict[str, SyncedEntry], ignore: Ignore, now_ns: int | None,
         symlinks: bool = True) -> Scan:
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
        candidates: list[tuple[os.DirEntry[str], str]] = []  # what may sync: (entry, NFC name)
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
                # deleted: see _protect_moved_out_of_sight.
                for key in _inodes_under(entry):
                    hidden.setdefault(key, f"now at {rel}/{shown}, under a name that is not "
                                           "valid UTF-8; rename it to sync it")
                continue
            if path.count("/") > MAX_DEPTH:  # the server keeps no deeper path: said, once
                out.problems[path] = (f"more than {MAX_DEPTH} folders deep, deeper than the "
                                      "server keeps; move it higher up to sync it")
                for key in _inodes_under(entry):
                    hidden.setdefault(key, f"now at {path}, more than {MAX_DEPTH} folders deep;"
                                           " move it higher up to sync it")
                continue
            refused = refused_characters(name)
            if refused is not None:  # the server would refuse it: said, not retried for ever
                out.problems[path] = f"the name has {refused}; rename it to sync it"
                for key in _inodes_under(entry):
                    hidden.setdefault(key, f"now at {path}, under a name the server refuses "
                                           f"({refused}); rename it to sync it")
                continue
            try:
                if entry.is_symlink():
                    # Synced as a link (never followed) if it means the same everywhere;
                    # the engine reports the others, once ("symlink ..." is not an error).
                    target = os.readlink(entry.path)
                    if not symlinks:
                        out.problems[path] = "symlink (not synced: sync_symlinks is off)"
                        continue
                    if not symlink_stays_inside(path, target):
                        out.problems[path] = (f"symlink to {target!r}, which is outside the "
                                              "folder (not synced)")
                        continue
                elif not entry.is_dir(follow_symlinks=False) and \
                        not entry.is_file(follow_symlinks=False):
                    continue  # sockets, fifos, devices
            except OSError as exc:
                if (why := _unreadable(exc)) is not None:
                    out.problems[path] = why
                continue
            candidates.append((entry, name))
        # Names the server takes for one (see the module's docstring): one is synced, the others
        # wait to be renamed. Twins in Unicode form only have the kept one's tree path: that
        # path is left alone on both sides until then.
        twin_of = _kept_twins(candidates, rel, synced)
        shared = {name for entry, name in candidates if entry.name in twin_of and
                  unicodedata.normalize("NFC", twin_of[entry.name].name) == name}
        for entry, name in candidates:
            path = f"{rel}/{name}"
            kept = twin_of.get(entry.name)
            if kept is not None or name in shared:
                if kept is not None:
                    same = name in shared
                    out.twins.append(NameTwin(
                        path, f"{os_rel}/{entry.name}", f"{os_rel}/{kept.name}", entry.inode(),
                        entry.is_dir(follow_symlinks=False),
                        UNICODE_CONFLICT if same else CASE_CONFLICT))
                    out.problems[path] = (
                        ("two items have this name, written in different Unicode forms"
                         if same else f"differs from {kept.name!r} only in letter case") +
                        "; one is renamed to keep both at the next sync")
                for key in _inodes_under(entry):
                    hidden.setdefault(key, f"now at {path}, whose name clashes with another "
                                           "one's; it is renamed at the next sync")
                continue
            try:
                item = stat_file(Path(entry.path), synced.get(path), now_ns)
            except OSError as exc:
                if (why := _unreadable(exc)) is not None:
                    out.problems[path] = why
                continue
            out.items[path] = item
            out.os_paths[path] = f"{os_rel}/{entry.name}"
            if item.is_dir:
                walk(Path(entry.path), path, f"{os_rel}/{entry.name}")

    # (inode, is folder) of what the scan does not sync -> why a synced item there is kept
    hidden: dict[tuple[int, bool], str] = {}
    walk(root, "", "")
    if hidden:
        _protect_moved_out_of_sight(out, synced, hidden)
    return out


def rename_twins(root: Path, twins: Iterable[NameTwin]) -> list[RenamedTwin]:
    """Keep both: rename each twin on disk to a name of its own (blocking). ``Index.html``
    becomes ``Index (Case Conflict).html``, then ``(Case Conflict 2)`` and on if that is taken
    in any case or form. Only a twin still there as the scan saw it (the same file or folder:
    its content may have changed since, which a rename keeps), beside its kept twin, and never
    onto anything (:func:`rename_no_replace`); any other waits for the next scan."""
    done: list[RenamedTwin] = []
    for twin in twins:
        src = root / twin.os_rel.lstrip("/")
        try:
            st = src.lstat()
            (root / twin.kept_os_rel.lstrip("/")).lstat()  # still there (or nothing to resolve)
            if (st.st_ino, stat.S_ISDIR(st.st_mode)) != (twin.inode, twin.is_dir):
                continue
            taken = {name_key(n) for n in os.listdir(src.parent)}
            new = _free_name(src.name, twin.label, twin.is_dir, taken)
            rename_no_replace(src, src.with_name(new))
        except FileNotFoundError:
            continue  # one of them is gone: nothing to resolve, or a new scan to see
        except FileExistsError:
            continue  # the name was just taken: the next scan finds another
        except OSError as exc:
            log.warning("cannot rename %s to keep it beside %s: %s", twin.os_rel,
                        twin.kept_os_rel, exc)
            continue
        folder, _, old = twin.path.rpartition("/")
        kept = twin.kept_os_rel.rpartition("/")[2]
        why = (f"{kept!r} is in the same folder" if twin.label == CASE_CONFLICT else
               "the same name in another Unicode form is in the same folder")
        renamed = RenamedTwin(f"{folder}/{unicodedata.normalize('NFC', new)}",
                              f"{twin.os_rel.rpartition('/')[0]}/{new}", twin.os_rel,
                              f"renamed from {old!r} to keep both: {why}{TWIN_NOTICE}")
        log.warning("%s: renamed to %r to keep it beside %r (the server takes their names for "
                    "one)", twin.path, new, kept)
        done.append(renamed)
    return done


def _free_name(name: str, label: str, is_dir: bool, taken: set[str]) -> str:
    """``stem (label).ext`` (a folder has no extension), numbered from 2 while its key is in
    ``taken``; the stem is cut if the name would not fit the server's limit."""
    stem, ext = (name, "") if is_dir else os.path.splitext(name)
    n = 1
    while True:
        tail = f" ({label}{f' {n}' if n > 1 else ''}){ext}"
        cut = stem
        while cut and len((cut + tail).encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            cut = cut[:-1]
        if name_key(cut + tail) not in taken:
            return cut + tail
        n += 1


AT_FDCWD = -100
RENAME_NOREPLACE = 1


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` and never replace what is there (``FileExistsError``):
    atomically where the system can (Linux's ``renameat2`` with ``RENAME_NOREPLACE``), else
    after a check."""
    call = _renameat2()
    if call is not None:
        if call(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # else: the file system cannot, fall back
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)
