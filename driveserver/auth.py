"""Passwords, session tokens and login throttling.

* Passwords are hashed with scrypt (memory-hard), parameters stored in the hash so they can grow.
* A session token is an itsdangerous-signed session id. The signature makes forgery impossible
  without the server's secret; the ``sessions`` row makes it revocable (logout, password change,
  device removal), which a signature alone cannot be.
* Failed password checks are throttled per account (or link) and per client address with an
  exponential back-off, held in the database (:mod:`.meta.throttles`): several server
  processes behind a proxy share one count, so adding processes adds no guesses. A check
  costs two small write transactions beside the ~50 ms of scrypt; a refused one only a read.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable

from itsdangerous import BadSignature, URLSafeTimedSerializer

from .errors import TooManyRequests
from .meta import throttles
from .meta.db import Database, Tx

log = logging.getLogger("driveserver.auth")

SCRYPT_R, SCRYPT_P = 8, 1
MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 8
# How long a password check counts as running when its process never says it ended (killed):
# scrypt takes ~50 ms, queued behind others a few seconds at worst.
LEASE_SECONDS = 30.0
# Every this many failures a process records, it prunes up to _PRUNE_ROWS forgotten rows
# (each failure adds at most two: the table never holds much more than an hour of failures).
_FAILURES_PER_PRUNE = 16
_PRUNE_ROWS = 64


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=32)


def hash_password(password: str, cost: int = 14) -> str:
    """``cost`` is log2 of scrypt's N (``accounts.password_hash_cost``); it is written into the
    hash, so a hash is always checked at the cost it was made with."""
    salt, n = os.urandom(16), 2**cost
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


@functools.cache
def _dummy_hash(cost: int) -> str:
    """A valid hash at ``cost`` to compare against when the account does not exist, so that the
    response time does not tell an attacker which emails have accounts: made at the cost real
    hashes are made at (one per cost, and there is one cost per server)."""
    return hash_password(secrets.token_urlsafe(16), cost)


async def check_password(password: str, stored: str | None, cost: int = 14) -> bool:
    """Verify off the event loop (scrypt takes ~50 ms of CPU at cost 14); with no ``stored``
    hash, as long as a check at ``cost`` takes, and False."""
    ok = await asyncio.to_thread(verify_password, password, stored or _dummy_hash(cost))
    return ok and stored is not None


class TokenSigner:
    """Signs and checks the small payloads the server hands out (sessions, upload/download grants).

    Each purpose gets its own salt, so a token minted for one purpose is worthless for another.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # One serializer per purpose, made once: building one costs more than the signature
        # itself (79 µs against 22 µs per receipt, and a batch of small files signs one receipt
        # per block). Purposes are the code's own constants, so this stays a handful; a
        # serializer holds no state between calls, so threads may share it.
        self._serializers: dict[str, URLSafeTimedSerializer] = {}

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        serializer = self._serializers.get(purpose)
        if serializer is None:
            serializer = URLSafeTimedSerializer(self._secret, salt=f"drive.{purpose}")
            self._serializers[purpose] = serializer
        return serializer

    def sign(self, purpose: str, payload: object) -> str:
        return str(self._serializer(purpose).dumps(payload))

    def load(self, purpose: str, token: str, max_age: float) -> object | None:
        """The payload, or None when the token is forged, altered, for another purpose or expired."""
        try:
            # itsdangerous counts whole seconds (its ages are ints), so flooring ``max_age``
            # changes nothing: an int age exceeds 1.5 exactly when it exceeds 1.
            return self._serializer(purpose).loads(token, max_age=int(max_age))
        except (BadSignature, UnicodeDecodeError, ValueError):
            return None


class LoginThrottle:
    """Exponential back-off after repeated failed password checks, keyed by account (or link, or
    session) and by client address, kept in the database so that every server process behind
    a proxy counts the same guesses (:mod:`.meta.throttles` holds the rows).

    The first ``free`` failures of a key cost nothing; after that each check must wait
    ``base * 2**(n - free)`` seconds (capped) after the key's previous failure. A success resets
    the first key (the account, the link) and leaves the others (the address) as they were; a
    key's failures are forgotten ``forget_after`` seconds after its last one. Times are
    wall-clock (``clock``), the one clock the processes share.
    """

    def __init__(self, db: Database, *, free: int = 3, base: float = 1.0, cap: float = 300.0,
                 forget_after: float = 3600.0, lease: float = LEASE_SECONDS,
                 clock: Callable[[], float] = time.time, cost: int = 14) -> None:
        self.db = db
        self.cost = cost  # accounts.password_hash_cost: what a check of no account costs
        self.free, self.base, self.cap, self.forget_after = free, base, cap, forget_after
        self.lease, self.clock = lease, clock
        self._failed = 0  # failures this process recorded: when to prune (_FAILURES_PER_PRUNE)
        self._running: set[asyncio.Future[bool]] = set()  # checks no request may cancel

    def _delay(self, s: throttles.KeyState, now: float) -> float:
        if s.failures < self.free:
            return 0.0
        wait = min(self.cap, self.base * 2 ** (s.failures - self.free))
        # Never more than the back-off itself: a process whose clock runs behind another's
        # must not see that one's failures as lying in the future.
        return max(0.0, min(wait, s.last_failed_at + wait - now))

    def _refusal(self, states: dict[str, throttles.KeyState], now: float) -> float:
        """The seconds to wait before a check may begin, or 0 if one may begin now: backing off
        on some key, or as many checks running on a key as it may still fail (one once it is
        backing off, so the back-off is never outrun by checks started together)."""
        wait = max((self._delay(s, now) for s in states.values()), default=0.0)
        if wait > 0:
            return wait
        if any(s.in_flight >= max(1, self.free - s.failures) for s in states.values()):
            return self.base  # as many checks as may fail are running: try again soon
        return 0.0

    async def retry_after(self, *keys: str) -> float:
        """The seconds the back-off asks these keys to wait now (0: none)."""
        now = self.clock()
        states = await throttles.states(self.db, keys, now, self.forget_after)
        return max((self._delay(s, now) for s in states.values()), default=0.0)

    async def begin(self, *keys: str) -> tuple[str | None, float]:
        """Start one password check: ``(check_id, 0)`` with the check counted as running on
        every key, or ``(None, seconds to wait)`` refused. The look and the count are one
        transaction (SERIALIZABLE on PostgreSQL), so under any concurrency, across processes,
        a key lets at most as many checks run at once as it has free failures left. What is
        refused is decided by a read first: a flood of refused guesses takes no write lock.
        Always follow a check_id with :meth:`finish`; if the process dies first, the count
        ends with its lease (``lease`` seconds, far longer than scrypt takes)."""
        now = self.clock()
        wait = self._refusal(await throttles.states(self.db, keys, now, self.forget_after), now)
        if wait > 0:
            return None, wait
        check_id = secrets.token_hex(8)

        async def unit(tx: Tx) -> float:
            now = self.clock()
            wait = self._refusal(await throttles.states(tx, keys, now, self.forget_after), now)
            if wait == 0:
                await throttles.reserve(tx, keys, check_id, now + self.lease, now)
            return wait

        wait = await self.db.write(unit)
        return (check_id, 0.0) if wait == 0 else (None, wait)

    async def finish(self, check_id: str, ok: bool, *keys: str) -> bool:
        """The check :meth:`begin` let through is over: a failure is recorded on every key
        (a hash that raised counts as one); a success starts the first key over. Every
        ``_FAILURES_PER_PRUNE`` failures this process records, the same transaction also
        deletes forgotten rows and ended leases (bounded), and now and then holds the table
        to :data:`.meta.throttles.MAX_ROWS`."""
        if not ok:
            self._failed += 1
        prune = not ok and self._failed % _FAILURES_PER_PRUNE == 0
        trim = not ok and self._failed % (_FAILURES_PER_PRUNE * 32) == 0

        async def unit(tx: Tx) -> bool:
            now = self.clock()
            # Were this check's leases still counting on every key? A check that outlived its
            # lease (an overloaded server: the hash waited its turn for longer) was not counted
            # while others began, so its answer must not be given: refused, and its failure
            # recorded all the same (a success does not reset anything then).
            held = await throttles.release(tx, keys, check_id, now) == len(keys)
            if ok and held:
                await throttles.forget(tx, keys[0])
                return True
            if ok:
                return False
            await throttles.record_failure(tx, keys, now, self.forget_after)
            if prune:
                await throttles.prune(tx, now, self.forget_after, _PRUNE_ROWS)
            if trim:
                await throttles.trim(tx, throttles.MAX_ROWS, _PRUNE_ROWS * 32, self.free)
            return held

        return await self.db.write(unit)

    async def check(self, password: str, stored: str | None, keys: tuple[str, ...],
                    refused: str) -> bool:
        """Is ``password`` the one ``stored`` hashes? Throttled on ``keys`` (the account or
        link first, then the address): 429 ``refused`` while backing off or while as many
        checks as may still fail are running (:meth:`begin`).

        Run in a task of its own, which cancelling the request (its client went away) does
        not stop: a reservation is always followed by its record, however early the client
        leaves, and a guess cut short counts as what it was."""
        run = asyncio.ensure_future(self._check(password, stored, tuple(dict.fromkeys(keys)),
                                                refused))
        self._running.add(run)
        run.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(run)
        except asyncio.CancelledError:
            run.add_done_callback(_log_failure)  # nobody else will look at its outcome
            raise

    async def _check(self, password: str, stored: str | None, keys: tuple[str, ...],
                     refused: str) -> bool:
        check_id, wait = await self.begin(*keys)
        if check_id is None:
            raise TooManyRequests(refused, retry_after=wait)
        ok = held = False
        try:
            ok = await check_password(password, stored, self.cost)
        finally:
            held = await self.finish(check_id, ok, *keys)
        if not held:
            raise TooManyRequests(refused, retry_after=self.base)
        return ok


def _log_failure(run: asyncio.Future[bool]) -> None:
    """A check whose request was cancelled and which then failed (a refusal aside) is logged,
    not left as an exception nobody retrieves: any lease it left ends by itself."""
    exc = None if run.cancelled() else run.exception()
    if exc is not None and not isinstance(exc, TooManyRequests):
        log.warning("a password check failed after its request went: %r", exc)


def new_id(prefix: str) -> str:
    """Opaque, unguessable ids: knowing one id tells nothing about another."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"
