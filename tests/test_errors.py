"""Bad input: every error is JSON {"error": {code, message}} with the right status, never a 500,
and leaves nothing half-written."""

from __future__ import annotations

import io
import json

import pytest

from tests.helpers import ApiClient, RunningServer

LONG_NAME = "n" * 256
LONG_PATH = "/" + "/".join(["d" * 200] * 21)  # > 4096 bytes


def assert_error(r, status: int, code: str | None = None) -> None:
    assert r.status == status, r
    assert isinstance(r.body, dict) and set(r.body) == {"error"}, r.body
    err = r.body["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    if code:
        assert err["code"] == code, err


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b'{"path": 5}', "invalid_field"),
    (b'{"path": null}', "missing_field"),
    (b"{}", "missing_field"),
    (b'{"path": "relative/x"}', "invalid_path"),
    (b'{"path": "/a/../b"}', "invalid_name"),
    (b'{"path": "/a/./b"}', "invalid_name"),
    (b'{"path": "/a//b"}', "invalid_name"),
    (b'{"path": "/a\\u0000b"}', "invalid_path"),
    (b'{"path": "/bell\\u0007"}', "invalid_name"),
    (json.dumps({"path": "/" + LONG_NAME}).encode(), "name_too_long"),
    (json.dumps({"path": LONG_PATH}).encode(), "path_too_long"),
])
async def test_create_folder_bad_input(alice: ApiClient, raw: bytes, code: str) -> None:
    r = await alice.call("POST", "/api/folders", data=raw,
                         headers={"Content-Type": "application/json"})
    assert_error(r, 400, code)
    assert await alice.listdir("/") == []  # nothing half-written


async def test_name_of_255_bytes_is_fine_256_is_not(alice: ApiClient) -> None:
    ok = "é" * 127 + "x"  # 255 bytes in UTF-8
    assert (await alice.post("/api/folders", {"path": "/" + ok})).status == 201
    r = await alice.post("/api/folders", {"path": "/" + "é" * 128})
    assert_error(r, 400, "name_too_long")


@pytest.mark.parametrize("body", [{"path": 7}, {"path": ""}, {"path": "/x/../y"}, {},
                                  {"path": ["a"]}])
async def test_move_bad_input(alice: ApiClient, body: dict) -> None:
    made = await alice.mkdir("/m")
    r = await alice.patch(f"/api/files/{made['file_id']}", body)
    assert_error(r, 400)
    assert await alice.listdir("/") == ["m"]


async def test_wrong_types_in_login(server: RunningServer) -> None:
    anon = server.anonymous()
    for body in ({"email": ["a"], "password": "x"}, {"email": "a@b.c", "password": 12345678},
                 {"email": "a@b.c", "password": True}):
        assert_error(await anon.post("/api/auth/login", body), 400)


async def test_list_with_bad_query(alice: ApiClient) -> None:
    assert_error(await alice.get("/api/files", params={"path": "/", "limit": "ten"}), 400)
    assert_error(await alice.get("/api/files", params={"path": "/", "cursor": "%%%"}), 400)
    assert_error(await alice.get("/api/files", params={"path": "no-slash"}), 400)


async def test_unknown_route_and_method_are_json(alice: ApiClient) -> None:
    assert_error(await alice.get("/api/nope"), 404, "not_found")
    assert_error(await alice.call("PUT", "/api/folders"), 405, "method_not_allowed")


async def test_too_large_json_is_413(alice: ApiClient, server: RunningServer) -> None:
    big = b'{"path": "/' + b"x" * (server.config.max_json_bytes + 10) + b'"}'
    r = await alice.call("POST", "/api/folders", data=io.BytesIO(big),
                         headers={"Content-Type": "application/json"})
    assert_error(r, 413, "too_large")


async def test_error_statuses_401_404_409(alice: ApiClient, server: RunningServer) -> None:
    assert_error(await server.anonymous().get("/api/quota"), 401, "unauthorized")
    assert_error(await alice.get("/api/files/f_missing"), 404, "not_found")
    await alice.mkdir("/dup")
    assert_error(await alice.post("/api/folders", {"path": "/DUP"}), 409, "exists")


async def test_folder_over_a_file_path_component(alice: ApiClient) -> None:
    # A path whose middle component is not a folder cannot be listed.
    r = await alice.get("/api/files", params={"path": "/missing/child"})
    assert_error(r, 404)


async def test_lone_surrogates_are_a_400_not_a_500(alice: ApiClient, server: RunningServer
                                                   ) -> None:
    body = b'{"path": "/bad\\ud800name"}'
    r = await alice.call("POST", "/api/folders", data=body,
                         headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")
    r = await server.anonymous().call("POST", "/api/auth/login",
                                      data=b'{"email": "\\udfff@x.y", "password": "12345678"}')
    assert_error(r, 400, "invalid_json")


async def test_huge_version_numbers_are_404(alice: ApiClient) -> None:
    from tests.helpers import upload

    done = await upload(alice, "/v.txt", b"v")
    huge = "9" * 30
    assert_error(await alice.get(f"/api/files/{done['file_id']}/content",
                                 params={"version": huge}), 404)
    assert_error(await alice.post(f"/api/files/{done['file_id']}/restore/{huge}"), 404)
