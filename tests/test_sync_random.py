"""Randomized end-to-end test: several devices, random file operations, fixed seeds.

Three devices apply random create/edit/move/delete/mkdir operations, exec-bit flips, symlinks
(to a file or dangling), case-only renames and restores of old versions to their folders, sync at
random moments (a device that does not sync for a while is "offline"), then all sync to
quiescence. Invariants: every folder holds the same tree, every ``run --once`` at the end exits
0, and every content that was in some folder when that device synced is still current
somewhere or in the server's version history (which includes the trash).
"""

from __future__ import annotations

import json
import os
import posixpath
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from driveproto.blocks import block_hash, content_checksum
from driveserver import appkeys
from syncclient.links import symlink_stays_inside
from syncclient.remote import Remote
from tests.helpers import RunningServer, start_server
from tests.sync_helpers import EMAIL, Device, make_devices

DIRS = ["d1", "d2"]
FILES = ["f1.txt", "f2.txt", "f3.txt"]
STEPS = 36


def checksum(data: bytes) -> str:
    return content_checksum([block_hash(data)] if data else [])


LINK = b"symlink -> "  # how a link shows in snapshot(): its target after this prefix


def snapshot(d: Device) -> dict[str, bytes | None]:
    """Relative path -> content (None for folders, LINK + target for a symlink, never
    followed), without the client's own ``.drive-sync``."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(d.folder):
        rel = Path(dirpath).relative_to(d.folder)
        if rel.parts[:1] == (".drive-sync",):
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = (rel / name).as_posix()
            if key == ".drive-sync":
                continue
            if path.is_symlink():
                out[key] = LINK + os.fsencode(os.readlink(path))
            elif path.is_dir():
                out[key] = None
            else:
                out[key] = path.read_bytes()
    return out


def leaves(path: str, v: bytes | None) -> bool:
    """Is this a symlink whose target leads out of the folder (never synced)?"""
    return v is not None and v.startswith(LINK) and \
        not symlink_stays_inside("/" + path, os.fsdecode(content(v)))


def content(v: bytes) -> bytes:
    """What the server keeps of an item: a link's target text, a file's bytes."""
    return v[len(LINK):] if v.startswith(LINK) else v


def free_paths(d: Device, names: list[str]) -> list[str]:
    tree = snapshot(d)
    parents = [""] + [p for p, v in tree.items() if v is None and p.count("/") < 1]
    return [f"{p}/{n}".lstrip("/") for p in parents for n in names
            if f"{p}/{n}".lstrip("/") not in tree]


async def random_op(rnd: random.Random, d: Device, label: str,
                    in_flight: dict[str, tuple[str, str]]) -> str:
    tree = snapshot(d)
    files = [p for p, v in tree.items() if v is not None and not v.startswith(LINK)]
    kind = rnd.choice(["create", "create", "edit", "edit", "move", "delete", "mkdir", "chmod",
                       "link", "restore", "case", "busy"])
    if kind == "create" and free_paths(d, FILES):
        p = rnd.choice(free_paths(d, FILES))
        d.write(p, label)
    elif kind == "edit" and files:
        p = rnd.choice(files)
        d.write(p, label)
    elif kind == "chmod" and files:  # the exec bit flipped, the content as it was
        p = rnd.choice(files)
        target = d.folder / p
        target.chmod(target.stat().st_mode ^ 0o111)
    elif kind == "link" and free_paths(d, FILES):  # to a file here, or dangling
        p = rnd.choice(free_paths(d, FILES))
        to = rnd.choice([*files, "gone.txt"])
        (d.folder / p).symlink_to(posixpath.relpath("/" + to, "/" + posixpath.dirname(p)))
        return f"link {p} -> {to}"
    elif kind == "busy" and files:  # saved again while the next sync of this device transfers
        p = rnd.choice(files)
        in_flight[d.name] = (p, label)
        return f"busy {p} (edited during the next sync's first transfer)"
    elif kind == "restore" and files:  # an older version, by this device, from the CLI
        p = rnd.choice(files)
        rc = await d.cli("restore", p, "--version", "1")
        return f"restore {p} v1 (exit {rc})"
    elif kind == "case" and tree:  # a rename that changes only the letter case
        src = rnd.choice(sorted(tree))
        dst = src.rpartition("/")[0] + "/" + src.rpartition("/")[2].swapcase()
        (d.folder / src).rename(d.folder / dst.lstrip("/"))
        return f"case {src} -> {dst.lstrip('/')}"
    elif kind == "mkdir" and free_paths(d, DIRS):
        p = rnd.choice(free_paths(d, DIRS))
        (d.folder / p).mkdir()
    elif kind == "delete" and tree:
        p = rnd.choice(sorted(tree))
        target = d.folder / p
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
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


def exec_bits(d: Device) -> dict[str, bool]:
    """Which files of the folder have the owner's exec bit."""
    return {p: bool((d.folder / p).stat().st_mode & 0o100)
            for p, v in snapshot(d).items() if v is not None and not v.startswith(LINK)}


async def server_checksums(server: RunningServer) -> set[str]:
    rows = await server.app[appkeys.DB].fetchall("SELECT checksum FROM file_versions")
    return {r["checksum"] for r in rows}


TRANSFERS = ("complete", "complete_batch", "content", "content_batch", "get_block")


@pytest.mark.parametrize("seed", [7, 2026, 31337])
async def test_random_devices_converge_and_lose_nothing(
        tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
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
        in_flight: dict[str, tuple[str, str]] = {}
        overwritten: set[bytes] = set()

        def edit_in_flight(d: Device, m: pytest.MonkeyPatch) -> None:
            """The next transfer call (an upload's commit, a download) of this sync first
            lets the user save the chosen file: an edit while the file is in flight."""
            path, label = in_flight.pop(d.name)
            done: list[bool] = []
            for name in TRANSFERS:
                real = getattr(Remote, name)

                async def hooked(self: Remote, *args: Any, _real: Any = real, **kw: Any) -> Any:
                    out = await _real(self, *args, **kw)
                    target = d.folder / path
                    if not done and target.is_file() and not target.is_symlink():
                        done.append(True)
                        # The user overwrites what was there before it may have gone up:
                        # that content is theirs to lose, not the sync's.
                        overwritten.add(target.read_bytes())
                        d.write(path, label + " in flight")
                    return out
                m.setattr(Remote, name, hooked)

        async def sync(d: Device) -> None:
            saved.update(content(v) for v in snapshot(d).values() if v is not None)
            log.append(f"sync {d.name}")
            with monkeypatch.context() as m:  # the hooks go when this sync ends
                if d.name in in_flight:
                    edit_in_flight(d, m)
                rc = await d.cli("run", "--once")
            assert rc == 0, "\n".join(log)

        for step in range(STEPS):
            d = rnd.choice(devices)
            log.append(f"{d.name}: "
                       f"{await random_op(rnd, d, f'{seed}-{step}-{d.name}', in_flight)}")
            if rnd.random() < 0.4:
                await sync(rnd.choice(devices))
        for _ in range(2):
            for d in devices:
                await sync(d)
        # A link moved to where its target leads out of the folder is left alone by design, on
        # both sides, as an unreadable file is (docs/sync-logic.md): compared are the paths
        # that sync everywhere.
        snaps = [snapshot(d) for d in devices]
        alone = {p for snap in snaps for p, v in snap.items() if leaves(p, v)}
        trees = [{p: v for p, v in snap.items() if p not in alone} for snap in snaps]
        assert trees[0] == trees[1] == trees[2], "\n".join(log)
        modes = [{p: x for p, x in exec_bits(d).items() if p not in alone} for d in devices]
        assert modes[0] == modes[1] == modes[2], "\n".join(log)
        final = {content(v) for snap in snaps for v in snap.values() if v is not None}
        history = await server_checksums(server)
        lost = [c for c in saved - overwritten if c not in final and checksum(c) not in history]
        assert not lost, f"lost {lost}\n" + "\n".join(log)
    finally:
        await server.stop()
