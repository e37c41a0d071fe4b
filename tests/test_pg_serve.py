"""``drive-server`` on PostgreSQL, as an administrator runs it: the URL in the config file or in
``DRIVE_DATABASE_URL``, the real command in a subprocess, a file uploaded and downloaded
through it, and nothing of the metadata in the data directory (no SQLite file is made)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from driveserver.meta.migrations import MIGRATIONS
from tests.test_cli import Serve, drive_server

PASSWORD = "a long password"


def _login(url: str, email: str) -> str:
    req = urllib.request.Request(url + "/api/auth/login", method="POST",
                                 data=json.dumps({"email": email, "password": PASSWORD}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        token: str = json.loads(resp.read())["token"]
        return token


async def _round_trip(url: str, token: str, data: bytes) -> bytes:
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=auth) as s:
        async def post(path: str, body: Any) -> Any:
            async with s.post(url + path, json=body) as r:
                assert r.status == 200, await r.text()
                return await r.json()

        init = await post("/api/files/upload-init", {"path": "/hello.txt", "size": len(data)})
        async with s.post(init["upload_url"], data=data) as r:
            assert r.status == 200, await r.text()
            blocks = (await r.json())["blocks"]
        done = await post(f"/api/files/{init['file_id']}/complete", {"blocks": blocks})
        assert done["version"] == 1
        async with s.get(f"{url}/api/files/{init['file_id']}/download") as r:
            assert r.status == 200
            plan = await r.json()
        out = b""
        for block in plan["blocks"]:
            async with s.get(block["url"]) as r:
                assert r.status == 200
                out += await r.read()
        return out


async def test_serve_with_the_url_in_the_config_file(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "d"
    config = tmp_path / "drive.toml"
    config.write_text(f'[database]\nurl = "{pg_url}"\n')
    r = drive_server("user", "add", "pg@example.com", "--password-stdin", "--config",
                     str(config), "--data-dir", str(data), stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    srv = Serve("--config", str(config), "--data-dir", str(data))
    try:
        token = _login(srv.url, "pg@example.com")
        payload = os.urandom(300_000)
        assert await _round_trip(srv.url, token, payload) == payload
    finally:
        assert srv.stop() == 0
    assert not (data / "meta.sqlite3").exists()
    r = drive_server("check", "--config", str(config), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    assert "database ok (postgresql://postgres@" in r.stdout and f"schema {len(MIGRATIONS)}" in r.stdout


def test_the_environment_variable_names_the_database(tmp_path: Path, pg_url: str) -> None:
    data = str(tmp_path / "d")
    env = {"DRIVE_DATABASE_URL": pg_url}
    r = drive_server("user", "add", "env@example.com", "--password-stdin", "--data-dir", data,
                     stdin=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    r = drive_server("user", "list", "--data-dir", data, env=env)
    assert r.returncode == 0 and "env@example.com" in r.stdout
    # The same data directory without the variable is a SQLite install of its own: empty.
    r = drive_server("user", "list", "--data-dir", data)
    assert r.returncode == 0 and "env@example.com" not in r.stdout


def test_a_bad_url_is_one_clear_line(tmp_path: Path) -> None:
    r = drive_server("check", "--data-dir", str(tmp_path / "d"),
                     env={"DRIVE_DATABASE_URL": "mysql://nope"})
    assert r.returncode != 0
    assert "database.url" in r.stderr and "postgresql://" in r.stderr

