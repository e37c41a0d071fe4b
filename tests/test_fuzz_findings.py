"""Regression tests for what fuzzing the API found (tests/test_fuzz.py, scripts/fuzz.py), one
per finding, each naming the request that got a 5xx before its fix."""

from __future__ import annotations

from tests.helpers import ApiClient


async def test_a_link_expiry_at_the_edge_of_the_calendar_is_a_400_not_a_500(
        alice: ApiClient) -> None:
    """``expires_at`` of 0001-01-01 ahead of UTC, or 9999-12-31 behind it, cannot be
    converted to UTC (OverflowError): it was a 500 ``internal_error``; it is the same 400 as
    any other expiry outside 1970–9999, and no link is made."""
    folder = await alice.mkdir("/Edge")
    for raw in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59.999999-00:01", "0001-01-01T00:00:00+00:01"):
        r = await alice.post(f"/api/files/{folder['file_id']}/links", {"expires_at": raw})
        assert r.status == 400, (raw, r)
        assert r.body["error"]["code"] == "invalid_field", r
        assert r.body["error"]["field"] == "expires_at", r
    listed = await alice.get(f"/api/files/{folder['file_id']}/links")
    assert listed.status == 200 and listed.body["links"] == []
    ok = await alice.post(f"/api/files/{folder['file_id']}/links",
                          {"expires_at": "9998-06-30T12:00:00-14:00"})
    assert ok.status == 201, ok
