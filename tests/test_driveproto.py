"""driveproto: the protocol package the client stands on, and the packaging split around it.

The client must not load the server (a laptop installs only ``drive-sync``'s dependencies), the
protocol package must need nothing but zstandard, its frames must round-trip and refuse what
the server refused before, and its reply types must describe what the server really answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
import zstandard

from driveproto import codes, frames, replies
from driveproto.blocks import BLOCK_SIZE, BlockCorrupt, block_hash, content_checksum
from driveproto.names import MAX_NAME_BYTES, SHARED_ROOT, refused_characters
from syncclient.errors import ApiError
from syncclient.remote import Remote
from tests.helpers import PASSWORD, RunningServer

ROOT = Path(__file__).resolve().parents[1]
SERVER_DEPENDENCIES = {"aiosqlite", "aiobotocore", "botocore", "cryptography", "itsdangerous",
                       "prometheus_client", "confusable_homoglyphs", "PIL", "stream_zip",
                       "defusedxml"}


def _fresh_interpreter(code: str) -> Any:
    """Run ``code`` in a new interpreter (nothing of this test session loaded) and return the
    JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the import graph -------------------------------------------------------------------------

def test_the_sync_client_loads_no_server_module() -> None:
    """Importing every syncclient module and running ``drive-sync --help`` in a fresh
    interpreter loads no ``driveserver`` module and none of the server's dependencies."""
    loaded = _fresh_interpreter(
        "import contextlib, io, json, pkgutil, importlib, sys\n"
        "import syncclient, syncclient.cli\n"
        "for m in pkgutil.walk_packages(syncclient.__path__, 'syncclient.'):\n"
        "    if m.name != 'syncclient.__main__':  # it runs drive-sync\n"
        "        importlib.import_module(m.name)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        syncclient.cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    server = [m for m in loaded if m.split(".")[0] in {"driveserver", *SERVER_DEPENDENCIES}]
    assert server == []
    assert "syncclient.engine" in loaded and "driveproto.blocks" in loaded


def test_driveproto_needs_nothing_but_zstandard() -> None:
    """Every driveproto module imports only the standard library, zstandard and pyfastcdc
    (content-defined chunking, with the typing_extensions it imports and Cython's shared
    runtime module) — not aiohttp, not the client, not the server."""
    added = _fresh_interpreter(
        "import importlib, json, pkgutil, sys\n"
        "before = set(sys.modules)\n"
        "import driveproto\n"
        "for m in pkgutil.walk_packages(driveproto.__path__, 'driveproto.'):\n"
        "    importlib.import_module(m.name)\n"
        "tops = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(json.dumps(sorted(tops - set(sys.stdlib_module_names))))\n")
    added = [m for m in added if not m.startswith(("_cython_", "cython_runtime"))]
    assert added == ["driveproto", "pyfastcdc", "typing_extensions", "zstandard"]


def test_the_base_install_is_the_sync_client() -> None:
    """``pip install .`` carries the client's five dependencies only; ``[server]`` adds the
    server's, ``[test]`` pulls ``[server]`` in, and driveproto is packaged."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    def names(reqs: list[str]) -> set[str]:
        return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
                .replace("-", "_") for r in reqs}
    assert names(project["project"]["dependencies"]) == \
        {"aiohttp", "zstandard", "pyfastcdc", "watchdog", "pathspec"}
    extras = project["project"]["optional-dependencies"]
    assert names(extras["server"]) == {"aiosqlite", "aiobotocore", "cryptography", "itsdangerous",
                                       "prometheus_client", "confusable_homoglyphs", "pillow",
                                       "stream_zip", "defusedxml"}
    assert "drive[server]" in extras["test"]
    assert "driveproto*" in project["tool"]["setuptools"]["packages"]["find"]["include"]


# --- /blocks/batch frames ---------------------------------------------------------------------

def _blocks() -> list[tuple[str, bytes]]:
    text = b"compressible " * 10_000
    noise = zstandard.ZstdCompressor().compress(bytes(range(256)) * 64)  # does not shrink again
    return [(block_hash(d), d) for d in (text, noise, b"", b"x")]


def test_batch_frames_round_trip() -> None:
    blocks = _blocks()
    body = frames.encode_batch(blocks)
    assert body == b"".join(frames.encode_frame(h, d) for h, d in blocks)
    assert len(body) < sum(len(d) for _, d in blocks)  # the text went compressed
    assert frames.parse_batch(body) == blocks
    assert frames.parse_batch(body, budget=sum(len(d) for _, d in blocks)) == blocks
    assert frames.parse_batch(b"") == []


@pytest.mark.parametrize("cut", [1, frames.BATCH_FRAME.size - 1, frames.BATCH_FRAME.size + 1])
def test_a_truncated_batch_is_a_frame_error(cut: int) -> None:
    body = frames.encode_batch([(block_hash(b"abc"), b"abc")])
    with pytest.raises(frames.FrameError, match="truncated"):
        frames.parse_batch(body[:cut] if cut <= frames.BATCH_FRAME.size else body[:-1])


@pytest.mark.parametrize("header", [
    frames.BATCH_FRAME.pack(b"Z" * 64, 0, 0),                   # not a hash
    frames.BATCH_FRAME.pack(block_hash(b"").encode(), 2, 0),    # unknown encoding byte
    frames.BATCH_FRAME.pack(block_hash(b"").encode(), 0, BLOCK_SIZE + 1),  # over one block
])
def test_a_malformed_batch_frame_is_a_frame_error(header: bytes) -> None:
    with pytest.raises(frames.FrameError, match="invalid batch frame"):
        frames.parse_batch(header)


def test_an_undecodable_batch_payload_is_corrupt() -> None:
    body = frames.BATCH_FRAME.pack(block_hash(b"").encode(), 1, 4) + b"nope"
    with pytest.raises(BlockCorrupt):
        frames.parse_batch(body)


def test_a_batch_bomb_stops_at_the_budget() -> None:
    """Tiny zstd frames of 4 MiB of zeros each, under hashes of their own: parsing stops once
    the budget (or the cap of a request) is spent rather than inflating them all; the same
    frame repeated is inflated once."""
    zeros = zstandard.ZstdCompressor().compress(bytes(BLOCK_SIZE))

    def frame(h: str) -> bytes:
        return frames.BATCH_FRAME.pack(h.encode(), 1, len(zeros)) + zeros
    body = b"".join(frame(f"{i:064x}") for i in range(1000))  # ~4 GiB decoded, ~200 KB sent
    with pytest.raises(frames.BudgetExceeded) as caught:
        frames.parse_batch(body, budget=2 * BLOCK_SIZE + 1)
    assert caught.value.budget == 2 * BLOCK_SIZE + 1
    with pytest.raises(frames.BudgetExceeded):
        frames.parse_batch(body, most=3 * BLOCK_SIZE)
    repeated = frames.parse_batch(frame(block_hash(bytes(BLOCK_SIZE))) * 1000,
                                  budget=BLOCK_SIZE)
    assert len(repeated) == 1000 and len({id(data) for _, data in repeated}) == 1


async def test_the_server_answers_batch_frame_errors_as_before(server: RunningServer) -> None:
    """The block route maps the parser's errors to the same answers: 400 ``invalid_batch`` for
    framing, 400 ``invalid_encoding`` for a payload, 413 past the grant."""
    async with server.user("alice@example.com") as alice:
        init = await alice.post("/api/files/upload-init", {"path": "/a", "size": BLOCK_SIZE})
        assert init.status == 200, init
        url = init.body["batch_url"]
        session = alice.session
        zeros = zstandard.ZstdCompressor().compress(bytes(BLOCK_SIZE))
        bomb = frames.BATCH_FRAME.pack(block_hash(bytes(BLOCK_SIZE)).encode(), 1,
                                       len(zeros)) + zeros
        for body, status, code in [
                (b"short", 400, "invalid_batch"),
                (frames.BATCH_FRAME.pack(block_hash(b"").encode(), 1, 4) + b"nope", 400,
                 "invalid_encoding"),
                (bomb + frames.encode_frame(block_hash(b"\1" * BLOCK_SIZE),
                                            b"\1" * BLOCK_SIZE), 413, "too_large")]:
            async with session.post(url, data=body) as r:
                answer = await r.json()
                assert (r.status, answer["error"]["code"]) == (status, code), answer


# --- content/batch frames ---------------------------------------------------------------------

def _reader(data: bytes) -> typing.Callable[[int], typing.Awaitable[bytes]]:
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    return stream.readexactly


async def test_content_frames_round_trip() -> None:
    file = {"file_id": "f1", "version": 2, "size": 3, "checksum": content_checksum([]),
            "encoding": "identity", "length": 3}
    error = {"file_id": "f2", "error": {"code": "not_found", "message": "no", "status": 404}}
    read = _reader(frames.content_frame(file) + b"abc" + frames.content_frame(error))
    assert await frames.read_content_frame(read) == (file, b"abc")
    assert await frames.read_content_frame(read) == (error, b"")


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b'{"length": -1}',
                                    b'{"length": "3"}', b'{"length": true}'])
async def test_a_malformed_content_frame_is_a_frame_error(header: bytes) -> None:
    read = _reader(len(header).to_bytes(4, "big") + header + b"abc")
    with pytest.raises(frames.FrameError):
        await frames.read_content_frame(read)


# --- names and codes --------------------------------------------------------------------------

def test_the_server_refuses_the_names_the_client_reports() -> None:
    """The server's name check is driveproto's: what the client reports as unsendable, the
    server refuses, and the byte limit is the same one."""
    from driveserver.errors import BadRequest
    from driveserver.meta import mounts
    from driveserver.paths import validate_name

    for name in ["a\x07b", "tab\there", "invoice\u202efdp.exe", "x\u2066y", "del\x7f", "c1\x85"]:
        assert refused_characters(name) is not None
        with pytest.raises(BadRequest) as caught:
            validate_name(name)
        assert caught.value.code == "invalid_name"
    for name in ["plain.txt", "line\u2028sep", "é" * (MAX_NAME_BYTES // 2)]:
        assert refused_characters(name) is None and validate_name(name)
    with pytest.raises(BadRequest):
        validate_name("a" * (MAX_NAME_BYTES + 1))
    assert mounts.SHARED_ROOT == SHARED_ROOT


def test_every_code_the_client_branches_on_is_the_servers() -> None:
    """Each code of driveproto.codes is raised somewhere in the server and documented."""
    source = "\n".join(p.read_text() for p in (ROOT / "driveserver").rglob("*.py"))
    doc = (ROOT / "docs" / "api.md").read_text()
    for code in sorted(codes.CLIENT_CODES):
        assert re.search(rf'code\s*=\s*"{code}"', source), code
        assert f"`{code}`" in doc, code


# --- replies: the types say what the server really answers -----------------------------------

# Types whose answers carry more than they declare: an error's details depend on the route.
OPEN_TYPES = {replies.ErrorDetail}


def _problems(value: Any, tp: Any, where: str) -> list[str]:
    """Where ``value`` (decoded JSON) does not fit the type ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return []
    if origin in (Union, types.UnionType):
        tries = [_problems(value, arm, where) for arm in get_args(tp)]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if origin is Literal:
        return [] if value in get_args(tp) else [f"{where}: {value!r} not in {get_args(tp)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [p for i, v in enumerate(value) for p in _problems(v, get_args(tp)[0],
                                                                  f"{where}[{i}]")]
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not {tp.__name__}"]
        keys = set(value)
        out = [f"{where}: {tp.__name__} lacks {k!r}" for k in sorted(tp.__required_keys__ - keys)]
        out += [f"{where}: {tp.__name__} does not declare {k!r}"
                for k in sorted(keys - tp.__required_keys__ - tp.__optional_keys__)
                if tp not in OPEN_TYPES]
        hints = get_type_hints(tp)
        return out + [p for k in sorted(keys & set(hints))
                      for p in _problems(value[k], hints[k], f"{where}.{k}")]
    if tp is type(None):
        return [] if value is None else [f"{where}: {value!r}, not null"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return [] if ok else [f"{where}: {value!r}, not {tp.__name__}"]


def _fits(value: Any, tp: Any, where: str) -> None:
    problems = _problems(value, tp, where)
    assert not problems, problems


async def test_the_reply_types_describe_the_servers_answers(server: RunningServer) -> None:
    """Every reply the client reads, from a real server, fits its driveproto type exactly:
    no required field missing, no undeclared field, every value of the declared type."""
    await server.register("alice@example.com")
    await server.register("bob@example.com")
    async with Remote(server.url) as remote, Remote(server.url) as bob:
        _fits(await remote.login("alice@example.com", PASSWORD, "laptop"), replies.LoginReply,
              "login")
        await bob.login("bob@example.com", PASSWORD, "bob-laptop")
        folder = await remote.mkdir("/Docs")
        _fits(folder, replies.PathEntry, "mkdir")

        big = bytes(range(256)) * (BLOCK_SIZE // 256) + b"tail"
        hashes = [block_hash(big[:BLOCK_SIZE]), block_hash(big[BLOCK_SIZE:])]
        init = await remote.upload_init({"path": "/Docs/big.bin", "size": len(big), "blocks": [
            {"order": 0, "hash": hashes[0], "size": BLOCK_SIZE},
            {"order": 1, "hash": hashes[1], "size": 4}]})
        _fits(init, replies.UploadInitReply, "upload-init")
        sent = [await remote.put_block(init["block_url"], h, part)
                for h, part in zip(hashes, (big[:BLOCK_SIZE], big[BLOCK_SIZE:]), strict=True)]
        for r in sent:
            _fits(r, replies.BlockReceipt, "put_block")
        done = await remote.complete(init["file_id"], {"blocks": sent})
        _fits(done, replies.CompleteReply, "complete")
        with pytest.raises(ApiError) as stale:
            await remote.complete(init["file_id"], {"blocks": hashes[::-1], "base_version": 0})
        assert stale.value.code == codes.VERSION_CONFLICT
        _fits(stale.value.body, replies.ErrorDetail | None, "error")  # the "error" object

        small = {f"/Docs/s{i}.txt": f"small {i}".encode() for i in range(3)}
        batch = await remote.upload_init_batch(
            [{"path": p, "size": len(d), "blocks": [{"order": 0, "hash": block_hash(d),
                                                    "size": len(d)}]}
             for p, d in small.items()] + [{"path": "/Shared with me/x", "size": 1}])
        _fits(batch, replies.UploadInitBatchReply, "upload-init/batch")
        assert "error" in batch["results"][-1]
        receipts = await remote.put_batch(batch["batch_url"], frames.encode_batch(
            [(block_hash(d), d) for d in small.values()]))
        for r in receipts:
            _fits(r, replies.BlockReceipt, "put_batch")
        results = await remote.complete_batch(
            [{"file_id": typing.cast(replies.UploadInitResult, res)["file_id"], "blocks": [r]}
             for res, r in zip(batch["results"], receipts, strict=False)]
            + [{"file_id": "no-such-file", "blocks": []}])
        _fits(results, list[replies.CompleteReply | replies.ErrorBody], "complete/batch")
        assert "error" in results[-1]

        info = await remote.download_info(init["file_id"])
        _fits(info, replies.DownloadReply, "download")
        ids = [typing.cast(replies.UploadInitResult, r)["file_id"] for r in batch["results"][:3]]
        got = await remote.content_batch(ids)
        for header, _ in got.values():
            _fits(header, replies.ContentFileHeader, "content/batch")
        async with remote.session.post(f"{server.url}/api/files/content/batch",
                                       json={"files": [{"file_id": "nope"}]},
                                       headers={"Authorization": f"Bearer {remote.token}"}
                                       ) as resp:
            header, _ = await frames.read_content_frame(resp.content.readexactly)
        _fits(header, replies.ContentErrorHeader, "content/batch error")

        # A folder of Bob's shared with Alice puts the virtual /Shared with me in her root.
        theirs = await bob.mkdir("/Theirs")
        share = await bob.call("POST", f"/api/files/{theirs['file_id']}/share",
                               {"user_email": "alice@example.com", "permission": "edit"})
        _fits(share, replies.ShareReply, "share")
        root = await remote.list_folder("/")
        assert any(e.get("virtual") for e in root)
        _fits(root, list[replies.ListedEntry], "list /")
        _fits(await remote.list_folder(f"/{SHARED_ROOT}"), list[replies.ListedEntry],
              "list /Shared with me")
        body = await remote.call("GET", "/api/files", params={"path": "/Docs"})
        _fits(body, replies.ListReply, "list /Docs")

        _fits(await remote.metadata(init["file_id"]), replies.FileMetadata, "metadata")
        _fits(await remote.versions(init["file_id"]), list[replies.VersionInfo], "versions")
        moved = await remote.move(ids[0], "/Docs/moved.txt")
        _fits(moved, replies.PathEntry, "move")
        await remote.delete(ids[1])
        trash = await remote.trash()
        _fits(trash, list[replies.TrashEntry], "trash")
        _fits(await remote.restore_from_trash(ids[1]), replies.PathEntry, "trash restore")
        await remote.complete(init["file_id"], {"blocks": hashes[::-1]})
        _fits(await remote.restore(init["file_id"], 1), replies.RestoreReply, "restore")

        page = await remote.changes("0")
        _fits(page, replies.ChangesReply, "snapshot page")
        while page["has_more"]:
            page = await remote.changes(page["next_cursor"])
            _fits(page, replies.ChangesReply, "snapshot page")
        # Changes by another device (a device is not sent its own), in the shared folder, read
        # one at a time so that compaction keeps each.
        made = await bob.mkdir("/Theirs/New")
        cursor, seen = page["next_cursor"], set()
        for step in (lambda: bob.move(made["file_id"], "/Theirs/Renamed"),
                     lambda: bob.delete(made["file_id"]), None):
            feed = await remote.changes(cursor, 5)
            _fits(feed, replies.ChangesReply, "changes")
            seen |= {c["action"] for c in feed["changes"]}
            cursor = feed["next_cursor"]
            if step is not None:
                await step()
        assert seen == {"create", "move", "delete"}, seen
