"""Regression tests for the outside security probe (issue 12); each name says its finding.

The concurrency ones really race: hundreds of requests on their own sockets at once."""

from __future__ import annotations

import asyncio
import math
import random
import time

import aiohttp
import pytest

from tests.helpers import PASSWORD, ApiClient, RunningServer, count_inflated, upload

WRONG = "not the password, surely"


def allowed(seconds: float) -> int:
    """How many password checks the back-off lets through in a burst lasting ``seconds``: the
    3 free ones, then one per doubling period (1 s, 2 s, 4 s...)."""
    return 3 + 1 + int(math.log2(seconds + 1))


async def simultaneous(url: str, bodies: list[dict], headers: dict | None = None) -> list[int]:
    """POST every body at once, each on its own connection; the statuses in order."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        async def one(body: dict) -> int:
            async with s.post(url, json=body, headers=headers) as r:
                await r.read()
                return r.status
        return list(await asyncio.gather(*(one(b) for b in bodies)))


async def test_finding1_simultaneous_login_guesses_are_counted_before_checking(
        server: RunningServer) -> None:
    """200 guesses at once, the right password among them: all but the first few are refused
    before any password is checked (was: 199 x 401 and the right one 200)."""
    await server.register("carol@example.com")
    bodies = [{"email": "carol@example.com", "password": WRONG} for _ in range(199)]
    bodies.insert(random.Random(1).randrange(200), {"email": "carol@example.com",
                                                     "password": PASSWORD})
    start = time.monotonic()
    statuses = await simultaneous(server.url + "/api/auth/login", bodies)
    checked = [s for s in statuses if s != 429]
    assert len(checked) <= allowed(time.monotonic() - start), sorted(checked)


async def test_finding1_simultaneous_link_unlock_guesses_are_counted_before_checking(
        server: RunningServer, alice: ApiClient) -> None:
    made = await upload(alice, "/secret.txt", b"secret")
    r = await alice.post(f"/api/files/{made['file_id']}/links", {"password": "link password 1"})
    assert r.status == 201
    bodies = [{"password": WRONG} for _ in range(99)] + [{"password": "link password 1"}]
    random.Random(2).shuffle(bodies)
    start = time.monotonic()
    statuses = await simultaneous(r.body["url"] + "/unlock", bodies)
    assert len([s for s in statuses if s != 429]) <= allowed(time.monotonic() - start), statuses


async def test_finding1_old_password_guesses_are_throttled(
        server: RunningServer, alice: ApiClient) -> None:
    """A stolen session is no way to guess the password: 20 wrong old passwords, at once."""
    bodies = [{"old_password": WRONG + str(i), "new_password": "a new password 123"}
              for i in range(20)]
    start = time.monotonic()
    statuses = await simultaneous(server.url + "/api/auth/password", bodies,
                                  headers=alice.headers)
    assert len([s for s in statuses if s != 429]) <= allowed(time.monotonic() - start), statuses
    assert 204 not in statuses


async def test_finding1_a_right_login_does_not_count_against_the_address(
        server: RunningServer) -> None:
    """Counting up front must not punish users: ten right logins in a row from one address."""
    await server.register("dave@example.com")
    for _ in range(10):
        r = await server.anonymous().post("/api/auth/login", {"email": "dave@example.com",
                                                              "password": PASSWORD})
        assert r.status == 200, r.body


async def test_finding12_deeply_nested_json_is_a_400_not_a_500(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as s:
        # Deep enough to exhaust the parser's recursion, small enough (< 64 KiB) that login
        # reads it (a larger body without a session is a 413 since finding 3).
        for body in ("[" * 60_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
            async with s.post(server.url + "/api/auth/login", data=body,
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400, await r.text()
                assert (await r.json())["error"]["code"] == "invalid_json"


async def test_finding2_a_decompression_bomb_in_a_batch_inflates_nothing_past_the_grant(
        alice: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1-byte grant, then 250 frames of a ~150-byte zstd frame that inflates to 4 MiB: a 413
    after at most the grant's bytes decoded (was 1.1 GB allocated before the 413)."""
    import struct

    import zstandard

    from driveproto.blocks import BLOCK_SIZE

    decoded = count_inflated(monkeypatch)
    bomb = zstandard.ZstdCompressor().compress(b"\0" * BLOCK_SIZE)
    assert len(bomb) < 1000
    frame = b"ab" * 32 + b"\x01" + struct.pack(">I", len(bomb)) + bomb
    init = (await alice.post("/api/files/upload-init", {"path": "/b", "size": 1})).body
    async with alice.session.post(init["batch_url"], data=frame * 250) as resp:
        assert resp.status == 413, await resp.text()
        assert (await resp.json())["error"]["code"] == "too_large"
    assert sum(decoded) <= 1


async def test_finding5_one_block_listed_a_hundred_thousand_times_is_refused(
        alice: ApiClient) -> None:
    made = await upload(alice, "/one.txt", b"x")
    h = (await alice.get(f"/api/files/{made['file_id']}/download")).body["blocks"][0]["hash"]
    for blocks in ([h] * 100_000, [h] * 65):
        r = await alice.post(f"/api/files/{made['file_id']}/complete", {"blocks": blocks})
        assert r.status == 400 and r.body["error"]["field"] == "blocks", r.body
    r = await alice.post(f"/api/files/{made['file_id']}/complete", {"blocks": [h] * 64})
    assert r.status == 200  # a few small blocks are fine (an API client may cut small)


async def test_finding16_the_metadata_database_is_private(server: RunningServer) -> None:
    """meta.sqlite3 was 0644: every account on the machine could read the file tree, emails
    and password hashes."""
    import stat

    r = await server.anonymous().get("/healthz")
    assert r.status == 200
    for path in server.config.data_dir.glob("meta.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


async def test_finding16_a_416_keeps_content_range_and_the_json_error_shape(
        server: RunningServer, alice: ApiClient) -> None:
    made = await upload(alice, "/ten.txt", b"0123456789")
    async with alice.session.get(f"{server.url}/api/files/{made['file_id']}/content",
                                 headers={**alice.headers, "Range": "bytes=50-60"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == "bytes */10"
        assert (await r.json())["error"]["code"] == "range_not_satisfiable"


async def test_finding16_if_none_match_star_is_honoured(server: RunningServer,
                                                        alice: ApiClient) -> None:
    made = await upload(alice, "/ten.txt", b"0123456789")
    async with alice.session.get(f"{server.url}/api/files/{made['file_id']}/content",
                                 headers={**alice.headers, "If-None-Match": "*"}) as r:
        assert r.status == 304


async def test_finding13_block_responses_are_not_cached_past_their_grant(
        server: RunningServer, alice: ApiClient) -> None:
    made = await upload(alice, "/one.txt", b"one")
    (block,) = (await alice.get(f"/api/files/{made['file_id']}/download")).body["blocks"]
    async with alice.session.get(block["url"]) as r:
        assert r.status == 200
        assert "no-store" in r.headers["Cache-Control"]
        assert "immutable" not in r.headers["Cache-Control"]


async def test_finding15_an_over_long_link_url_puts_no_token_in_the_log(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    port = int(server.url.rsplit(":", 1)[1])
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Past the 16 KiB request line (which still holds a 4096-byte path, percent-encoded).
        writer.write(b"GET /s/THE-LINK-TOKEN" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.") and b" 414 " in head
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + \
            (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        assert "THE-LINK-TOKEN" not in text, text[:200]
        assert record.levelno < logging.ERROR, record.getMessage()


async def test_finding1_successes_leave_an_address_count_as_it_was(tmp_path) -> None:
    """A success must not refresh an address's failures (an office behind one NAT: a typo in
    the morning and logins all day must not keep everyone's back-off alive)."""
    from driveserver.auth import LoginThrottle
    from driveserver.meta import throttles
    from driveserver.meta.db import Database

    db = Database(tmp_path / "meta.sqlite3")
    await db.open()
    try:
        t = LoginThrottle(db, cap=0.0)  # no waiting: the counts are what is looked at
        for _ in range(8):
            check_id, _ = await t.begin("acct:a", "addr:office")
            assert check_id is not None
            await t.finish(check_id, False, "acct:a", "addr:office")
        now = t.clock()
        before = (await throttles.states(db, ["addr:office"], now, 3600))["addr:office"]
        check_id, _ = await t.begin("acct:b", "addr:office")
        assert check_id is not None
        await t.finish(check_id, True, "acct:b", "addr:office")
        after = await throttles.states(db, ["addr:office", "acct:b"], now, 3600)
        assert (after["addr:office"].failures, after["addr:office"].last_failed_at) == \
            (before.failures, before.last_failed_at)
        assert after["addr:office"].in_flight == after["acct:b"].in_flight == 0
    finally:
        await db.close()


async def test_finding1_at_most_the_free_checks_run_at_once(tmp_path) -> None:
    from driveserver.auth import LoginThrottle
    from driveserver.meta.db import Database

    db = Database(tmp_path / "meta.sqlite3")
    await db.open()
    try:
        t = LoginThrottle(db)
        begun = [await t.begin("acct:a", "addr:x") for _ in range(5)]
        assert [w for _, w in begun] == [0, 0, 0, t.base, t.base]
        for check_id, _ in begun[:3]:
            assert check_id is not None
            await t.finish(check_id, False, "acct:a", "addr:x")
        assert (await t.begin("acct:a", "addr:x"))[1] > 0  # backing off now
    finally:
        await db.close()


@pytest.mark.parametrize("name", ["del\x7fname", "c1\x85name", "invoice\u202efdp.exe",
                                  "isolate\u2066x"])
async def test_finding16_names_with_hidden_controls_are_refused(alice: ApiClient,
                                                                name: str) -> None:
    r = await alice.post("/api/folders", {"path": "/" + name})
    assert r.status == 400 and r.body["error"]["code"] == "invalid_name", r.body


async def test_finding16_the_client_reports_such_a_name_instead_of_uploading(
        tmp_path, srv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.sync_helpers import make_devices

    (a,) = make_devices(tmp_path, "a")
    await a.init(srv)
    a.write("invoice\u202efdp.exe", "looks like a pdf")
    a.write("fine.txt", "fine")
    assert await a.cli("run", "--once") == 1
    capsys.readouterr()
    assert await a.cli("status") == 0
    assert "bidirectional control" in capsys.readouterr().out
    names = [e["name"] for e in (await (await srv.login("alice@example.com")).get(
        "/api/files", params={"path": "/"})).body["entries"]]
    assert names == ["fine.txt"]


async def test_finding7_registration_is_closed_on_a_fresh_install(tmp_path) -> None:
    from driveserver.app import build_app, start_site
    from driveserver.config import load_config
    from tests.helpers import RunningServer as Running

    config = load_config(None, env={}, overrides={"data_dir": tmp_path / "d", "port": 0})
    app = build_app(config)
    runner, port = await start_site(app, "127.0.0.1", 0)
    srv = Running(config, app, runner, port)
    try:
        r = await srv.anonymous().post("/api/auth/register", {"email": "x@example.com",
                                                             "password": PASSWORD})
        assert r.status == 403 and r.body["error"]["code"] == "registration_closed"
    finally:
        await srv.stop()


async def test_finding7_a_look_alike_address_is_the_address_it_imitates(
        server: RunningServer) -> None:
    """U+FB01 (the ligature) in place of "fi": kept as NFKC, it is finance@, not a second
    account that would receive shares meant for the real one."""
    anon = server.anonymous()
    r = await anon.post("/api/auth/register", {"email": "\ufb01nance@example.com",
                                              "password": PASSWORD})
    assert r.status == 201 and r.body["email"] == "finance@example.com"
    r = await anon.post("/api/auth/register", {"email": "finance@example.com",
                                              "password": PASSWORD})
    assert r.status == 409 and r.body["error"]["code"] == "email_taken"


async def test_finding7_a_mixed_script_look_alike_address_is_refused(
        server: RunningServer) -> None:
    """A Cyrillic і (U+0456) among Latin letters imitates finance@; such an address is refused
    with its own code, while addresses in one script per part stay welcome."""
    anon = server.anonymous()
    for email in ("f\u0456nance@example.com", "finance@ex\u0430mple.com",
                  "alice\u200b@example.com", "alice\u00ad@example.com", "a\u2060lice@example.com",
                  "\u202ealice@example.com", "ali\u200dce@example.com"):
        r = await anon.post("/api/auth/register", {"email": email, "password": PASSWORD})
        assert r.status == 400 and r.body["error"]["code"] == "confusable_email", (email, r.body)
    for email in ("иван@пример.рф", "иван@example.com", "josé.müller@example.de",
                  "王小明@example.cn"):
        r = await anon.post("/api/auth/register", {"email": email, "password": PASSWORD})
        assert r.status == 201 and r.body["email"] == email, (email, r.body)


async def test_finding7_a_whole_script_look_alike_of_an_account_is_taken(
        server: RunningServer) -> None:
    """"аре" written wholly in Cyrillic looks exactly like the Latin "ape": one script per part,
    so only the comparison of skeletons can tell the second one is a copy."""
    anon = server.anonymous()
    r = await anon.post("/api/auth/register", {"email": "ape@example.com", "password": PASSWORD})
    assert r.status == 201
    r = await anon.post("/api/auth/register", {"email": "\u0430\u0440\u0435@example.com",
                                              "password": PASSWORD})
    assert r.status == 409 and r.body["error"]["code"] == "email_taken", r.body
    assert "ape@example.com" not in r.body["error"]["message"]  # the holder stays unnamed
    r = await anon.post("/api/auth/register", {"email": "paypal@example.com", "password": PASSWORD})
    assert r.status == 201
    r = await anon.post("/api/auth/register", {"email": "paypaI@example.com", "password": PASSWORD})
    assert r.status == 409 and r.body["error"]["code"] == "email_taken", r.body  # capital I


async def test_finding7_simultaneous_look_alikes_get_one_account(server: RunningServer) -> None:
    """Twelve spellings that look the same, registered at once: exactly one account."""
    spellings = ["\u0430\u0440\u0435", "ape", "APE", "\u0410\u0420\u0415", "Ape",
                 "\uff41\uff50\uff45", "\u0430pe", "ap\u0435", "\u0430p\u0435", "aPE", "ApE",
                 "\u0430\u0440e"]
    bodies = [{"email": f"{s}@example.org", "password": PASSWORD} for s in spellings]
    statuses = await simultaneous(server.url + "/api/auth/register", bodies)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 400, 409}, statuses


async def test_findings_1_2_5_12_healthz_answers_while_such_requests_run(
        server: RunningServer, alice: ApiClient) -> None:
    """The acceptance rule for the findings of this file: while each kind of hostile request
    runs (50 simultaneous password guesses, a decompression bomb, a hundred-thousand-block
    complete, JSON nested 60,000 deep), another client's /healthz answers within 1 s."""
    import struct

    import zstandard

    from driveproto.blocks import BLOCK_SIZE
    from tests.helpers import HealthzProbe

    await server.register("dave@example.com")
    made = await upload(alice, "/one.txt", b"x")
    h = (await alice.get(f"/api/files/{made['file_id']}/download")).body["blocks"][0]["hash"]
    bomb = zstandard.ZstdCompressor().compress(b"\0" * BLOCK_SIZE)
    frame = b"ab" * 32 + b"\x01" + struct.pack(">I", len(bomb)) + bomb
    init = (await alice.post("/api/files/upload-init", {"path": "/b", "size": 1})).body
    async with HealthzProbe(server.url) as health:
        await simultaneous(server.url + "/api/auth/login",
                           [{"email": "dave@example.com", "password": WRONG}] * 50)
        async with alice.session.post(init["batch_url"], data=frame * 250) as resp:
            assert resp.status == 413
        r = await alice.post(f"/api/files/{made['file_id']}/complete",
                             {"blocks": [h] * 100_000})
        assert r.status == 400
        async with aiohttp.ClientSession() as s, s.post(
                server.url + "/api/auth/login", data=b"[" * 60_000,
                headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
    health.check()
