"""File-system safety helpers of the executor and the scan: where a tree path is on disk, is
an item still what the scan saw, what a folder holds that is not synced, how a folder deleted on
the server is removed without losing what was never sent, the mode a download may take.

All of them block (they read the disk): callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path

from .ignore import Ignore, is_litter
from .links import link_content, symlink_stays_inside
from .localtree import LocalFile, Scan, hash_local, rename_no_replace, stat_trusted


def os_path(root: Path, path: str, local: Scan | None = None) -> Path:
    """Where ``path`` is on disk: as the scan found it spelled, or, for a path it did not
    see (about to be created), below the nearest folder it saw, as that one is spelled (a
    folder named in NFD on disk must not get an NFC twin beside it)."""
    if local is None:
        return root / path.lstrip("/")
    rel = local.os_paths.get(path)
    if rel is None:
        head, tail = path, ""
        while head and head not in local.os_paths:
            head, _, name = head.rpartition("/")
            tail = f"/{name}{tail}"
        rel = (local.os_paths[head] if head else "") + tail
    return root / rel.lstrip("/")


def inside_root_unlinked(root: Path, target: Path, link_at_end: bool = False) -> bool:
    """Is ``target`` reached from ``root`` without any symlink on the way (or at the end,
    unless ``link_at_end``: a synced symlink, replaced or removed itself, never followed)?"""
    if link_at_end:
        return target.is_symlink() and inside_root_unlinked(root, target.parent) \
            if target.parent != root else target.is_symlink()
    rel = os.path.relpath(target, root)
    return os.path.realpath(target) == os.path.join(os.path.realpath(root), rel)


def still_as_scanned(root: Path, target: Path, seen: LocalFile | None,
                     now: int | None) -> bool:
    """Is the item at ``target`` still ``seen``, what the scan saw (absent if it saw nothing)?
    Checked just before a download replaces it or a deletion removes it. A file modified within
    a tick of this round (``now``: when its scan began) could be saved again, same size, without
    its stat showing it: that one is hashed again."""
    try:
        st = target.lstat()
    except FileNotFoundError:
        return seen is None
    if seen is None:
        return False
    # A folder on the way, renamed away since and replaced by a symlink to it, would make
    # us delete or overwrite outside the sync folder.
    if not inside_root_unlinked(root, target, seen.symlink):
        return False
    if seen.is_dir:
        return stat.S_ISDIR(st.st_mode)
    if (st.st_size, st.st_mtime_ns, st.st_ino) != (seen.size, seen.mtime_ns, seen.inode):
        return False
    if now is not None and stat_trusted(seen.mtime_ns, now, now):
        return True
    checksum, _ = hash_local(target, seen.checksum)
    return checksum == seen.checksum


def entries_below(folder: Path, path: str, ignore: Ignore
                  ) -> Iterator[tuple[str, bool, bool]]:
    """(name, is a folder, is ignored) of everything below ``folder``, not descending into
    what is ignored nor into links. Raises OSError if a folder cannot be listed."""
    for e in list(os.scandir(folder)):
        p = f"{path}/{unicodedata.normalize('NFC', e.name)}"
        is_dir = e.is_dir(follow_symlinks=False)
        ignored = ignore(p, is_dir=is_dir)
        yield e.name, is_dir, ignored
        if is_dir and not ignored:
            yield from entries_below(Path(e.path), p, ignore)


def only_ignored(folder: Path, path: str, ignore: Ignore) -> bool:
    """Does ``folder`` hold nothing but ignored items (and folders of them), at any depth?"""
    try:
        return all(ignored or is_dir for _, is_dir, ignored in
                   entries_below(folder, path, ignore))
    except OSError:
        return False


def holds_ignored(folder: Path, path: str, ignore: Ignore) -> bool:
    """Is something ignored (not litter) at any depth below ``folder``?"""
    try:
        return any(ignored and not is_litter(name) for name, _, ignored in
                   entries_below(folder, path, ignore))
    except OSError:
        return False


def ignored_only(root: Path, local: Scan, synced: Mapping[str, object],
                 remote: Mapping[str, object], ignore: Ignore) -> list[str]:
    """New folders here, on neither the server nor the synced tree, that hold no file the
    scan syncs but something ignored: left alone, not created on the server. Such a folder is
    what stays of a folder deleted elsewhere that held ignored files (``remove_synced_part``);
    creating it again would undo that deletion everywhere."""
    with_files: set[str] = set()
    for p, item in local.items.items():
        if not item.is_dir:
            while p:
                p = p.rpartition("/")[0]
                with_files.add(p)
    out: list[str] = []
    for p, item in local.items.items():
        if not item.is_dir or p in with_files or p in synced or p in remote:
            continue
        if any(p.startswith(q + "/") for q in out):
            continue
        if holds_ignored(os_path(root, p, local), p, ignore):
            out.append(p)
    return out


def changed_below(folder: Path, path: str, local: Scan, ignore: Ignore, now: int | None,
                  sync_symlinks: bool) -> str | None:
    """Before a folder deleted on the server is removed here: the first item below it that is
    not as the scan saw it, if any. A round may run for minutes after its scan; a file saved or
    created there meanwhile must not go with the folder. The next round plans again from what is
    there now. Ignored items, symlinks (removed, never followed), fifos and sockets go with the
    folder; anything else the scan did not sync (a file being saved while it was read, a name
    that is not UTF-8, a folder it could not list) keeps the folder, reported, rather than be
    deleted unseen."""
    stack = [(folder, path)]
    while stack:
        os_dir, tree_dir = stack.pop()
        try:
            entries = list(os.scandir(os_dir))
        except FileNotFoundError:
            continue
        for e in entries:
            p = f"{tree_dir}/{unicodedata.normalize('NFC', e.name)}"
            if ignore(p, is_dir=e.is_dir(follow_symlinks=False)):
                continue  # not synced: see remove_synced_part
            if not (e.is_dir(follow_symlinks=False) or e.is_symlink() or
                    e.is_file(follow_symlinks=False)):
                continue  # sockets, fifos, devices: never synced (as the scan skips them)
            seen = local.items.get(p)
            if seen is None:
                if e.is_symlink() and not (sync_symlinks and
                                           symlink_stays_inside(p, os.readlink(e.path))):
                    continue  # never synced; it is removed, not what it points at
                if e.is_dir(follow_symlinks=False) and only_ignored(Path(e.path), p, ignore):
                    continue  # holds only ignored items, which stay (remove_synced_part)
                return p  # created since, or something the scan could not sync: kept
            st = e.stat(follow_symlinks=False)
            if seen.is_dir:
                if not stat.S_ISDIR(st.st_mode) or st.st_ino != seen.inode:
                    return p
                stack.append((Path(e.path), p))
                continue
            if stat.S_ISLNK(st.st_mode):
                if not (seen.symlink and link_content(Path(e.path))[0] == seen.checksum):
                    return p  # a synced link changed since: the folder is kept
                continue
            if not stat.S_ISREG(st.st_mode):
                return p
            same_stat = (st.st_size, st.st_mtime_ns, st.st_ino) == \
                (seen.size, seen.mtime_ns, seen.inode)
            if same_stat and now is not None and stat_trusted(seen.mtime_ns, now, now):
                continue
            # Touched, or within a tick of this round: the content decides.
            if hash_local(Path(e.path), seen.checksum)[0] != seen.checksum:
                return p
    return None


def remove_synced_part(folder: Path, path: str, ignore: Ignore) -> None:
    """Remove a folder deleted on the server (checked unchanged by ``changed_below``), except
    what is ignored: that was never sent, so it is in no trash nor history on the server, and
    it stays here with the folders that hold it (which the next rounds leave alone, see
    ``ignored_only``). Only litter (.DS_Store, our temp files) goes with the folder; an editor's
    swap file may hold unsaved work. Links are removed, never followed."""
    def keep(os_dir: Path, tree_dir: str) -> bool:
        kept = False
        for e in list(os.scandir(os_dir)):
            p = f"{tree_dir}/{unicodedata.normalize('NFC', e.name)}"
            is_dir = e.is_dir(follow_symlinks=False)
            if ignore(p, is_dir=is_dir) and not is_litter(e.name):
                kept = True
            elif is_dir:
                kept = keep(Path(e.path), p) or kept
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
        if not kept:
            try:
                os.rmdir(os_dir)
            except FileNotFoundError:
                pass
            except OSError:  # something arrived meanwhile: it stays, for the next round
                return True
        return kept

    keep(folder, path)


def take_mode(tmp: Path, target: Path, executable: bool, was: int | None = None) -> None:
    """Give a downloaded file its mode before it is renamed into place. A download never widens
    who may read a file: a replaced file keeps its mode (a 0600 tax return stays 0600), a new
    one has the umask's (as the temp file was created), and one that takes the name of a file
    just renamed away (a conflict) has that file's mode, ``was``. Only the exec bit comes from
    the server: set for whoever may read, or cleared for all."""
    try:
        st = target.lstat()
        mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        mode = None
    if mode is None:
        mode = was if was is not None else stat.S_IMODE(tmp.stat().st_mode)
    mode = mode | (mode & 0o444) >> 2 if executable else mode & ~0o111
    os.chmod(tmp, mode)


def rename_into(src: Path, dst: Path) -> None:
    """Rename without ever replacing what is at ``dst`` (a user's file, or a dangling link,
    which ``exists()`` would not see): atomically where the system can; parents are made."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    rename_no_replace(src, dst)


def read_links_leaving(root: Path, links: list[str], src: str, dst: str, on_disk_at: str,
                       local: Scan) -> list[tuple[str, str]]:
    """Of the synced symlinks ``links`` at or below ``src``, those whose target would lead out
    of the folder once at or below ``dst``: (path under ``src``, target). Their targets are read
    where they are on disk now, under ``on_disk_at``, as the scan found them spelled. Nothing
    there, or no longer a link: nothing to carry; a link that cannot be read counts as leaving."""
    out = []
    for p in links:
        try:
            target = os.readlink(os_path(root, on_disk_at + p[len(src):], local))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a link (any more)
                continue
            out.append((p, "(unreadable)"))
            continue
        if not symlink_stays_inside(dst + p[len(src):], target):
            out.append((p, target))
    return out
