"""The client's address behind a reverse proxy (driveserver/forwarded.py): X-Forwarded-For is
believed only from the proxies the configuration trusts, and read from its right end, so the
per-address login back-off tells clients behind one nginx apart, and no client can choose its
own address."""

from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path

import pytest

from driveserver.config import ConfigError, load_config
from driveserver.forwarded import client_address, parse_networks
from tests.helpers import RunningServer, start_server, wait_for

NGINX = parse_networks("127.0.0.1, 10.0.0.0/8, ::1")


@pytest.mark.parametrize(("peer", "header", "client"), [
    ("127.0.0.1", "203.0.113.5", "203.0.113.5"),  # nginx on this machine, one hop
    ("127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5"),  # the left one is the client's say
    ("127.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),  # two trusted proxies in a row
    ("127.0.0.1", "2001:db8::7", "2001:db8::7"),
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),  # unreadable: the proxy's own address
    ("127.0.0.1", "203.0.113.5, bogus", "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", None, "127.0.0.1"),
    ("10.0.0.9", "10.0.0.8, 10.0.0.7", "10.0.0.8"),  # all trusted: the farthest one known
    ("192.0.2.50", "203.0.113.5", "192.0.2.50"),  # not from a trusted proxy: header ignored
    ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),  # nginx seen by a socket bound to ::
    ("127.0.0.1", "::ffff:203.0.113.5", "203.0.113.5"),
])
def test_the_client_is_the_first_untrusted_hop_from_the_right(
        peer: str, header: str | None, client: str) -> None:
    assert client_address(peer, header, NGINX) == client


def test_no_trusted_proxies_means_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", "203.0.113.5", ()) == "127.0.0.1"


def test_a_hundred_hops_are_not_walked() -> None:
    header = ", ".join(["10.0.0.1"] * 100 + ["10.0.0.2"])
    assert client_address("127.0.0.1", header, NGINX) == "10.0.0.1"
    assert ipaddress.ip_address(client_address("127.0.0.1", header, NGINX) or "")


def test_a_bad_network_in_the_config_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies.*not-a-net"):
        load_config(None, env={"DRIVE_SERVER_TRUSTED_PROXIES": "127.0.0.1, not-a-net"},
                    overrides={"data_dir": tmp_path})


async def _guess(server: RunningServer, email: str, client: str) -> int:
    r = await server.anonymous().post("/api/auth/login", {"email": email,
                                                          "password": "not the password"},
                                      headers={"X-Forwarded-For": client})
    return r.status


async def test_behind_a_trusted_proxy_each_client_has_its_own_back_off(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", trusted_proxies="127.0.0.1")
    try:
        # One guesser behind the proxy: three free failures (one account each, so only the
        # address key counts), then it waits.
        assert [await _guess(srv, f"u{i}@example.com", "203.0.113.5") for i in range(4)] == \
            [401, 401, 401, 429]
        # Another client behind the same proxy is not slowed down by it.
        assert await _guess(srv, "someone@example.com", "198.51.100.7") == 401
        # And the guesser cannot shed its back-off by claiming another address: the proxy
        # appends the real one at the right end, which is what is read.
        assert await _guess(srv, "other@example.com", "198.51.100.9, 203.0.113.5") == 429
    finally:
        await srv.stop()


async def test_without_trusted_proxies_the_header_changes_nothing(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data")
    try:
        assert [await _guess(srv, f"u{i}@example.com", f"203.0.113.{i}") for i in range(4)] == \
            [401, 401, 401, 429]  # all one address, whatever the header says
    finally:
        await srv.stop()


async def test_the_access_log_names_the_client_and_still_the_user(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = await start_server(tmp_path / "data", trusted_proxies="127.0.0.1")
    try:
        await srv.register("logged@example.com")
        client = await srv.login("logged@example.com", device="d")
        with caplog.at_level(logging.INFO, logger="driveserver.access"):
            r = await client.get("/api/files", params={"path": "/"},
                                 headers={"X-Forwarded-For": "203.0.113.77"})
            assert r.status == 200
            await wait_for(lambda: any('"/api/files"' in m for m in caplog.messages),
                           what="the access log line")
        [line] = [json.loads(m) for m in caplog.messages if '"/api/files"' in m]
        assert line["remote"] == "203.0.113.77" and line["user"] == client.user_id, line
    finally:
        await srv.stop()
