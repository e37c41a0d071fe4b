"""The upgrade to content-defined chunking (issue 15): a data directory written by the code
of before it (commit ee8f015: every version cut into fixed 4 MiB blocks) is served unchanged
by today's server, and edited afterwards by today's ``drive-sync``, which cuts the new
versions by FastCDC; old (fixed) and new (CDC) versions of one file both download correctly,
and a device holding the old version brings the new one down as patches.

The data directory is ``tests/fixtures/fixed-4mib-datadir.tar.gz``, written by that commit's
own server and client (``python tests/test_scheme_upgrade.py OLD_TREE`` writes it again, with
OLD_TREE a checkout of ee8f015: ``git worktree add /tmp/old ee8f015``). Its files' contents
are :func:`content`'s, so the test knows every byte it must get back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from driveproto.blocks import BLOCK_SIZE, content_checksum
from driveproto.chunking import CDC_SCHEME, FIXED_SCHEME, split_bytes
from tests.helpers import PASSWORD, start_server
from tests.sync_helpers import EMAIL, make_devices, metric

FIXTURE = Path(__file__).parent / "fixtures" / "fixed-4mib-datadir.tar.gz"

# path -> (size, generation): what the old code wrote; "large" has two versions.
FILES = {
    "/docs/small.txt": (10_000, 1),
    "/docs/medium.txt": (3 * 1024 * 1024, 1),
    "/big/other.log": (2 * BLOCK_SIZE, 1),
    "/big/large.log": (2 * BLOCK_SIZE + 5, 2),
}


def content(path: str, size: int, generation: int) -> bytes:
    """Deterministic, very compressible lines (the fixture stays small), unique per file and
    generation; line numbers make every block different."""
    tag = f"{path} v{generation}".encode()
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b"%s line %08d %s\n" % (tag, i, hashlib.sha256(b"%d" % (i // 1000)).hexdigest()
                                        .encode())
        i += 1
    return bytes(out[:size])


def _expected() -> dict[str, bytes]:
    return {p: content(p, size, gen) for p, (size, gen) in FILES.items()}


async def test_a_fixed_4mib_data_dir_is_served_unchanged_then_edited_with_cdc(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    assert (data / "meta.sqlite3").exists()
    srv = await start_server(data)
    try:
        client = await srv.login(EMAIL)
        expected = _expected()
        ids: dict[str, str] = {}
        for path, want in expected.items():
            parent, _, name = path.rpartition("/")
            listing = (await client.get("/api/files", params={"path": parent})).body
            entry = next(e for e in listing["entries"] if e["name"] == name)
            ids[path] = entry["file_id"]
            info = (await client.get(f"/api/files/{ids[path]}/download")).body
            assert info["chunking"] == FIXED_SCHEME
            assert [b["hash"] for b in info["blocks"]] == \
                [hashlib.sha256(b).hexdigest() for b in split_bytes(want, FIXED_SCHEME)]
            assert info["checksum"] == content_checksum(b["hash"] for b in info["blocks"])
            got = await client.get(f"/api/files/{ids[path]}/content")
            assert got.status == 200 and got.body == want, path
        # The first version of the edited file, from the version history, too.
        v1 = await client.get(f"/api/files/{ids['/big/large.log']}/content",
                              params={"version": "1"})
        assert v1.body == content("/big/large.log", FILES["/big/large.log"][0], 1)

        # Today's client syncs the folder down (every file as it was), then edits one file.
        a, b = make_devices(tmp_path, "a", "b")
        await a.init(srv)
        await b.init(srv)
        await a.sync()
        await b.sync()
        for path, want in expected.items():
            assert a.read(path.lstrip("/")) == want and b.read(path.lstrip("/")) == want
        # A third computer that already has a copy of the large files (hashed by content
        # here, held in fixed blocks there): the same content, not a conflict.
        (c,) = make_devices(tmp_path, "c")
        for path in ("/big/large.log", "/big/other.log"):
            c.write(path.lstrip("/"), expected[path])
        await c.init(srv)
        await c.sync()
        assert c.tree() == a.tree()  # no conflicted copy
        # Nothing was uploaded again: the files are unchanged under the old scheme.
        infos = [(await client.get(f"/api/files/{i}/download")).body for i in ids.values()]
        assert [i["version"] for i in infos] == [1, 1, 1, 2]

        edited = bytearray(expected["/big/large.log"])
        edited[BLOCK_SIZE + 100:BLOCK_SIZE + 100] = b"an insertion in the second block\n"
        a.write("big/large.log", bytes(edited))
        out_before = await metric(srv, "drive_block_bytes_total", "out")
        await a.sync()
        info = (await client.get(f"/api/files/{ids['/big/large.log']}/download")).body
        assert info["version"] == 3 and info["chunking"] == CDC_SCHEME
        assert [x["hash"] for x in info["blocks"]] == \
            [hashlib.sha256(x).hexdigest() for x in split_bytes(bytes(edited), CDC_SCHEME)]
        assert all(x["size"] <= BLOCK_SIZE for x in info["blocks"])

        # Mixed schemes: v2 (fixed) and v3 (CDC) of one file both download; B, holding v2,
        # gets v3 right, and not by downloading the whole file again.
        await b.sync()
        assert b.read("big/large.log") == bytes(edited)
        fetched = await metric(srv, "drive_block_bytes_total", "out") - out_before
        assert fetched < len(edited) / 2, fetched
        for version, want in ((2, expected["/big/large.log"]), (3, bytes(edited))):
            r = await client.get(f"/api/files/{ids['/big/large.log']}/content",
                                 params={"version": str(version)})
            assert r.body == want
        assert a.tree() == b.tree()
    finally:
        await srv.stop()


# --- writing the fixture with the old code -------------------------------------------------

def write_fixture(old_tree: Path) -> None:  # pragma: no cover - run by hand
    """Run ``old_tree``'s server and client (fixed 4 MiB blocks) to write the fixture."""
    work = Path(tempfile.mkdtemp(prefix="fixed-datadir-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIVE_")}
    env.update(PYTHONPATH=str(old_tree), PYTHONDONTWRITEBYTECODE="1")
    data = work / "data"
    log = open(work / "server.log", "w+")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "driveserver", "serve", "--port", "0",
                               "--data-dir", str(data)], stderr=log, env=env, cwd=old_tree)
    try:
        url = None
        for _ in range(600):
            log.seek(0)
            text = log.read()
            if "listening on " in text:
                url = text.split("listening on ")[1].split()[0]
                break
            time.sleep(0.05)
        assert url, "server did not start"
        subprocess.run([sys.executable, "-m", "driveserver", "user", "add", EMAIL,
                        "--password-stdin", "--data-dir", str(data)], input=PASSWORD + "\n",
                       text=True, check=True, env=env, cwd=old_tree)
        folder, config = work / "folder", work / "config"

        def sync(*args: str, stdin: str = "") -> None:
            subprocess.run([sys.executable, "-m", "syncclient", *args, "--config-dir",
                            str(config)], input=stdin, text=True, check=True, env=env,
                           cwd=old_tree)

        sync("init", "--server", url, "--email", EMAIL, "--password-stdin", "--folder",
             str(folder), "--device-name", "old", stdin=PASSWORD + "\n")
        for generation in (1, 2):
            for path, (size, last) in FILES.items():
                if generation <= last and (generation == 1 or last == generation):
                    target = folder / path.lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content(path, size, generation))
            sync("run", "--once")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    FIXTURE.parent.mkdir(exist_ok=True)
    for name in ("meta.sqlite3-wal", "meta.sqlite3-shm"):
        assert not (data / name).exists() or (data / name).stat().st_size == 0
    with tarfile.open(FIXTURE, "w:gz") as tar:
        tar.add(data, arcname="data")
    shutil.rmtree(work)


if __name__ == "__main__":  # pragma: no cover
    write_fixture(Path(sys.argv[1]).resolve())
