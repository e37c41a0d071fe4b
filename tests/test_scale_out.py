"""Two ``drive-server`` processes behind nginx over one PostgreSQL database and one data
directory (issue 18): any request may land on either process, and what one commits, the other
serves and announces. Real parts: the real command in two subprocesses, Debian's nginx, a
throwaway PostgreSQL cluster, real ``drive-sync`` daemons."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import METRICS_AUTH, METRICS_TOKEN, PASSWORD, wait_for
from tests.nginx_proxy import Nginx, free_port
from tests.sync_helpers import EMAIL, make_devices
from tests.test_cli import Serve, drive_server

WRITERS = 20


@dataclass
class Deployment:
    nginx: Nginx
    servers: list[Serve]

    @property
    def url(self) -> str:  # what clients are given: the proxy (Device.init reads .url)
        return self.nginx.url

    def requests_by_process(self, route: str) -> list[int]:
        """How many requests of ``route`` each process answered (from its access log)."""
        counts = []
        for srv in self.servers:
            n = 0
            for line in list(srv.log):
                if "driveserver.access" in line and f'"route": "{route}"' in line:
                    n += 1
            counts.append(n)
        return counts


@pytest.fixture
def deployment(tmp_path: Path, pg_url: str) -> Iterator[Deployment]:
    port = free_port()
    config = tmp_path / "drive.toml"
    config.write_text(f'[server]\npublic_url = "http://127.0.0.1:{port}"\n'
                      'trusted_proxies = "127.0.0.1"\n'
                      f'[database]\nurl = "{pg_url}"\n'
                      # Every connection comes from nginx's address (docs/scale-out.md).
                      "[limits]\nmax_connections_per_client = 0\n"
                      f'[metrics]\ntoken = "{METRICS_TOKEN}"\n')
    data = tmp_path / "data"
    r = drive_server("user", "add", EMAIL, "--password-stdin", "--config", str(config),
                     "--data-dir", str(data), stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    servers: list[Serve] = []
    nginx = None
    try:
        for _ in range(2):
            servers.append(Serve("--config", str(config), "--data-dir", str(data)))
        nginx = Nginx(tmp_path / "nginx", [s.url.removeprefix("http://") for s in servers],
                      port=port)
        yield Deployment(nginx, servers)
    finally:
        if nginx is not None:
            nginx.stop()
        for srv in servers:
            srv.stop()


async def _login(session: aiohttp.ClientSession, url: str, device: str) -> dict[str, str]:
    async with session.post(url + "/api/auth/login", json={
            "email": EMAIL, "password": PASSWORD, "device_name": device,
            "new_device": True}) as r:
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def test_two_daemons_behind_the_proxy_see_each_others_changes(
        tmp_path: Path, deployment: Deployment) -> None:
    a, b = make_devices(tmp_path, "laptop", "desktop")
    await a.init(deployment)  # type: ignore[arg-type]  (it needs only .url)
    await b.init(deployment)  # type: ignore[arg-type]
    a.start_daemon(tmp_path / "a.log")
    b.start_daemon(tmp_path / "b.log")
    try:
        took = []
        for i, (src, dst) in enumerate([(a, b), (b, a), (a, b)]):
            start = time.monotonic()
            src.write(f"note-{i}.txt", f"from {src.name} #{i}")
            await wait_for(lambda d=dst, i=i, s=src: (d.folder / f"note-{i}.txt").exists()
                           and d.read(f"note-{i}.txt") == f"from {s.name} #{i}".encode(),
                           within=30, what=f"note-{i} on {dst.name}")
            took.append(time.monotonic() - start)
    finally:
        a.stop_daemon()
        b.stop_daemon()
    print("propagation through nginx and two processes: "
          + ", ".join(f"{t:.2f} s" for t in took))
    # Both processes served the daemons' long polls and uploads: neither is idle.
    polls = deployment.requests_by_process("/api/sync/changes")
    assert all(n > 0 for n in polls), polls
    assert max(took) < 15, took


async def test_twenty_writers_through_both_processes_one_winner_nothing_lost(
        deployment: Deployment) -> None:
    url = deployment.url
    async with aiohttp.ClientSession() as s:
        auths = [await _login(s, url, f"writer-{i}") for i in range(WRITERS)]

        async def init(auth: dict[str, str], path: str, data: bytes, base: int | None) -> Any:
            body: dict[str, Any] = {"path": path, "size": len(data)}
            if base is not None:
                body["base_version"] = base
            async with s.post(url + "/api/files/upload-init", json=body, headers=auth) as r:
                assert r.status == 200, await r.text()
                init = await r.json()
            async with s.post(init["upload_url"], data=data) as r:
                assert r.status == 200, await r.text()
                return init["file_id"], (await r.json())["blocks"]

        async def complete(auth: dict[str, str], file_id: str, blocks: Any,
                           base: int | None) -> tuple[int, dict[str, Any]]:
            body: dict[str, Any] = {"blocks": blocks}
            if base is not None:
                body["base_version"] = base
            async with s.post(f"{url}/api/files/{file_id}/complete", json=body,
                              headers=auth) as r:
                return r.status, await r.json()

        file_id, blocks = await init(auths[0], "/race.txt", b"the first version", None)
        assert (await complete(auths[0], file_id, blocks, None))[0] == 200
        contents = [f"writer {i} was here".encode() for i in range(WRITERS)]
        prepared = [await init(auth, "/race.txt", data, 1)
                    for auth, data in zip(auths, contents, strict=True)]
        go = asyncio.Event()

        async def commit(i: int) -> tuple[int, dict[str, Any]]:
            await go.wait()
            return await complete(auths[i], prepared[i][0], prepared[i][1], 1)

        racing = [asyncio.create_task(commit(i)) for i in range(WRITERS)]
        await asyncio.sleep(0)  # every task waits on the event
        go.set()
        results = await asyncio.gather(*racing)
        winners = [i for i, (status, _) in enumerate(results) if status == 200]
        assert len(winners) == 1, results
        assert all(status == 409 and body["error"]["code"] == "version_conflict"
                   for i, (status, body) in enumerate(results) if i not in winners), results
        # Each loser keeps its edit as a conflicted copy, as drive-sync does.
        for i, (status, _) in enumerate(results):
            if status == 409:
                copy_id, copy_blocks = await init(
                    auths[i], f"/race (conflicted copy writer-{i}).txt", contents[i], None)
                assert (await complete(auths[i], copy_id, copy_blocks, None))[0] == 200
        # Nothing lost: every writer's content is on the server, read through the proxy.
        async with s.get(url + "/api/files", params={"path": "/"}, headers=auths[0]) as r:
            assert r.status == 200, await r.text()
            listing = await r.json()
        found = set()
        for entry in listing["entries"]:
            async with s.get(f"{url}/api/files/{entry['file_id']}/content",
                             headers=auths[0]) as r:
                assert r.status == 200
                found.add(await r.read())
        assert found == set(contents), sorted(found)
    completes = deployment.requests_by_process("/api/files/{file_id}/complete")
    assert all(n > 0 for n in completes), completes  # the race ran on both processes


async def _open_polls(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url + "/metrics", headers=METRICS_AUTH) as r:
        m = re.search(r"^drive_longpoll_open ([0-9.]+)$", await r.text(), re.M)
    return m is not None and float(m.group(1)) >= 1


async def test_a_long_poll_on_one_process_wakes_for_a_commit_on_the_other(
        deployment: Deployment) -> None:
    first, second = (srv.url for srv in deployment.servers)
    async with aiohttp.ClientSession() as s:
        writer = await _login(s, first, "phone")
        reader = await _login(s, second, "laptop")
        async with s.get(second + "/api/sync/cursor", headers=reader) as r:
            cursor = (await r.json())["cursor"]
        latencies = []
        for i in range(3):
            async def poll(c: str = cursor) -> tuple[dict[str, Any], float]:
                async with s.get(second + "/api/sync/changes", headers=reader,
                                 params={"cursor": c, "timeout": "30"}) as r:
                    assert r.status == 200, await r.text()
                    return await r.json(), time.monotonic()
            waiting = asyncio.create_task(poll())
            await wait_for(lambda: _open_polls(s, second), what="the poll to wait on process 2")
            started = time.monotonic()
            async with s.post(first + "/api/folders", json={"path": f"/poll-{i}"},
                              headers=writer) as r:
                assert r.status == 201, await r.text()
            body, answered = await waiting
            assert [c["path"] for c in body["changes"]] == [f"/poll-{i}"], body
            latencies.append(answered - started)
            cursor = body["next_cursor"]
    print("commit on process 1 to answer on process 2: "
          + ", ".join(f"{x * 1000:.0f} ms" for x in latencies))
    assert max(latencies) < 5 and sorted(latencies)[1] < 0.5, latencies
