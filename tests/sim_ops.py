"""The simulation's random operations: what a user does in a synced folder, and what an API
client (another app, a browser) does to the same drive, both drawn from one seeded generator.

Names come from small pools so that operations collide (the same file edited on two devices and
over the API, a folder deleted while another device adds to it, a move onto a taken name): the
collisions are what the sync has to get right. A folder shared with a user is theirs to change
at ``Shared with me/<name>/...``; the mount itself and ``Shared with me`` are left alone (the
client refuses to create, move or delete them, by design).
"""

from __future__ import annotations

import random
import shutil
from typing import Any

from tests.sim_world import SHARED, SimDevice, SimUser, World, server_tree
from tests.sync_helpers import folder_tree

DIRS = ["Proj", "docs", "Notes"]
FILES = ["a.txt", "b.md", "c.txt", "Report.txt"]


def make_content(rnd: random.Random, label: str) -> bytes:
    """A content unique to this step (so the ledger can tell every save apart), of a random
    size from a few bytes to about 40 KB, sometimes empty, and now and then 1.5 to 5 MiB: past
    the client's batch limit (1 MiB: sent and fetched on their own, block by block), some of
    them two blocks long."""
    roll = rnd.random()
    if roll < 0.04:
        return b""
    line = f"{label} {rnd.getrandbits(32):08x}\n".encode()
    if roll < 0.08:
        size = rnd.randint(3 << 19, 5 << 20)
        return (line * (size // len(line) + 1))[:size]
    return line * rnd.choice([1, 3, 40, 700, 2000])


def _depth(path: str) -> int:
    """How deep a path is in the user's own terms: a shared mount counts as a top folder."""
    parts = path.split("/")
    return len(parts) - 2 if parts[0] == SHARED else len(parts)


def parents(tree: dict[str, Any]) -> list[str]:
    """Folders a new item may go in: the root, the user's folders, the inside of a mount;
    never ``Shared with me`` itself, and at most two levels deep."""
    out = [""]
    for p, v in tree.items():
        if v is None and p != SHARED and _depth(p) < 2 and not p.startswith(".drive-sync"):
            out.append(p)
    return sorted(out)


def movable(tree: dict[str, Any]) -> list[str]:
    """Items the user may move, rename or delete: not ``Shared with me``, not a mount."""
    return sorted(p for p in tree if p != SHARED and not (
        p.startswith(SHARED + "/") and p.count("/") == 1))


def free_spots(tree: dict[str, Any], names: list[str]) -> list[str]:
    taken = {p.casefold() for p in tree}
    return [f"{d}/{n}".lstrip("/") for d in parents(tree) for n in names
            if f"{d}/{n}".lstrip("/").casefold() not in taken]


def device_op(rnd: random.Random, d: SimDevice, label: str) -> str:
    """One change a user makes in ``d``'s folder (not synced yet)."""
    root = d.device.folder
    tree = folder_tree(root)
    files = sorted(p for p, v in tree.items() if v is not None)
    kind = rnd.choice(["create", "create", "create", "edit", "edit", "edit", "rename", "move",
                       "delete", "mkdir"])
    if kind == "create" and (spots := free_spots(tree, FILES)):
        p = rnd.choice(spots)
        d.device.write(p, make_content(rnd, label))
    elif kind == "edit" and files:
        p = rnd.choice(files)
        d.device.write(p, make_content(rnd, label))
    elif kind == "mkdir" and (spots := free_spots(tree, DIRS)):
        p = rnd.choice(spots)
        (root / p).mkdir()
    elif kind == "delete" and (items := movable(tree)):
        p = rnd.choice(items)
        shutil.rmtree(root / p) if tree[p] is None else (root / p).unlink()
    elif kind in ("rename", "move") and (items := movable(tree)):
        src = rnd.choice(items)
        names = DIRS if tree[src] is None else FILES
        if kind == "rename":
            parent = src.rpartition("/")[0]
            dests = [q for q in free_spots(tree, names) if q.rpartition("/")[0] == parent]
        else:
            dests = [q for q in free_spots(tree, names) if not (q + "/").startswith(src + "/")]
        if not dests:
            return f"{d.name}: {kind} (no free name)"
        dst = rnd.choice(dests)
        (root / src).rename(root / dst)
        return f"{d.name}: {kind} {src} -> {dst}"
    else:
        return f"{d.name}: {kind} (nothing to do)"
    return f"{d.name}: {kind} {p}"


async def api_op(rnd: random.Random, world: World, user: SimUser, other: SimUser,
                 label: str) -> None:
    """One change an API client of ``user`` makes on the server: an upload (new file or a new
    version on the version it last saw), a move or rename, a delete, a folder, a restore from
    the trash, or a share of a top folder with ``other`` (or a change of its permission)."""
    api, who = user.api, f"{user.email.split('@')[0]}-api"
    tree = await server_tree(api)
    shape: dict[str, Any] = {p: (None if v[0] else b"") for p, v in tree.items()}
    files = sorted(p for p, v in tree.items() if not v[0])
    kind = rnd.choice(["upload", "upload", "overwrite", "overwrite", "move", "delete", "mkdir",
                       "restore", "share"])
    if kind == "upload" and (spots := free_spots(shape, FILES)):
        p = rnd.choice(spots)
        await upload(world, who, rnd, label, {"path": "/" + p}, f"upload {p}")
    elif kind == "overwrite" and files:
        p = rnd.choice(files)
        _, file_id, version = tree[p]
        await upload(world, who, rnd, label, {"file_id": file_id, "base_version": version},
                     f"overwrite {p} on v{version}")
    elif kind == "mkdir" and (spots := free_spots(shape, DIRS)):
        p = rnd.choice(spots)
        r = await api.post("/api/folders", {"path": "/" + p})
        world.answer(who, f"mkdir {p}", r.status, r.body)
    elif kind == "delete" and (items := movable(shape)):
        p = rnd.choice(items)
        r = await api.delete(f"/api/files/{tree[p][1]}")
        world.answer(who, f"delete {p}", r.status, r.body)
    elif kind == "move" and (items := movable(shape)):
        src = rnd.choice(items)
        names = DIRS if tree[src][0] else FILES
        dests = [q for q in free_spots(shape, names) if not (q + "/").startswith(src + "/")]
        if dests:
            dst = rnd.choice(dests)
            r = await api.patch(f"/api/files/{tree[src][1]}", {"path": "/" + dst})
            world.answer(who, f"move {src} -> {dst}", r.status, r.body)
    elif kind == "restore":
        r = await api.get("/api/trash")
        entries = r.body["entries"] if r.status == 200 else []
        if entries:
            e = rnd.choice(sorted(entries, key=lambda e: (e["path"], e["file_id"])))
            r = await api.post(f"/api/trash/{e['file_id']}/restore")
            world.answer(who, f"restore {e['path']} from the trash", r.status, r.body)
    elif kind == "share":
        await share_op(rnd, world, user, other, tree)
    else:
        world.note(f"{who}: {kind} (nothing to do)")


async def upload(world: World, who: str, rnd: random.Random, label: str,
                 init: dict[str, Any], what: str) -> None:
    """The three-step upload; a content is saved (entered in the ledger) once ``complete``
    says so. A 409 (someone else saved first) or a 4xx is the server refusing, not a loss."""
    api = world.users[who.split("-")[0]].api
    data = make_content(rnd, label)
    r = await api.post("/api/files/upload-init", {**init, "size": len(data)})
    if r.status != 200:
        world.answer(who, what + " (init)", r.status, r.body)
        return
    async with api.session.post(r.body["upload_url"], data=data) as resp:
        if resp.status != 200:
            world.answer(who, what + " (blocks)", resp.status, await resp.text())
            return
        blocks = (await resp.json())["blocks"]
    base = {"base_version": init["base_version"]} if "base_version" in init else {}
    c = await api.post(f"/api/files/{r.body['file_id']}/complete", {"blocks": blocks, **base})
    world.answer(who, what, c.status, c.body)
    if c.status == 200:
        world.saved.add(data)


async def share_op(rnd: random.Random, world: World, user: SimUser, other: SimUser,
                   tree: dict[str, tuple[bool, str, int]]) -> None:
    """Share one of ``user``'s top folders with ``other`` (edit, or view a quarter of the
    time), or change the permission of a share it already has. Shares are never revoked here:
    a revoke leaves the recipient's unsynced edits in their folder by design (docs/api.md), so
    their folder and their server tree would rightly differ."""
    api, who = user.api, f"{user.email.split('@')[0]}-api"
    tops = sorted(p for p, v in tree.items() if v[0] and "/" not in p and p != SHARED)
    if not tops:
        world.note(f"{who}: share (no folder)")
        return
    p = rnd.choice(tops)
    file_id = tree[p][1]
    permission = "view" if rnd.random() < 0.25 else "edit"
    r = await api.get(f"/api/files/{file_id}/shares")
    shares = r.body.get("shares", []) if r.status == 200 else []
    if shares:
        share_id = shares[0]["share_id"]
        r = await api.patch(f"/api/shares/{share_id}", {"permission": permission})
        world.answer(who, f"share {p}: now {permission}", r.status, r.body)
    else:
        r = await api.post(f"/api/files/{file_id}/share",
                           {"user_email": other.email, "permission": permission})
        world.answer(who, f"share {p} with {other.email} ({permission})", r.status, r.body)
