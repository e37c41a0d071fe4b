"""Randomized end-to-end test: several devices, random file operations, fixed seeds.

Three devices apply random create/edit/move/delete/mkdir operations to their folders, sync at
random moments (a device that does not sync for a while is "offline"), then all sync to
quiescence. Invariants: every folder holds the same tree, every ``run --once`` at the end exits
0, and every content that was in some folder when that device synced is still current
somewhere or in the server's version history (which includes the trash).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from driveserver import appkeys
from driveserver.blocks.format import block_hash
from syncclient.checksum import content_checksum
from tests.helpers import RunningServer, start_server
from tests.sync_helpers import EMAIL, Device, make_devices

DIRS = ["d1", "d2"]
FILES = ["f1.txt", "f2.txt", "f3.txt"]
STEPS = 36


def checksum(data: bytes) -> str:
    return content_checksum([block_hash(data)] if data else [])


def items(d: Device) -> list[str]:
    return sorted(d.tree())


def free_paths(d: Device, names: list[str]) -> list[str]:
    tree = d.tree()
    parents = [""] + [p for p, v in tree.items() if v is None and p.count("/") < 1]
    return [f"{p}/{n}".lstrip("/") for p in parents for n in names
            if f"{p}/{n}".lstrip("/") not in tree]


def random_op(rnd: random.Random, d: Device, label: str) -> str:
    tree = d.tree()
    files = [p for p, v in tree.items() if v is not None]
    kind = rnd.choice(["create", "create", "edit", "edit", "move", "delete", "mkdir"])
    if kind == "create" and free_paths(d, FILES):
        p = rnd.choice(free_paths(d, FILES))
        d.write(p, label)
    elif kind == "edit" and files:
        p = rnd.choice(files)
        d.write(p, label)
    elif kind == "mkdir" and free_paths(d, DIRS):
        p = rnd.choice(free_paths(d, DIRS))
        (d.folder / p).mkdir()
    elif kind == "delete" and tree:
        p = rnd.choice(sorted(tree))
        target = d.folder / p
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif kind == "move" and tree:
        src = rnd.choice(sorted(tree))
        names = DIRS if tree[src] is None else FILES
        dests = [q for q in free_paths(d, names) if not (q + "/").startswith(src + "/")]
        if not dests:
            return "noop"
        dst = rnd.choice(dests)
        (d.folder / src).rename(d.folder / dst)
        return f"move {src} -> {dst}"
    else:
        return "noop"
    return f"{kind} {p}"


async def server_checksums(server: RunningServer) -> set[str]:
    rows = await server.app[appkeys.DB].fetchall("SELECT checksum FROM file_versions")
    return {r["checksum"] for r in rows}


@pytest.mark.parametrize("seed", [7, 2026, 31337])
async def test_random_devices_converge_and_lose_nothing(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    server = await start_server(tmp_path / "data")
    log: list[str] = [f"seed={seed}"]
    try:
        await server.register(EMAIL)
        devices = make_devices(tmp_path, "d0", "d1", "d2")
        for d in devices:
            await d.init(server)
            conf = json.loads((d.config_dir / "config.json").read_text())
            conf["delete_guard_min_files"] = 10_000  # random deletions are intended here
            (d.config_dir / "config.json").write_text(json.dumps(conf))
        saved: set[bytes] = set()

        async def sync(d: Device) -> None:
            saved.update(v for v in d.tree().values() if v is not None)
            log.append(f"sync {d.name}")
            rc = await d.cli("run", "--once")
            assert rc == 0, "\n".join(log)

        for step in range(STEPS):
            d = rnd.choice(devices)
            log.append(f"{d.name}: {random_op(rnd, d, f'{seed}-{step}-{d.name}')}")
            if rnd.random() < 0.4:
                await sync(rnd.choice(devices))
        for _ in range(2):
            for d in devices:
                await sync(d)
        trees = [d.tree() for d in devices]
        assert trees[0] == trees[1] == trees[2], "\n".join(log)
        final = {v for v in trees[0].values() if v is not None}
        history = await server_checksums(server)
        lost = [c for c in saved if c not in final and checksum(c) not in history]
        assert not lost, f"lost {lost}\n" + "\n".join(log)
    finally:
        await server.stop()
