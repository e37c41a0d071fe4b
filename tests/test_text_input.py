"""Text the server stores must be text every backend can store: the fuzzer, run with the servers
on PostgreSQL, sent a device name holding U+0000 (SQLite keeps it; PostgreSQL's text cannot)
and got a 500. Both backends now answer 400, and nothing is stored."""

from __future__ import annotations

import pytest

from tests.helpers import ApiClient, RunningServer


@pytest.mark.parametrize("name", ["laptop\x00", "a\u009cb", "evil\u202etxt.exe"])
async def test_a_device_name_with_control_characters_is_refused(
        server: RunningServer, alice: ApiClient, name: str) -> None:
    r = await alice.post("/api/sync/register", {"device_name": name})
    assert r.status == 400 and r.error_code() == "invalid_field", r
    r = await server.anonymous().post("/api/auth/login", {
        "email": "alice@example.com", "password": "correct horse battery", "device_name": name})
    assert r.status == 400 and r.error_code() == "invalid_field", r
    names = [d["name"] for d in (await alice.get("/api/devices")).body["devices"]]
    assert names == ["alice-laptop"], names


async def test_nul_anywhere_the_database_would_see_it_is_a_400(alice: ApiClient) -> None:
    """Past the fields that check their characters, a NUL still never reaches a statement as
    a 500 (on PostgreSQL the backend refuses it before the statement; SQLite stores it)."""
    r = await alice.get("/api/search", params={"q": "abc\x00def"})
    assert r.status in (200, 400), r
    if r.status == 400:
        assert r.error_code() in ("invalid_field", "invalid_query"), r
    r = await alice.post("/api/auth/login", {"email": "al\x00ice@example.com",
                                             "password": "correct horse battery"})
    assert r.status in (400, 401), r
