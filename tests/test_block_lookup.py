"""Which blocks a user may already read (``meta.access``, through
``permissions.readable_block_sizes``: the blocks an upload may name without sending them),
checked against a model of the rule over random worlds, on both backends: their own
workspaces, anything below a folder shared with them that is not in its owner's trash, old
versions too, lone trashed items below a live share, several shares, hash lists of several
chunks, a user nothing is shared with. A hash the model does not allow is someone else's data
claimed by knowing its hash; one it allows and the query misses costs an upload.
(Written by an attacker-minded review of the queries' rewrite.)"""

from __future__ import annotations

import random
from typing import Any

import pytest

from driveserver.meta import access
from driveserver.meta.db import Database


@pytest.fixture
def db(db_on_each_backend: Database) -> Database:
    return db_on_each_backend


def h(n: int) -> str:
    return f"{n:064x}"


class World:
    def __init__(self, rng: random.Random, users: int = 4, items: int = 60, npool: int = 40) -> None:
        self.npool = npool
        self.rng = rng
        self.users = [f"u{i}" for i in range(users)]
        self.ws: dict[str, tuple[str, str, str]] = {}      # id -> (owner, kind, root)
        self.files: dict[str, dict[str, Any]] = {}
        self.shares: list[tuple[str, str]] = []             # (file_id, grantee)
        self.versions: list[tuple[int, str]] = []           # (version id, file_id)
        self.blocks: list[tuple[int, int, str, int]] = []   # (version, ord, hash, size)
        self.items = items

    def build(self) -> None:
        rng = self.rng
        for u in self.users:
            w = f"w-{u}"
            self.ws[w] = (u, "personal", f"r-{u}")
            self.files[f"r-{u}"] = dict(ws=w, parent=None, dir=1, trashed=None)
        for i in range(self.items):
            parent = rng.choice([f for f, r in self.files.items() if r["dir"]])
            p = self.files[parent]
            ws = p["ws"]
            for w, (_o, kind, root) in self.ws.items():
                if kind == "shared" and root == parent:
                    ws = w
            fid = f"f{i:03d}"
            is_dir = int(rng.random() < 0.4)
            self.files[fid] = dict(ws=ws, parent=parent, dir=is_dir, trashed=None)
            # a folder in a personal workspace becomes shared sometimes
            if is_dir and self.ws[ws][1] == "personal" and rng.random() < 0.3:
                self.ws[f"ws-{fid}"] = (self.ws[ws][0], "shared", fid)
        for fid, f in self.files.items():
            if f["parent"] is None:
                continue
            for _ in range(rng.choice([0, 0, 1, 2])):
                self.shares.append((fid, rng.choice(self.users)))
        self.shares = sorted(set(self.shares))
        # trash a few subtrees (the way tree.trash does: every item below too), or a lone item
        for _ in range(rng.randint(0, 4)):
            top = rng.choice([f for f in self.files if self.files[f]["parent"]])
            whole = rng.random() < 0.7
            for fid in self.below(top) if whole else [top]:
                self.files[fid]["trashed"] = 1.0
        vid = 0
        for fid, f in self.files.items():
            if f["dir"] and rng.random() < 0.8:
                continue
            for _ in range(rng.randint(1, 3)):
                vid += 1
                self.versions.append((vid, fid))
                for o in range(rng.randint(1, 3)):
                    n = rng.randrange(self.npool)
                    self.blocks.append((vid, o, h(n), 1000 + n))

    def below(self, top: str) -> list[str]:
        out, todo = [], [top]
        while todo:
            x = todo.pop()
            out.append(x)
            todo += [f for f, r in self.files.items() if r["parent"] == x]
        return out

    def ancestors(self, fid: str) -> list[str]:
        out: list[str] = []
        x: str | None = fid
        while x is not None and x not in out:
            out.append(x)
            x = self.files[x]["parent"]
        return out

    def model(self, user: str, hashes: list[str]) -> set[str]:
        readable = set()
        live = {f for f, g in self.shares if g == user and self.files[f]["trashed"] is None}
        for vid, fid in self.versions:
            f = self.files[fid]
            ok = self.ws[f["ws"]][0] == user or bool(live & set(self.ancestors(fid)))
            if ok:
                readable |= {b[2] for b in self.blocks if b[0] == vid}
        return readable & set(hashes)

    async def store(self, db: Database) -> None:
        async def unit(tx: Any) -> None:
            for u in self.users:
                await tx.execute("INSERT INTO users (id, email, email_key, password_hash,"
                                 " quota_bytes, workspace_id, created_at)"
                                 " VALUES (?,?,?,?,?,?,?)", (u, u, u, "x", 1 << 40, f"w-{u}", 0.0))
            for w, (o, kind, root) in self.ws.items():
                await tx.execute("INSERT INTO workspaces (id, owner_id, kind, root_id, created_at)"
                                 " VALUES (?,?,?,?,?)", (w, o, kind, root, 0.0))
            for fid, f in self.files.items():  # parents are inserted before children
                await tx.execute(
                    "INSERT INTO files (id, workspace_id, parent_id, name, name_key,"
                    " is_directory, created_at, modified_at, trashed_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (fid, f["ws"], f["parent"], fid, fid, f["dir"], 0.0, 0.0, f["trashed"]))
            for i, (fid, g) in enumerate(self.shares):
                await tx.execute("INSERT INTO shares (id, file_id, grantee_id, permission,"
                                 " created_by, created_at) VALUES (?,?,?,?,?,?)",
                                 (f"s{i}", fid, g, "view", "x", 0.0))
            for vid, fid in self.versions:
                await tx.execute("INSERT INTO file_versions (id, file_id, version, size, checksum,"
                                 " chunking, created_at, user_id) VALUES (?,?,?,?,?,?,?,?)",
                                 (vid, fid, vid, 0, "c", "fixed", 0.0, "u0"))
            for vid, o, bh, size in self.blocks:
                await tx.execute("INSERT INTO version_blocks (version_id, ord, block_hash, size)"
                                 " VALUES (?,?,?,?)", (vid, o, bh, size))
        await db.write(unit)


@pytest.mark.parametrize("seed", range(4))
async def test_block_lookups_follow_the_rule(db: Database, seed: int) -> None:
    w = World(random.Random(seed), npool=40 if seed % 2 else 600)
    w.build()
    await w.store(db)
    pool = [h(n) for n in range(w.npool + 5)]
    # more than one chunk: real hashes in each chunk, the rest unknown
    big = pool + [f"{n:064x}"[::-1] for n in range(1, 1300)]
    random.Random(seed).shuffle(big)
    for hashes in (pool, big, pool[:3], []):
        for u in w.users + ["nobody"]:
            for _ in range(6):  # past PostgreSQL's five custom plans: its generic one too
                owned = await access.block_sizes_in_owned_workspaces(db, u, hashes)
                shared = await access.block_sizes_below_live_shares(db, u, hashes)
            assert set(owned) | set(shared) == w.model(u, hashes), u
            sizes = {**owned, **shared}
            assert all(sizes[x] == 1000 + int(x, 16) for x in sizes)


async def test_a_cycle_in_parent_ids_still_ends(db: Database) -> None:
    """Two folders made each other's parent (no route does this): the walk up still ends."""
    w = World(random.Random(99))
    w.build()
    await w.store(db)
    dirs = [f for f, r in w.files.items() if r["dir"] and r["parent"] and
            w.files[r["parent"]]["parent"]]
    a = dirs[0]
    b = w.files[a]["parent"]
    await db.write(lambda tx: tx.execute("UPDATE files SET parent_id = ? WHERE id = ?", (a, b)))
    pool = [h(n) for n in range(45)]
    for u in w.users:
        await access.block_sizes_below_live_shares(db, u, pool)
