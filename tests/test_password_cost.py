"""The scrypt cost of password hashes (``accounts.password_hash_cost``).

The test servers of tests/helpers.py hash at 2**10 to keep the suite fast; these tests pin down
what real installations get: 2**14 by default, the cost written into each hash, and a hash made
at one cost still checked after the setting changes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from driveserver import appkeys
from driveserver.config import Config, ConfigError, load_config
from tests.helpers import PASSWORD, start_server


def test_the_default_cost_is_2_to_the_14() -> None:
    assert Config().password_hash_cost == 14
    assert load_config(env={}).password_hash_cost == 14
    assert load_config(env={"DRIVE_ACCOUNTS_PASSWORD_HASH_COST": "16"}).password_hash_cost == 16


@pytest.mark.parametrize("cost", ["9", "18"])
def test_a_cost_out_of_range_is_refused(cost: str) -> None:
    with pytest.raises(ConfigError, match="password_hash_cost.*from 10 to 17"):
        load_config(env={"DRIVE_ACCOUNTS_PASSWORD_HASH_COST": cost})


async def _stored_hash(srv: object, email: str) -> str:
    db = srv.app[appkeys.DB]  # type: ignore[attr-defined]
    row = await db.fetchone("SELECT password_hash FROM users WHERE email = ?", (email,))
    assert row is not None
    return str(row["password_hash"])


async def test_a_server_on_the_default_hashes_at_2_to_the_14(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", password_hash_cost=14)
    try:
        await srv.register("real@example.com")
        assert (await _stored_hash(srv, "real@example.com")).startswith("scrypt$16384$8$1$")
        await srv.login("real@example.com")
    finally:
        await srv.stop()


async def test_each_hash_is_checked_at_its_own_cost_and_a_new_password_takes_the_new_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="driveserver"):
        srv = await start_server(tmp_path / "data", password_hash_cost=10)
    assert any("password_hash_cost = 10" in r.getMessage() for r in caplog.records)
    try:
        await srv.register("cheap@example.com")
        assert (await _stored_hash(srv, "cheap@example.com")).startswith("scrypt$1024$")
    finally:
        await srv.stop()
    srv = await start_server(tmp_path / "data", password_hash_cost=12)
    try:
        client = await srv.login("cheap@example.com")  # made at 2**10, checked at 2**10
        r = await client.post("/api/auth/password", {"old_password": PASSWORD,
                                                     "new_password": "another long password"})
        assert r.status == 204, r
        assert (await _stored_hash(srv, "cheap@example.com")).startswith("scrypt$4096$")
        await srv.login("cheap@example.com", "another long password")
    finally:
        await srv.stop()
