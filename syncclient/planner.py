"""The pure sync planner: three trees in, a list of operations (each with its reason) out.

The engine keeps three views of the folder, as Dropbox's Nucleus does:

* **local** — what the file system holds now (from a scan),
* **remote** — what the server holds now (from the change feed),
* **synced** — the last state both sides agreed on (the state database).

Comparing each side with *synced* tells an edit from a deletion and a local change from a remote
one, which two trees alone cannot. :func:`plan` does only that comparison: it does no I/O, so it
can be property-tested (``tests/test_sync_planner.py``), and :func:`apply_op` is the model of what
each operation does when it succeeds, used by that test and mirrored by the executor.

Trees map an absolute, NFC path (``/Work/a.txt``; the sync root itself is not in the tree) to a
:class:`Node`. Rules (``docs/sync-logic.md`` explains them at length):

* a change on one side only is copied to the other side (upload, download, mkdir, delete, move);
* the same change on both sides is just recorded;
* different changes on both sides keep both: the server's file keeps the name and the local one
  becomes a *conflicted copy*; an edit beats a delete; a folder is deleted only when nothing
  below it changed on the other side.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, get_args

__all__ = ["DOWN_KINDS", "OP_KINDS", "TO_SERVER", "Node", "Op", "OpKind", "Tree", "apply_op",
           "conflict_name", "plan", "same"]

# Every operation the planner can ask for; the executor has one handler per kind (its dispatch
# table is checked against this list), so a new kind cannot be planned without being carried out.
OpKind = Literal["upload", "mkdir_remote", "delete_remote", "move_remote", "download",
                 "mkdir_local", "delete_local", "move_local", "conflict", "record", "forget"]
OP_KINDS: tuple[OpKind, ...] = get_args(OpKind)
# The kinds that change the server, and those that change the folder (a conflict renames the
# local item and downloads the server's): what ``drive-sync status`` counts as up and down.
TO_SERVER: frozenset[OpKind] = frozenset({"upload", "mkdir_remote", "delete_remote",
                                          "move_remote"})
DOWN_KINDS: frozenset[OpKind] = frozenset({"download", "mkdir_local", "delete_local",
                                           "move_local", "conflict"})


@dataclass(frozen=True, slots=True)
class Node:
    """One item of a tree. Which fields are filled depends on the tree it is in.

    ``checksum`` is the server's file checksum (SHA-256 over the block hashes), the identity of
    a file's content on every side. ``file_id``/``version`` come from the server (remote and
    synced trees); ``inode`` from the file system (local and synced trees), for move detection.
    ``executable`` is the exec bit, part of what a file holds (a chmod +x is an edit);
    ``symlink`` says the file is a symbolic link whose content (``checksum``) is its target.
    """

    is_dir: bool
    checksum: str | None = None
    file_id: str | None = None
    version: int = 0
    inode: int | None = None
    size: int = 0
    executable: bool = False
    symlink: bool = False


Tree = Mapping[str, Node]


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. ``kind`` is one of:

    ``upload`` (``base`` is the synced node whose version the upload replaces, or None for a new
    file), ``mkdir_remote``, ``delete_remote``, ``move_remote`` (``src`` → ``path``),
    ``download``, ``mkdir_local``, ``delete_local``, ``move_local`` (``src`` → ``path``),
    ``conflict`` (the local item at ``path`` is renamed to ``copy`` and uploaded as a new file,
    then the remote item is downloaded to ``path``), ``record`` (both sides agree: remember it)
    and ``forget`` (gone on both sides: drop it from the synced tree).
    """

    kind: OpKind
    path: str
    reason: str
    src: str | None = None
    copy: str | None = None
    base: Node | None = None

    def describe(self) -> str:
        """One line for ``drive-sync run --dry-run``."""
        target = f"{self.src} -> {self.path}" if self.src else self.path
        if self.copy:
            target += f" (local copy -> {self.copy})"
        return f"{self.kind:<14} {target}  # {self.reason}"


def same(a: Node | None, b: Node | None) -> bool:
    """Do two nodes hold the same thing (both absent, both folders, or files of one content)?"""
    if a is None or b is None:
        return a is None and b is None
    return a.is_dir == b.is_dir and (a.is_dir or (a.checksum == b.checksum and
                                                  a.executable == b.executable and
                                                  a.symlink == b.symlink))


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder + "/")


def _under(tree: Tree, folder: str) -> Iterable[str]:
    return (p for p in tree if _inside(p, folder))


def conflict_name(path: str, device: str, day: str, taken: Iterable[str] = ()) -> str:
    """``name (DEVICE's conflicted copy YYYY-MM-DD).ext``, numbered if that name is taken.

    The extension stays last so the copy still opens with the right application; a leading dot
    (``.bashrc``) is part of the name, not an extension.
    """
    taken_keys = {p.casefold() for p in taken}
    folder, name = posixpath.split(path)
    stem, ext = posixpath.splitext(name)
    if not stem:
        stem, ext = name, ""
    n = 0
    while True:
        suffix = f" {n}" if n else ""
        candidate = posixpath.join(folder, f"{stem} ({device}'s conflicted copy {day}{suffix}){ext}")
        if candidate.casefold() not in taken_keys:
            return candidate
        n += 1


def _rebase(path: str, src: str, dst: str) -> str:
    return dst + path[len(src):]


class _Planner:
    def __init__(self, local: Tree, remote: Tree, synced: Tree, device: str, day: str) -> None:
        self.local, self.remote, self.synced = local, remote, synced
        self.device, self.day = device, day
        self.ops: list[Op] = []
        self.done: set[str] = set()      # paths already decided this round
        self.frozen: list[str] = []      # folders whose whole subtree waits for the next round
        self.taken: set[str] = set(local) | set(remote) | set(synced)

    def skip(self, path: str) -> bool:
        return path in self.done or any(path == f or _inside(path, f) for f in self.frozen)

    def emit(self, op: Op) -> None:
        self.ops.append(op)
        self.done.add(op.path)
        if op.src:
            self.done.add(op.src)

    # --- moves --------------------------------------------------------------------------------

    def remote_moves(self) -> None:
        """Items whose file id sits at another path on the server than in the synced tree."""
        synced_by_id = {n.file_id: p for p, n in self.synced.items() if n.file_id}
        for path in sorted(self.remote):
            r = self.remote[path]
            src = synced_by_id.get(r.file_id) if r.file_id else None
            if src is None or src == path or self.skip(path) or self.skip(src) \
                    or self.busy_below(src) or _inside(path, src):
                continue
            s, loc_src = self.synced[src], self.local.get(src)
            if src in self.remote and self.remote[src].file_id == r.file_id:
                continue
            if path in self.local or path in self.synced or loc_src is None:
                continue
            if s.is_dir != r.is_dir or loc_src.is_dir != s.is_dir:
                continue
            if not s.is_dir and not same(loc_src, s):
                continue  # edited here and moved there: handled as edit + delete/create
            if not self.is_folder(self.local, posixpath.dirname(path)):
                continue  # its new parent is not here yet: download + delete instead
            self.emit(Op("move_local", path, "moved on the server", src=src))
            if s.is_dir:
                self.frozen += [src, path]

    def local_moves(self) -> None:
        """New local items that are a synced item seen elsewhere (same inode, or same content)."""
        gone = {p: s for p, s in self.synced.items()
                if (p not in self.local or self.local[p].is_dir != s.is_dir) and not self.skip(p)
                and same(self.remote.get(p), s) and self.remote[p].file_id == s.file_id}
        if not gone:
            return
        by_inode = {s.inode: p for p, s in gone.items() if s.inode is not None}
        by_content: dict[str, list[str]] = {}
        for p, s in sorted(gone.items()):
            if not s.is_dir and s.checksum is not None:
                by_content.setdefault(s.checksum, []).append(p)
        for path in sorted(self.local):
            node = self.local[path]
            if path in self.synced or path in self.remote or self.skip(path):
                continue
            src = by_inode.get(node.inode) if node.inode is not None else None
            if src is not None and (self.synced[src].is_dir != node.is_dir or src in self.done):
                src = None
            if src is None and not node.is_dir and node.checksum in by_content:
                candidates = [p for p in by_content[node.checksum] if p not in self.done]
                src = candidates[0] if candidates else None
            if src is None or self.skip(src) or _inside(path, src) or self.busy_below(src):
                continue
            if not self.is_folder(self.remote, posixpath.dirname(path)):
                continue  # its new parent is not on the server yet: upload + delete instead
            if not node.is_dir and not same(node, self.synced[src]):
                continue  # same inode, new content: plain upload + delete is clearer
            self.emit(Op("move_remote", path, "moved in the folder", src=src))
            if node.is_dir:
                self.frozen += [src, path]

    @staticmethod
    def is_folder(tree: Tree, path: str) -> bool:
        return path == "/" or (path in tree and tree[path].is_dir)

    def busy_below(self, folder: str) -> bool:
        """Is something below ``folder`` already moving this round? Then removing the folder waits
        for the next round, so that no order of execution can delete what is being moved."""
        return any(_inside(p, folder) for p in self.done)

    # --- the per-path rules -------------------------------------------------------------------

    def subtree_unchanged(self, side: Tree, folder: str) -> bool:
        """True if nothing below ``folder`` on ``side`` differs from the synced tree."""
        paths = set(_under(side, folder)) | set(_under(self.synced, folder))
        return all(same(side.get(p), self.synced.get(p)) for p in paths)

    def decide(self, path: str) -> None:
        loc, r, s = self.local.get(path), self.remote.get(path), self.synced.get(path)
        if any(n is not None and n.is_dir for n in (loc, r, s)) and self.busy_below(path):
            return  # something inside moves this round: decide about the folder next round
        local_changed, remote_changed = not same(loc, s), not same(r, s)
        if not local_changed and not remote_changed:
            if r is not None and s is not None and (r.file_id, r.version) != (s.file_id, s.version):
                self.emit(Op("record", path, "new server version with the same content"))
            return
        if local_changed and not remote_changed:
            self.local_only(path, loc, s)
        elif remote_changed and not local_changed:
            self.remote_only(path, r, s)
        else:
            self.both(path, loc, r, s)

    def local_only(self, path: str, loc: Node | None, s: Node | None) -> None:
        if loc is None:
            assert s is not None
            if s.is_dir and self.busy_below(path):
                return
            if not s.is_dir or self.subtree_unchanged(self.remote, path):
                self.emit(Op("delete_remote", path, "deleted in the folder"))
                if s.is_dir:
                    self.frozen.append(path)
            else:
                self.emit(Op("mkdir_local", path, "deleted here but changed on the server below"))
        elif s is None:
            self.emit(Op("mkdir_remote" if loc.is_dir else "upload", path, "new in the folder"))
        elif loc.is_dir != s.is_dir:
            self.retype(path, loc, "replaced in the folder by a " + ("folder" if loc.is_dir else "file"))
        else:
            self.emit(Op("upload", path, "edited in the folder", base=s))

    def remote_only(self, path: str, r: Node | None, s: Node | None) -> None:
        if r is None:
            assert s is not None
            if s.is_dir and self.busy_below(path):
                return
            if not s.is_dir or self.subtree_unchanged(self.local, path):
                self.emit(Op("delete_local", path, "deleted on the server"))
                if s.is_dir:
                    self.frozen.append(path)
            else:
                self.emit(Op("mkdir_remote", path, "deleted on the server but changed here below"))
        elif s is None or r.is_dir != s.is_dir:
            if s is not None and not self.subtree_unchanged(self.local, path):
                self.conflict(path, "replaced on the server, changed here")
                return
            if s is not None:
                self.emit(Op("delete_local", path, "replaced on the server by another type"))
                self.frozen.append(path)
                return
            self.emit(Op("mkdir_local" if r.is_dir else "download", path, "new on the server"))
        else:
            self.emit(Op("download", path, "edited on the server"))

    def retype(self, path: str, loc: Node, reason: str) -> None:
        # A file became a folder (or the reverse) here: remove the old remote item if nothing
        # below it changed there, and the new one is created next round; else keep both.
        if self.subtree_unchanged(self.remote, path):
            self.emit(Op("delete_remote", path, reason))
            self.frozen.append(path)
        else:
            self.conflict(path, reason + ", changed on the server")

    def both(self, path: str, loc: Node | None, r: Node | None, s: Node | None) -> None:
        if same(loc, r):
            if loc is None:
                self.emit(Op("forget", path, "deleted on both sides"))
            else:
                self.emit(Op("record", path, "same change on both sides"))
        elif loc is None:
            assert r is not None
            self.emit(Op("mkdir_local" if r.is_dir else "download", path,
                         "deleted here, changed on the server: the change wins"))
        elif r is None:
            self.emit(Op("mkdir_remote" if loc.is_dir else "upload", path,
                         "deleted on the server, changed here: the change wins"))
        else:
            self.conflict(path, "changed on both sides")

    def conflict(self, path: str, reason: str) -> None:
        copy = conflict_name(path, self.device, self.day, self.taken)
        self.taken.add(copy)
        self.emit(Op("conflict", path, reason, copy=copy))
        self.frozen.append(path)

    def run(self) -> list[Op]:
        self.remote_moves()
        self.local_moves()
        for path in sorted(set(self.local) | set(self.remote) | set(self.synced)):
            if not self.skip(path):
                self.decide(path)
        return self.ops


def plan(local: Tree, remote: Tree, synced: Tree, device: str = "device",
         day: str = "1970-01-01") -> list[Op]:
    """The operations that bring the three trees together, parents before children.

    Moves come first; a moved or deleted folder's subtree is left for the next round, when the
    synced tree already reflects the move. Executing the plan and planning again converges:
    every round removes differences and creates none (``tests/test_sync_planner.py``).
    """
    return _Planner(local, remote, synced, device, day).run()


# --- the model of an operation's effect -------------------------------------------------------

def _move(tree: dict[str, Node], src: str, dst: str) -> None:
    for p in [p for p in tree if p == src or _inside(p, src)]:
        tree[_rebase(p, src, dst)] = tree.pop(p)


def _drop(tree: dict[str, Node], path: str) -> None:
    for p in [p for p in tree if p == path or _inside(p, path)]:
        del tree[p]


def _merged(local: Node, remote: Node) -> Node:
    return replace(remote, inode=local.inode)


def apply_op(op: Op, local: dict[str, Node], remote: dict[str, Node], synced: dict[str, Node],
             new_id: str) -> None:
    """Apply ``op`` to the three trees as if it succeeded (the executor's contract, as a model).

    ``new_id`` is the file id the server would give a newly created item.
    """
    p = op.path
    if op.kind == "upload":
        old = remote.get(p)
        remote[p] = replace(local[p], file_id=old.file_id if old and not old.is_dir else new_id,
                            version=(old.version if old else 0) + 1, inode=None)
        synced[p] = _merged(local[p], remote[p])
    elif op.kind == "mkdir_remote":
        remote[p] = Node(True, file_id=new_id, version=1)
        synced[p] = _merged(local[p], remote[p]) if p in local else remote[p]
    elif op.kind == "delete_remote":
        _drop(remote, p)
        _drop(synced, p)
    elif op.kind == "move_remote":
        assert op.src is not None
        _move(remote, op.src, p)
        _move(synced, op.src, p)
        synced[p] = _merged(local[p], remote[p])
    elif op.kind in ("download", "mkdir_local"):
        local[p] = replace(remote[p], inode=None)
        synced[p] = remote[p]
    elif op.kind == "delete_local":
        _drop(local, p)
        _drop(synced, p)
    elif op.kind == "move_local":
        assert op.src is not None
        _move(local, op.src, p)
        _move(synced, op.src, p)
    elif op.kind == "conflict":
        assert op.copy is not None
        _move(local, p, op.copy)
        _drop(synced, p)
        if remote[p].is_dir:
            local[p] = Node(True)
        else:
            local[p] = replace(remote[p], inode=None)
            synced[p] = remote[p]
    elif op.kind == "record":
        synced[p] = _merged(local[p], remote[p])
    elif op.kind == "forget":
        synced.pop(p, None)
    else:
        raise ValueError(f"unknown operation {op.kind!r}")
