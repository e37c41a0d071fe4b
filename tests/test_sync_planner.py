"""Property tests of the pure planner, in the manner of Dropbox's CanopyCheck.

A random synced tree, random perturbations of the local and the remote side, then rounds of
plan → apply every operation (in a random order) as if it succeeded, until the plan is empty.
Invariants: it ends within a bounded number of rounds, the three trees end equal, and every
content either side created or edited is still somewhere in the final tree.
"""

from __future__ import annotations

import itertools
import posixpath
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncclient.planner import Node, apply_op, conflict_name, plan, same

NAMES = ["a", "b", "c.txt"]
MAX_ROUNDS = 12


def parent(path: str) -> str:
    return posixpath.dirname(path)


def candidates(tree: dict[str, Node]) -> list[str]:
    """Free paths whose parent is a folder in ``tree``."""
    folders = ["/"] + [p for p, n in tree.items() if n.is_dir and p.count("/") < 3]
    out = []
    for f in folders:
        for name in NAMES:
            p = posixpath.join(f, name)
            if p not in tree:
                out.append(p)
    return sorted(out)


class World:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.contents = itertools.count(1)

    def content(self) -> str:
        return f"c{next(self.contents)}"


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict, dict, dict, set[str]]:
    world = World()
    synced: dict[str, Node] = {}
    for _ in range(draw(st.integers(0, 8))):
        free = candidates(synced)
        if not free:
            break
        p = draw(st.sampled_from(free))
        if draw(st.booleans()):
            synced[p] = Node(True, file_id=f"id{next(world.ids)}", version=1,
                             inode=next(world.ids))
        else:
            synced[p] = Node(False, checksum=world.content(), file_id=f"id{next(world.ids)}",
                             version=1, inode=next(world.ids))
    local = {p: Node(n.is_dir, n.checksum, inode=n.inode) for p, n in synced.items()}
    remote = {p: Node(n.is_dir, n.checksum, n.file_id, n.version) for p, n in synced.items()}

    def perturb(tree: dict[str, Node], is_local: bool) -> None:
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["create", "mkdir", "edit", "chmod", "link", "restore",
                                         "delete", "move"]))
            files = sorted(p for p, n in tree.items() if not n.is_dir)
            items = sorted(tree)
            if kind in ("create", "mkdir") and candidates(tree):
                p = draw(st.sampled_from(candidates(tree)))
                ident = next(world.ids)
                if kind == "mkdir":
                    tree[p] = Node(True, inode=ident) if is_local else \
                        Node(True, file_id=f"id{ident}", version=1)
                else:
                    c = world.content()
                    tree[p] = Node(False, c, inode=ident) if is_local else \
                        Node(False, c, f"id{ident}", 1)
            elif kind == "edit" and files:
                p = draw(st.sampled_from(files))
                c = world.content()
                n = tree[p]
                tree[p] = Node(False, c, n.file_id, n.version + 1 if n.file_id else 0, n.inode)
            elif kind == "chmod" and files:  # the exec bit flipped, the content as it was
                p = draw(st.sampled_from(files))
                n = tree[p]
                tree[p] = replace(n, executable=not n.executable,
                                  version=n.version + 1 if n.file_id else 0)
            elif kind == "link" and files:  # a file replaced by a symlink of the same text
                p = draw(st.sampled_from(files))
                n = tree[p]
                tree[p] = replace(n, symlink=not n.symlink,
                                  version=n.version + 1 if n.file_id else 0)
            elif kind == "restore" and files and not is_local:  # an older content, back
                p = draw(st.sampled_from(files))
                n = tree[p]
                old = synced.get(p)
                if old is not None and not old.is_dir and n.file_id == old.file_id:
                    tree[p] = replace(old, version=n.version + 1, inode=None)
            elif kind == "delete" and items:
                p = draw(st.sampled_from(items))
                for q in [q for q in tree if q == p or q.startswith(p + "/")]:
                    del tree[q]
            elif kind == "move" and items:
                src = draw(st.sampled_from(items))
                free = [d for d in candidates(tree) if not (d + "/").startswith(src + "/")]
                if not free:
                    continue
                dst = draw(st.sampled_from(free))
                for q in sorted(q for q in tree if q == src or q.startswith(src + "/")):
                    tree[dst + q[len(src):]] = tree.pop(q)

    perturb(local, True)
    perturb(remote, False)
    # What each side holds after its changes (an edit overwritten by a later edit on the same
    # side before any sync was never seen by the engine).
    made = (contents(local) | contents(remote)) - contents(synced)
    return local, remote, synced, made


def show(local: dict, remote: dict, synced: dict) -> str:
    def one(t: dict) -> str:
        return " ".join(f"{p}{'/' if n.is_dir else '=' + str(n.checksum)}"
                        f"[{n.file_id or ''}{n.inode or ''}]" for p, n in sorted(t.items()))
    return f"L: {one(local)}\nR: {one(remote)}\nS: {one(synced)}"


def contents(tree: dict[str, Node]) -> set[str]:
    return {n.checksum for n in tree.values() if not n.is_dir and n.checksum}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.randoms(use_true_random=False))
def test_planner_converges_and_loses_nothing(case: tuple, rnd) -> None:
    local, remote, synced, made = case
    ids = itertools.count(10_000)
    history = [show(local, remote, synced)]
    for _ in range(MAX_ROUNDS):
        ops = plan(local, remote, synced, "dev", "2026-01-01")
        if not ops:
            break
        rnd.shuffle(ops)
        history += [op.describe() for op in ops]
        for op in ops:
            try:
                apply_op(op, local, remote, synced, f"new{next(ids)}")
            except Exception as exc:
                raise AssertionError("\n".join(history)) from exc
        history.append(show(local, remote, synced))
    else:
        raise AssertionError(f"no convergence in {MAX_ROUNDS} rounds: {ops}")
    assert set(local) == set(remote) == set(synced)
    for p in local:
        assert same(local[p], remote[p]) and same(remote[p], synced[p]), p
        assert remote[p].file_id == synced[p].file_id, p
    assert made <= contents(local), made - contents(local)


def test_conflict_name_keeps_extension_and_numbers() -> None:
    assert conflict_name("/a/report.pdf", "laptop", "2026-11-25") == \
        "/a/report (laptop's conflicted copy 2026-11-25).pdf"
    first = conflict_name("/x", "d", "2026-11-25")
    assert conflict_name("/x", "d", "2026-11-25", [first]) == "/x (d's conflicted copy 2026-11-25 1)"
    assert conflict_name("/.bashrc", "d", "2026-11-25").startswith("/.bashrc (")


def test_edit_vs_delete_keeps_edit() -> None:
    s = {"/f": Node(False, "old", "id1", 1, 5)}
    local = {"/f": Node(False, "new", inode=5)}
    ops = plan(local, {}, s)
    assert [(o.kind, o.path) for o in ops] == [("upload", "/f")]
    ops = plan({}, {"/f": Node(False, "new", "id1", 2)}, s)
    assert [(o.kind, o.path) for o in ops] == [("download", "/f")]


def test_local_rename_becomes_server_move() -> None:
    s = {"/f": Node(False, "c", "id1", 1, 5)}
    ops = plan({"/g": Node(False, "c", inode=5)}, {"/f": Node(False, "c", "id1", 1)}, s)
    assert [(o.kind, o.src, o.path) for o in ops] == [("move_remote", "/f", "/g")]


def test_first_sync_never_deletes_local() -> None:
    local = {"/a": Node(False, "x", inode=1), "/b": Node(False, "y", inode=2)}
    remote = {"/a": Node(False, "z", "id1", 1), "/c": Node(False, "w", "id2", 1)}
    kinds = {(o.kind, o.path) for o in plan(local, remote, {})}
    assert kinds == {("conflict", "/a"), ("upload", "/b"), ("download", "/c")}
