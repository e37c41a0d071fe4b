"""Unit tests of the executor (``syncclient.executor``, ``up``, ``down``) against a fake server.

The end-to-end tests (``test_sync_e2e.py`` and the others) run the real server; here the server
is :class:`FakeServer`, an in-memory implementation of ``remote_api.RemoteApi``, so each rule of
the failure policy is shown on its own: which answers are recorded as a file's problem, which
defer an operation to the next round, which end the round, and what a refusal turns into.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from syncclient.config import MARKER, Config
from syncclient.context import SyncContext
from syncclient.errors import ApiError, Offline
from syncclient.executor import HANDLERS, execute
from syncclient.localtree import LocalFile, Scan
from syncclient.planner import OP_KINDS, Node, Op, OpKind
from syncclient.remote_api import RemoteApi
from syncclient.state import State, SyncedEntry


class FakeServer:
    """The tree routes of the server, in memory. ``refuse[file_id]`` is an ``ApiError`` (or
    ``Offline``) raised by any change to that item; every call is logged in ``calls``."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}  # file id -> listing entry
        self.refuse: dict[str, Exception] = {}
        self.calls: list[tuple[str, str]] = []
        self._ids = iter(range(1, 10**6))

    def add(self, path: str, is_dir: bool = True) -> str:
        file_id = f"f{next(self._ids)}"
        self.items[file_id] = {"file_id": file_id, "path": path, "name": path.rpartition("/")[2],
                               "is_directory": is_dir, "version": 1}
        return file_id

    def _at(self, path: str) -> dict[str, Any] | None:
        return next((e for e in self.items.values() if e["path"] == path), None)

    def _check(self, file_id: str) -> dict[str, Any]:
        if file_id in self.refuse:
            raise self.refuse[file_id]
        if file_id not in self.items:
            raise ApiError(404, "not_found", "no such file")
        return self.items[file_id]

    async def changes(self, cursor: str, wait_seconds: float = 0) -> dict[str, Any]:
        return {"changes": [], "next_cursor": cursor, "has_more": False}

    async def mkdir(self, path: str) -> dict[str, Any]:
        self.calls.append(("mkdir", path))
        if self._at(path) is not None:
            raise ApiError(409, "exists", f"{path} exists")
        return self.items[self.add(path)]

    async def move(self, file_id: str, path: str) -> dict[str, Any]:
        self.calls.append(("move", path))
        entry = self._check(file_id)
        entry.update(path=path, name=path.rpartition("/")[2], version=entry["version"] + 1)
        return entry

    async def delete(self, file_id: str) -> None:
        self.calls.append(("delete", file_id))
        self._check(file_id)
        del self.items[file_id]

    async def list_folder(self, path: str) -> list[dict[str, Any]]:
        prefix = "" if path == "/" else path
        return [e for e in self.items.values() if e["path"].rpartition("/")[0] == prefix]

    async def metadata(self, file_id: str) -> dict[str, Any]:
        return self._check(file_id)

    async def _no_content(self, *args: Any) -> Any:
        raise AssertionError("no content route is used by these tests")

    upload_init = upload_init_batch = complete = complete_batch = download_info = _no_content
    content = content_batch = put_block = put_batch = get_block = _no_content


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[SyncContext]:
    root = tmp_path / "folder"
    (root / MARKER).mkdir(parents=True)
    state = State(tmp_path / "state.db")
    server: RemoteApi = FakeServer()
    yield SyncContext(Config("http://fake", "a@example.com", str(root), "laptop"), state, server)
    state.close()


def fake(ctx: SyncContext) -> FakeServer:
    assert isinstance(ctx.remote, FakeServer)
    return ctx.remote


def folder_here(ctx: SyncContext, path: str) -> LocalFile:
    target = ctx.root / path.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    st = target.stat()
    return LocalFile(True, 0, st.st_mtime_ns, st.st_ino, None, ())


def synced_folder(ctx: SyncContext, path: str, file_id: str) -> None:
    ctx.state.put_remote(path, Node(True, None, file_id, 1))
    ctx.state.put_synced(SyncedEntry(path, True, file_id, 1, 0, 0, None, None, ()))


def test_every_operation_kind_has_one_handler() -> None:
    """The dispatch table and the planner's Literal name the same kinds: a kind cannot be
    planned that nothing carries out."""
    assert set(HANDLERS) == set(OP_KINDS) == set(get_args(OpKind))
    assert len(OP_KINDS) == len(set(OP_KINDS))


async def test_a_new_folder_is_made_on_the_server_and_recorded(ctx: SyncContext) -> None:
    local = Scan(items={"/docs": folder_here(ctx, "/docs")})
    out = await execute(ctx, [Op("mkdir_remote", "/docs", "new in the folder")], local)
    assert [op.path for op in out.ops] == ["/docs"] and not out.errors
    remote, synced = ctx.state.remote_by_path("/docs"), ctx.state.synced_entries()["/docs"]
    assert remote is not None and remote.is_dir and remote.file_id == synced.file_id
    assert synced.inode == local.items["/docs"].inode


async def test_a_folder_the_server_has_already_is_recorded_not_an_error(ctx: SyncContext) -> None:
    """A 409 on mkdir: another device made it meanwhile. The folder there is this one."""
    file_id = fake(ctx).add("/docs")
    local = Scan(items={"/docs": folder_here(ctx, "/docs")})
    out = await execute(ctx, [Op("mkdir_remote", "/docs", "new in the folder")], local)
    assert not out.errors and ctx.state.synced_entries()["/docs"].file_id == file_id


async def test_a_file_where_a_folder_should_be_made_is_the_files_problem(
        ctx: SyncContext) -> None:
    fake(ctx).add("/docs", is_dir=False)
    local = Scan(items={"/docs": folder_here(ctx, "/docs"), "/b": folder_here(ctx, "/b")})
    out = await execute(ctx, [Op("mkdir_remote", "/docs", "new"), Op("mkdir_remote", "/b", "new")],
                        local)
    assert list(out.errors) == ["/docs"] and "409" in out.errors["/docs"]
    assert [p for p, _ in ctx.state.errors()] == ["/docs"]
    assert [op.path for op in out.ops] == ["/b"]  # the round went on
    assert "/docs" not in ctx.state.synced_entries()


async def test_deleting_what_the_server_no_longer_has_is_done(ctx: SyncContext) -> None:
    synced_folder(ctx, "/old", "gone-already")
    out = await execute(ctx, [Op("delete_remote", "/old", "deleted in the folder")], Scan())
    assert [op.path for op in out.ops] == ["/old"] and not out.errors
    assert ctx.state.remote_by_path("/old") is None and "/old" not in ctx.state.synced_entries()


async def test_a_view_only_item_deleted_here_comes_back_with_a_notice(ctx: SyncContext) -> None:
    """A 403 on delete or move: the server keeps it, so its record goes and the next round
    downloads it again; the user is told why."""
    server = fake(ctx)
    kept = server.add("/Shared with me/X/a")
    moved = server.add("/Shared with me/X/b")
    server.refuse[kept] = server.refuse[moved] = ApiError(403, "forbidden", "view only")
    synced_folder(ctx, "/Shared with me/X/a", kept)
    synced_folder(ctx, "/Shared with me/X/b", moved)
    ops = [Op("delete_remote", "/Shared with me/X/a", "deleted in the folder"),
           Op("move_remote", "/Shared with me/X/c", "moved", src="/Shared with me/X/b")]
    out = await execute(ctx, ops, Scan())
    assert out.ops == ops and not out.errors
    assert not ctx.state.synced_entries()
    assert ctx.state.remote_by_path("/Shared with me/X/a") is not None  # still on the server
    notices = ctx.state.notices()
    assert set(notices) == {"/Shared with me/X/a", "/Shared with me/X/b"}
    assert all("view only" in m for m in notices.values())


async def test_an_item_changed_here_since_the_scan_is_left_for_the_next_round(
        ctx: SyncContext) -> None:
    """A deletion from the server, but the user saved the file after the scan: not deleted,
    not an error, the record kept (the next round uploads the edit)."""
    path = ctx.root / "notes.txt"
    path.write_text("as scanned")
    st = path.stat()
    seen = LocalFile(False, st.st_size, st.st_mtime_ns, st.st_ino, "c-old", ())
    ctx.state.put_synced(SyncedEntry("/notes.txt", False, "f9", 1, st.st_size, st.st_mtime_ns,
                                     st.st_ino, "c-old", ()))
    path.write_text("saved after the scan")
    out = await execute(ctx, [Op("delete_local", "/notes.txt", "deleted on the server")],
                        Scan(items={"/notes.txt": seen}))
    assert [op.path for op in out.ops] == ["/notes.txt"] and not out.errors
    assert path.read_text() == "saved after the scan"
    assert "/notes.txt" in ctx.state.synced_entries()


async def test_losing_the_server_ends_the_round(ctx: SyncContext) -> None:
    server = fake(ctx)
    file_id = server.add("/old")
    server.refuse[file_id] = Offline("cannot reach the server")
    synced_folder(ctx, "/old", file_id)
    local = Scan(items={"/new": folder_here(ctx, "/new")})
    with pytest.raises(Offline):
        await execute(ctx, [Op("delete_remote", "/old", "deleted"),
                            Op("mkdir_remote", "/new", "new")], local)
    assert ("mkdir", "/new") not in server.calls  # nothing after it ran
    assert "/old" in ctx.state.synced_entries()  # nor was anything recorded as done


async def test_forget_drops_the_whole_record_below(ctx: SyncContext) -> None:
    """The rewrite's ``forget`` of a mount no longer shared takes every record under it."""
    synced_folder(ctx, "/Shared with me/X", "m1")
    synced_folder(ctx, "/Shared with me/X/sub", "m2")
    out = await execute(ctx, [Op("forget", "/Shared with me/X", "no longer shared")], Scan())
    assert len(out.ops) == 1 and not ctx.state.synced_entries()
    assert fake(ctx).calls == []  # nothing asked of the server


async def test_new_folders_are_made_a_level_at_a_time_several_at_once(
        ctx: SyncContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred new sibling folders are not a hundred round trips in a row: siblings are
    made several at once, and a folder only once its parent is there."""
    server = fake(ctx)
    real_mkdir = server.mkdir
    active, most = 0, 0

    async def slow_mkdir(path: str) -> dict[str, Any]:
        nonlocal active, most
        parent = path.rpartition("/")[0]
        assert not parent or server._at(parent) is not None, f"{path} before its parent"
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.01)
        active -= 1
        return await real_mkdir(path)

    monkeypatch.setattr(server, "mkdir", slow_mkdir)
    paths = ["/top", *(f"/top/d{i}" for i in range(30)), "/top/d3/inner", "/other"]
    local = Scan(items={p: folder_here(ctx, p) for p in paths})
    out = await execute(ctx, [Op("mkdir_remote", p, "new in the folder") for p in paths], local)
    assert not out.errors and sorted(op.path for op in out.ops) == sorted(paths)
    assert set(ctx.state.synced_entries()) == set(paths)
    assert 1 < most <= 8
