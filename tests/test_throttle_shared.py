"""The password-check throttle kept in the database (issue 18): one count for every server
process, so N processes behind a proxy give an attacker no more guesses than one.

The policy on both backends (a moved clock, no sleeps); two servers on one PostgreSQL
database (failures on one refuse on the other; a burst of guesses spread over two real
``drive-server`` processes runs at most the free checks); a check whose process was killed
with SIGKILL between reserving and finishing stops counting when its lease ends; IPv6 clients
counted per /64.
"""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from driveserver import auth
from driveserver.auth import LoginThrottle
from driveserver.meta import throttles
from driveserver.meta.backend import open_database
from driveserver.meta.db import Database
from tests.helpers import PASSWORD, RunningServer, start_server, upload, wait_for
from tests.test_cli import ENV, Serve, drive_server

WRONG = "not the password"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else ""
    return url, tmp_path / "meta.sqlite3"


@pytest.fixture
async def db(backend: tuple[str, Path]) -> AsyncIterator[Database]:
    database = open_database(*backend)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def fail(t: LoginThrottle, *keys: str) -> None:
    """One check that fails (begin, then finish without scrypt: the policy, not the hash)."""
    check_id, wait = await t.begin(*keys)
    assert check_id is not None, f"refused for {wait} s"
    await t.finish(check_id, False, *keys)


async def test_free_failures_then_a_doubling_back_off_to_the_cap(db: Database,
                                                                 clock: Clock) -> None:
    t = LoginThrottle(db, clock=clock)
    for _ in range(3):
        assert await t.retry_after("acct:a") == 0
        await fail(t, "acct:a")
    waits = []
    for _ in range(11):
        waits.append(await t.retry_after("acct:a"))
        assert (await t.begin("acct:a"))[0] is None  # even the right password waits
        clock.now += waits[-1]
        await fail(t, "acct:a")
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    clock.now += 3600.5  # an hour after the last failure: forgotten, and counted from one
    assert await t.retry_after("acct:a") == 0
    for _ in range(3):
        await fail(t, "acct:a")
    assert await t.retry_after("acct:a") == 1


async def test_a_success_starts_only_the_first_key_over(db: Database, clock: Clock) -> None:
    t = LoginThrottle(db, clock=clock)
    for _ in range(5):
        await fail(t, "acct:a", "addr:office")
        clock.now += 100  # past each back-off
    check_id, _ = await t.begin("acct:b", "addr:office")
    assert check_id is not None
    await t.finish(check_id, True, "acct:b", "addr:office")
    states = await throttles.states(db, ["acct:a", "addr:office"], clock.now, 3600)
    assert states["addr:office"].failures == 5 and states["acct:a"].failures == 5
    check_id, _ = await t.begin("acct:a", "addr:office")
    assert check_id is not None
    await t.finish(check_id, True, "acct:a", "addr:office")
    states = await throttles.states(db, ["acct:a", "addr:office"], clock.now, 3600)
    assert (states["acct:a"].failures, states["addr:office"].failures) == (0, 5)
    assert states["acct:a"].in_flight == states["addr:office"].in_flight == 0


async def test_at_most_the_free_checks_run_at_once_then_one(db: Database, clock: Clock) -> None:
    t = LoginThrottle(db, clock=clock)
    begun = [await t.begin("acct:a", "addr:x") for _ in range(5)]
    assert [w for _, w in begun] == [0, 0, 0, t.base, t.base]
    for check_id, _ in begun[:3]:
        assert check_id is not None
        await t.finish(check_id, False, "acct:a", "addr:x")
    assert (await t.begin("acct:a", "addr:x"))[1] == 1  # backing off now
    clock.now += 1
    first, second = await t.begin("acct:a", "addr:x"), await t.begin("acct:a", "addr:x")
    assert first[0] is not None and second == (None, t.base)  # one check once backing off


async def test_a_refused_guess_takes_no_write(db: Database, clock: Clock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    t = LoginThrottle(db, clock=clock)
    for _ in range(3):
        await fail(t, "acct:a")
    writes = []
    real = db.write

    async def counted(fn: Any, **kw: Any) -> Any:
        writes.append(fn)
        return await real(fn, **kw)
    monkeypatch.setattr(db, "write", counted)
    for _ in range(20):
        assert (await t.begin("acct:a"))[0] is None
    assert writes == []


async def test_two_databases_on_one_store_let_through_only_the_free_checks(
        backend: tuple[str, Path], clock: Clock) -> None:
    """What two processes do: two database objects (two writers) on one database, 60
    simultaneous begins on one key: exactly the 3 free ones are let through."""
    a, b = open_database(*backend), open_database(*backend)
    await a.open()
    await b.open()
    try:
        throttles_ = [LoginThrottle(a, clock=clock), LoginThrottle(b, clock=clock)]
        results = await asyncio.gather(*(throttles_[i % 2].begin("acct:a", "addr:x")
                                         for i in range(60)))
        assert len([c for c, _ in results if c is not None]) == 3, results
    finally:
        await a.close()
        await b.close()


async def test_a_reservation_that_is_never_finished_ends_with_its_lease(
        db: Database, clock: Clock) -> None:
    t = LoginThrottle(db, clock=clock)
    for _ in range(3):  # begun by a process that is then killed: never finished
        assert (await t.begin("acct:a"))[0] is not None
    assert await t.begin("acct:a") == (None, t.base)
    clock.now += auth.LEASE_SECONDS - 1
    assert (await t.begin("acct:a"))[0] is None
    clock.now += 1
    assert (await t.begin("acct:a"))[0] is not None  # the three leases ended
    # Ended leases are deleted by the next prune (or the next reservation on their key).
    async def prune(tx: Any) -> int:
        return await throttles.prune(tx, clock.now + auth.LEASE_SECONDS, 3600, 100)
    assert await db.write(prune) == 1
    assert await throttles.row_counts(db) == (0, 0)


@pytest.mark.parametrize("right", [False, True])
async def test_a_check_whose_client_went_away_is_recorded_all_the_same(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch, right: bool) -> None:
    """The client goes away while its password is hashed (the handler is cancelled): the
    check runs to its end all the same, is recorded as what it was, and gives its lease back."""
    hashing, finish_hash = asyncio.Event(), asyncio.Event()

    async def slow_hash(password: str, stored: str | None, cost: int = 14) -> bool:
        hashing.set()
        await finish_hash.wait()
        return right
    monkeypatch.setattr(auth, "check_password", slow_hash)
    t = LoginThrottle(db, clock=clock)
    await fail(t, "acct:a", "addr:x")
    request = asyncio.create_task(t.check("guess", None, ("acct:a", "addr:x"), "refused"))
    await asyncio.wait_for(hashing.wait(), 10)
    assert (await throttles.states(db, ["acct:a"], clock.now, 3600))["acct:a"].in_flight == 1
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    finish_hash.set()

    async def recorded() -> bool:
        states = await throttles.states(db, ["acct:a", "addr:x"], clock.now, 3600)
        return [(s.failures, s.in_flight) for s in states.values()] == \
            ([(0, 0), (1, 0)] if right else [(2, 0), (2, 0)])
    await wait_for(recorded, what="the check's record")


async def test_a_spray_of_addresses_keeps_the_table_bounded(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgotten rows are pruned as failures come (a few per failure, bounded), and past
    MAX_ROWS the oldest failures go."""
    monkeypatch.setattr(auth, "_FAILURES_PER_PRUNE", 4)
    monkeypatch.setattr(auth, "_PRUNE_ROWS", 16)
    t = LoginThrottle(db, clock=clock)
    rng = random.Random(5)
    step = 120.0  # one failure every 2 minutes, each from a new address on a new account
    for i in range(120):
        await fail(t, f"acct:{rng.random()}", f"addr:198.51.{i // 250}.{i % 250}")
        clock.now += step
    failures, leases = await throttles.row_counts(db)
    live = 2 * math.ceil(3600 / step)  # the last hour's rows: kept
    assert leases == 0 and live <= failures <= live + 2 * 4, failures
    # The cap: a table over MAX_ROWS is cut to it, oldest first, every 32 prunes.
    monkeypatch.setattr(throttles, "MAX_ROWS", 20)
    t.forget_after = 1e9  # nothing is old: only the cap removes rows
    while t._failed % (4 * 32) != 4 * 32 - 1:
        await fail(t, f"acct:{rng.random()}", f"addr:203.0.113.{t._failed % 128}")
        clock.now += 1
    await fail(t, "acct:newest", "addr:203.0.113.200")
    assert (await throttles.row_counts(db))[0] == 20
    states = await throttles.states(db, ["acct:newest", "addr:203.0.113.200"], clock.now, 1e9)
    assert states["acct:newest"].failures == states["addr:203.0.113.200"].failures == 1  # the newest rows are the ones kept


# Two servers on one PostgreSQL database (in this process: two database objects, two
# writers, as two processes have; the next test runs real processes).


@pytest.fixture
async def two_servers(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[RunningServer,
                                                                         RunningServer]]:
    data = tmp_path / "data"
    a = await start_server(data, database_url=pg_url, trusted_proxies="127.0.0.1")
    b = await start_server(data, database_url=pg_url, trusted_proxies="127.0.0.1")
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def _login(srv: RunningServer, email: str, password: str,
                 address: str | None = None) -> int:
    headers = {"X-Forwarded-For": address} if address else None
    r = await srv.anonymous().post("/api/auth/login", {"email": email, "password": password},
                                   headers=headers)
    if r.status == 429:
        assert int(r.headers["Retry-After"]) >= 1 and r.error_code() == "too_many_requests"
    return r.status


async def test_failures_on_one_process_refuse_on_the_other(
        two_servers: tuple[RunningServer, RunningServer]) -> None:
    a, b = two_servers
    await a.register("frank@example.com")
    for _ in range(3):
        assert await _login(a, "frank@example.com", WRONG, "192.0.2.1") == 401
    # From another address too: the account's count is shared (was 200: B's own count).
    assert await _login(b, "frank@example.com", PASSWORD, "192.0.2.99") == 429
    # The same for a link's password: wrong on A, and B makes even the right one wait.
    async with a.user("alice@example.com") as alice:
        made = await upload(alice, "/secret.txt", b"secret")
        r = await alice.post(f"/api/files/{made['file_id']}/links",
                             {"password": "link password 1"})
        assert r.status == 201
    token = r.body["url"].rsplit("/s/", 1)[1]
    for _ in range(3):
        r = await a.anonymous().post(f"/s/{token}/unlock", {"password": WRONG},
                                     headers={"X-Forwarded-For": "192.0.2.2"})
        assert r.status == 403 and r.error_code() == "wrong_password"
    r = await b.anonymous().post(f"/s/{token}/unlock", {"password": "link password 1"},
                                 headers={"X-Forwarded-For": "192.0.2.98"})
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1


async def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4(
        two_servers: tuple[RunningServer, RunningServer]) -> None:
    """Behind the proxy (X-Forwarded-For): addresses of one /64 share a count (one host
    usually holds the whole /64, so rotating through it gains nothing); the next /64 does not;
    an IPv4 address counts alone, and written as IPv4-mapped IPv6 it is the same address."""
    a, b = two_servers
    for i in range(6):
        await a.register(f"user{i}@example.com")
    for i, host in enumerate(("2001:db8:1:2::a", "2001:db8:1:2:ffff::1", "2001:db8:1:2::c")):
        assert await _login(a, f"user{i}@example.com", WRONG, host) == 401  # three accounts
    assert await _login(b, "user3@example.com", PASSWORD, "2001:db8:1:2:abcd::9") == 429
    assert await _login(b, "user3@example.com", PASSWORD, "2001:db8:1:3::a") == 200
    for i in range(3):
        assert await _login(a, f"user{i}@example.com", WRONG, "::ffff:192.0.2.7") == 401
    assert await _login(b, "user4@example.com", PASSWORD, "192.0.2.7") == 429
    assert await _login(b, "user4@example.com", PASSWORD, "192.0.2.8") == 200


# Real processes: two `drive-server serve` on one PostgreSQL database.


@pytest.fixture
def two_processes(tmp_path: Path, pg_url: str) -> Iterator[tuple[Path, list[Serve]]]:
    config = tmp_path / "drive.toml"
    config.write_text(f'[database]\nurl = "{pg_url}"\n[limits]\nmax_connections_per_client = 0\n')
    data = tmp_path / "data"
    for email in ("victim@example.com", "other@example.com"):
        r = drive_server("user", "add", email, "--password-stdin", "--config", str(config),
                         "--data-dir", str(data), stdin=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    servers: list[Serve] = []
    try:
        for _ in range(2):
            servers.append(Serve("--config", str(config), "--data-dir", str(data)))
        yield config, servers
    finally:
        for srv in servers:
            srv.stop()


async def test_a_burst_of_guesses_over_two_processes_runs_only_the_free_checks(
        two_processes: tuple[Path, list[Serve]]) -> None:
    """120 wrong passwords at once, half to each process: each 401 is a scrypt check that ran
    and failed, each 429 a guess refused before any hash. At most the 3 free checks run (and
    one per back-off period that has passed since: 1 s, then 2 s…); per-process counts let
    through 3 on each."""
    _, servers = two_processes
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        async def guess(i: int) -> int:
            url = servers[i % 2].url + "/api/auth/login"
            async with s.post(url, json={"email": "victim@example.com",
                                         "password": f"{WRONG} {i}"}) as r:
                await r.read()
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                return r.status
        start = time.monotonic()
        statuses = await asyncio.gather(*(guess(i) for i in range(120)))
        elapsed = time.monotonic() - start
    checks = statuses.count(401)
    print(f"120 guesses over two processes: {checks} checked (401), "
          f"{statuses.count(429)} refused (429), in {elapsed:.2f} s")
    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= checks <= 3 + int(math.log2(elapsed + 1)), (checks, elapsed, statuses)


KILLED = """
import asyncio, os, signal, sys
from driveserver.auth import LoginThrottle
from driveserver.meta.backend import open_database

async def main():
    db = open_database(sys.argv[1], None)
    await db.open()
    t = LoginThrottle(db, lease=float(sys.argv[2]))
    for _ in range(3):
        check_id, wait = await t.begin("acct:victim@example.com", "addr:127.0.0.1")
        assert check_id is not None, wait
    print("reserved", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # between reserving and finishing

asyncio.run(main())
"""


async def test_checks_left_by_a_killed_process_stop_counting_when_their_lease_ends(
        two_processes: tuple[Path, list[Serve]], pg_url: str) -> None:
    """A process killed (SIGKILL) with three checks reserved on the victim's account: the
    servers refuse while those leases run (as many checks as may fail are running), then let
    the right password in, without anyone finishing them."""
    _, servers = two_processes
    lease = 6.0
    killed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", KILLED, pg_url, str(lease)],
        capture_output=True, text=True, timeout=60, env=ENV)
    reserved_at = time.monotonic()
    assert killed.returncode == -9 and killed.stdout == "reserved\n", killed
    async with aiohttp.ClientSession() as s:
        async def login(srv: Serve) -> int:
            async with s.post(srv.url + "/api/auth/login", json={
                    "email": "victim@example.com", "password": PASSWORD}) as r:
                return r.status
        first = await login(servers[0])
        if time.monotonic() - reserved_at < lease - 1:  # else the machine was too slow to see
            assert first == 429
        deadline = time.monotonic() + lease + 20
        while (status := await login(servers[1])) != 200:
            assert status == 429 and time.monotonic() < deadline, status
            await asyncio.sleep(0.25)
        assert time.monotonic() - reserved_at >= lease - 1  # not before the leases ended


async def test_a_check_that_outlived_its_lease_is_not_answered(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash that waited past its lease (an overloaded server) was not counted while other
    checks began, so its answer is withheld: 429, the failure recorded, a right password not
    taken as a success (found by review: waves of guesses each answered once the leases of
    the wave before had ended)."""
    t = LoginThrottle(db, clock=clock)
    stored = auth.hash_password(PASSWORD, 10)

    async def slow_check(password: str, stored_hash: str | None, cost: int = 14) -> bool:
        clock.now += auth.LEASE_SECONDS + 1  # the hash waited its turn for longer than that
        return auth.verify_password(password, stored_hash or "")

    monkeypatch.setattr(auth, "check_password", slow_check)
    keys = ("acct:late", "addr:late")
    with pytest.raises(auth.TooManyRequests):
        await t.check(WRONG, stored, keys, "refused")
    assert (await throttles.states(db, keys, clock(), t.forget_after))["acct:late"].failures == 1
    with pytest.raises(auth.TooManyRequests):
        await t.check(PASSWORD, stored, keys, "refused")  # right, but not answered either
    assert (await throttles.states(db, keys, clock(), t.forget_after))["acct:late"].failures == 1
    monkeypatch.undo()
    assert await t.check(PASSWORD, stored, keys, "refused")  # in time: answered, and resets
    assert (await throttles.states(db, keys, clock(), t.forget_after))["acct:late"].failures == 0


async def test_filling_the_table_pushes_out_keys_without_a_back_off_first(
        db: Database, clock: Clock) -> None:
    t = LoginThrottle(db, clock=clock)
    for _ in range(t.free + 2):  # the victim: backing off
        await fail(t, "acct:victim")
        clock.now += t.cap + 1  # past each back-off (the count stays: forgotten after an hour)
    clock.now -= t.cap  # the victim's back-off still running
    for i in range(10):  # an attacker's fresh keys, newer than the victim's
        await fail(t, f"acct:spray{i}")
    assert await db.write(lambda tx: throttles.trim(tx, 5, 100, t.free)) == 6
    left = await throttles.states(db, ["acct:victim"], clock(), t.forget_after)
    assert left["acct:victim"].failures == t.free + 2


async def test_a_clock_behind_never_moves_a_last_failure_back(db: Database, clock: Clock) -> None:
    t = LoginThrottle(db, clock=clock)
    await fail(t, "acct:skew")
    first = (await throttles.states(db, ["acct:skew"], clock(), t.forget_after))["acct:skew"]
    clock.now -= 120  # another process, two minutes behind
    await fail(t, "acct:skew")
    clock.now += 120
    after = (await throttles.states(db, ["acct:skew"], clock(), t.forget_after))["acct:skew"]
    assert after.failures == 2 and after.last_failed_at == first.last_failed_at
