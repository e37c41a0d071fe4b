"""Symbolic links: synced as links when their target is relative and stays inside the folder
(never followed), others reported once and left alone, and a link from the server that would
point outside is never created."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from syncclient.engine import Engine
from syncclient.links import symlink_stays_inside
from tests.helpers import RunningServer, upload
from tests.sync_helpers import EMAIL, Device, make_devices, with_engine


def links(d: Device) -> dict[str, str]:
    """Every symlink in the folder: relative path -> target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(d.folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[p.relative_to(d.folder).as_posix()] = os.readlink(p)
    return out


async def test_relative_links_inside_the_folder_sync_as_links(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("reports/v2/report.txt", "the report")
    (a.folder / "reports/latest").symlink_to("v2/report.txt")
    (a.folder / "current").symlink_to("reports/v2")  # a link to a folder: not followed
    await a.sync()
    await b.sync()
    assert links(b) == {"reports/latest": "v2/report.txt", "current": "reports/v2"}
    assert b.read("reports/latest") == b"the report"  # it resolves on B too
    # Not followed: the folder behind "current" is not uploaded twice.
    alice = await srv.login(EMAIL)
    r = await alice.get("/api/files", params={"path": "/"})
    entry = {e["name"]: e for e in r.body["entries"]}["current"]
    assert entry["symlink"] is True and entry["is_directory"] is False
    # A new target on B reaches A; a deletion on A reaches B.
    (b.folder / "reports/latest").unlink()
    (b.folder / "reports/latest").symlink_to("../current/report.txt")
    await b.sync()
    await a.sync()
    assert links(a)["reports/latest"] == "../current/report.txt"
    (a.folder / "current").unlink()
    await a.sync()
    await b.sync()
    assert links(b) == {"reports/latest": "../current/report.txt"}
    assert (b.folder / "reports/v2/report.txt").read_bytes() == b"the report"


async def test_links_that_leave_the_folder_are_reported_once_and_left_alone(
        tmp_path: Path, srv: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("x.txt", "x")
    (a.folder / "passwd").symlink_to("/etc/passwd")
    (a.folder / "up").symlink_to("../outside")
    async def twice(engine: Engine) -> bool:  # as a daemon's rounds: one engine
        first = await engine.sync_once()
        second = await engine.sync_once()
        return first.in_sync and second.in_sync  # a link left alone is not an error

    with caplog.at_level(logging.INFO, logger="syncclient.engine"):
        assert await with_engine(a, twice)
    said = [r.getMessage() for r in caplog.records if "outside the folder" in r.getMessage()]
    assert len(said) == 2, said  # one line for each, not one per round
    await b.sync()
    assert set(b.tree()) == {"x.txt"} and links(b) == {}
    assert links(a) == {"passwd": "/etc/passwd", "up": "../outside"}  # untouched here


async def test_a_setting_turns_symlinks_off(tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    conf = json.loads((a.config_dir / "config.json").read_text())
    conf["sync_symlinks"] = False
    (a.config_dir / "config.json").write_text(json.dumps(conf))
    a.write("x.txt", "x")
    (a.folder / "link").symlink_to("x.txt")
    await a.sync()
    await b.sync()
    assert set(b.tree()) == {"x.txt"} and links(b) == {}


async def test_a_link_from_the_server_pointing_outside_is_never_created(
        tmp_path: Path, srv: RunningServer) -> None:
    """Another client (or someone with write access to a shared folder) stores a link whose
    target climbs out: the device refuses it as a per-file problem; nothing else breaks."""
    (b,) = make_devices(tmp_path, "b")
    await b.init(srv)
    alice = await srv.login(EMAIL)
    made = await upload(alice, "/evil", b"../../../../etc/cron.d/x")
    blocks = (await alice.get(f"/api/files/{made['file_id']}/download")).body["blocks"]
    r = await alice.post(f"/api/files/{made['file_id']}/complete",
                         {"blocks": [x["hash"] for x in blocks], "symlink": True})
    assert r.status == 200, r.body
    await upload(alice, "/fine.txt", b"fine")
    assert await b.cli("run", "--once") == 1  # not in sync: one item could not be created
    assert b.read("fine.txt") == b"fine"
    assert not (b.folder / "evil").exists() and not (b.folder / "evil").is_symlink()
    assert links(b) == {}


async def test_a_folder_deleted_on_the_server_goes_with_its_links(
        tmp_path: Path, srv: RunningServer) -> None:
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("proj/main.c", "int main;")
    (a.folder / "proj/link").symlink_to("main.c")
    await a.sync()
    await b.sync()
    assert links(b) == {"proj/link": "main.c"}
    shutil.rmtree(a.folder / "proj")
    await a.sync()
    await b.sync()
    assert not (b.folder / "proj").exists()


async def as_link(alice: Any, path: str, target: str) -> str:
    """Another client stores a symlink: a file whose content is the target, marked symlink."""
    made = await upload(alice, path, target.encode())
    blocks = (await alice.get(f"/api/files/{made['file_id']}/download")).body["blocks"]
    r = await alice.post(f"/api/files/{made['file_id']}/complete",
                         {"blocks": [x["hash"] for x in blocks], "symlink": True})
    assert r.status == 200, r.body
    return made["file_id"]


def leads_inside(root: Path, link: Path) -> bool:
    real = os.path.realpath(link)
    return real.startswith(os.path.realpath(root) + os.sep)


@pytest.mark.parametrize("target", ["l1/../SECRET", "l1/l1/../../SECRET", "a/./../x"])
def test_a_target_that_climbs_after_a_name_is_refused(target: str) -> None:
    """``x/..`` climbs from wherever ``x`` leads, and ``x`` may be a link (to ``.``)."""
    assert not symlink_stays_inside("/esc", target)
    assert symlink_stays_inside("/a/b/ok", "../x/y") and symlink_stays_inside("/a/ok", "../x")
    assert not symlink_stays_inside("/a/no", "../../x")


async def test_a_chain_of_links_cannot_lead_out(tmp_path: Path, srv: RunningServer) -> None:
    (b,) = make_devices(tmp_path, "b")
    await b.init(srv)
    (tmp_path / "SECRET").write_text("outside the sync folder")
    alice = await srv.login(EMAIL)
    await as_link(alice, "/l1", ".")
    await as_link(alice, "/esc", "l1/../SECRET")
    assert await b.cli("run", "--once") == 1  # one item refused
    assert links(b) == {"l1": "."}
    assert not (b.folder / "esc").is_symlink()


async def test_a_link_through_a_local_link_that_leads_out_is_not_created(
        tmp_path: Path, srv: RunningServer) -> None:
    """``ext`` here is the user's own link to a folder outside (left alone, never synced);
    a link from the server to ``ext/SECRET`` passes the text check but would lead out: the
    check on this disk, just before the link is made, refuses it."""
    (b,) = make_devices(tmp_path, "b")
    await b.init(srv)
    (tmp_path / "outside").mkdir()
    (b.folder / "ext").symlink_to(tmp_path / "outside")
    alice = await srv.login(EMAIL)
    await as_link(alice, "/x", "ext/SECRET")
    assert await b.cli("run", "--once") == 1
    assert links(b) == {"ext": str(tmp_path / "outside")}


async def test_a_move_on_the_server_cannot_make_a_link_lead_out(
        tmp_path: Path, srv: RunningServer) -> None:
    (b,) = make_devices(tmp_path, "b")
    await b.init(srv)
    alice = await srv.login(EMAIL)
    assert (await alice.post("/api/folders", {"path": "/a"})).status == 201
    fid = await as_link(alice, "/a/l", "../x.txt")
    await b.sync()
    assert leads_inside(b.folder, b.folder / "a/l")
    r = await alice.patch(f"/api/files/{fid}", {"path": "/l"})
    assert r.status == 200
    assert await b.cli("run", "--once") == 1  # the move is refused here, and said
    for link in links(b):
        assert leads_inside(b.folder, b.folder / link), link


async def test_a_folder_moved_here_leaves_its_outbound_links_behind(
        tmp_path: Path, srv: RunningServer) -> None:
    """A moves a folder up one level: a link in it would then lead out of the folder. It
    leaves the server (to the trash) before the move, and stays on A only."""
    a, b = make_devices(tmp_path, "a", "b")
    await a.init(srv)
    await b.init(srv)
    a.write("a/b/data.txt", "x")
    (a.folder / "a/b/l").symlink_to("../../data.txt")
    await a.sync()
    await b.sync()
    (a.folder / "a/b").rename(a.folder / "b")
    await a.sync()
    await b.sync()
    assert b.read("b/data.txt") == b"x"
    for link in links(b):
        assert leads_inside(b.folder, b.folder / link), link
    assert links(a) == {"b/l": "../../data.txt"}  # kept on A, as it is


async def test_a_large_file_never_becomes_a_link(srv: RunningServer) -> None:
    """An upload that does not say ``symlink`` makes an ordinary file, so an edit by a client
    that knows nothing of links can neither stay a link nor slip past the size limit."""
    alice = await srv.login(EMAIL)
    await as_link(alice, "/l", "x")
    await upload(alice, "/l", b"A" * 5000, base_version=2)
    r = await alice.get("/api/files", params={"path": "/"})
    assert {x["name"]: x for x in r.body["entries"]}["l"]["symlink"] is False
    made = await upload(alice, "/big", b"B" * 5000)
    blocks = (await alice.get(f"/api/files/{made['file_id']}/download")).body["blocks"]
    r = await alice.post(f"/api/files/{made['file_id']}/complete",
                         {"blocks": [x["hash"] for x in blocks], "symlink": True})
    assert r.status == 400 and r.body["error"]["field"] == "symlink"


async def test_a_link_under_a_folder_named_in_nfd_is_checked_before_a_move(
        tmp_path: Path, srv: RunningServer) -> None:
    """The link was looked for under the NFC spelling of its folder, not found, and let
    through: the move made it lead out of the folder."""
    import unicodedata

    (b,) = make_devices(tmp_path, "b")
    await b.init(srv)
    nfd = unicodedata.normalize("NFD", "\u00e9")
    b.write("data.txt", "x")
    (b.folder / nfd / "b").mkdir(parents=True)
    (b.folder / nfd / "b" / "l").symlink_to("../../data.txt")
    await b.sync()
    alice = await srv.login(EMAIL)
    r = await alice.get("/api/files", params={"path": "/\u00e9"})
    fid = {e["name"]: e for e in r.body["entries"]}["b"]["file_id"]
    assert (await alice.patch(f"/api/files/{fid}", {"path": "/b"})).status == 200
    assert await b.cli("run", "--once") == 1  # refused here, and said
    for link in links(b):
        assert leads_inside(b.folder, b.folder / link), link
