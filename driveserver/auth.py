"""Passwords, session tokens and login throttling.

* Passwords are hashed with scrypt (memory-hard), parameters stored in the hash so they can grow.
* A session token is an itsdangerous-signed session id. The signature makes forgery impossible
  without the server's secret; the ``sessions`` row makes it revocable (logout, password change,
  device removal), which a signature alone cannot be.
* Failed logins are throttled per account and per client address with an exponential back-off,
  held in memory: a restart forgets it, which costs an attacker nothing they could not get by
  waiting, and it keeps the login path free of database writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from .errors import TooManyRequests

SCRYPT_R, SCRYPT_P = 8, 1
MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 8


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


# A valid hash to compare against when the account does not exist, so that the response time
# does not tell an attacker which emails have accounts.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


async def check_password(password: str, stored: str | None) -> bool:
    """Verify off the event loop (scrypt takes ~50 ms of CPU)."""
    ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
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


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginThrottle:
    """Exponential back-off after repeated failed logins, keyed by account and by client address.

    The first ``free`` failures cost nothing; after that each attempt must wait
    ``base * 2**(n - free)`` seconds (capped) after the previous failure. A success resets the
    account's counter.
    """

    def __init__(self, free: int = 3, base: float = 1.0, cap: float = 300.0,
                 forget_after: float = 3600.0) -> None:
        self.free, self.base, self.cap, self.forget_after = free, base, cap, forget_after
        self._failures: dict[str, _Failures] = {}
        self._in_flight: dict[str, int] = {}  # checks begun and not finished, by key

    def _delay(self, key: str, now: float) -> float:
        f = self._failures.get(key)
        if f is None or now - f.last > self.forget_after:
            return 0.0
        if f.count < self.free:
            return 0.0
        wait = min(self.cap, self.base * 2 ** (f.count - self.free))
        return max(0.0, f.last + wait - now)

    def retry_after(self, *keys: str) -> float:
        now = time.monotonic()
        return max((self._delay(k, now) for k in keys), default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._failures) > 100_000:  # bound memory under a spray attack
            self._failures = {k: v for k, v in self._failures.items()
                              if now - v.last < self.forget_after}
        for k in keys:
            f = self._failures.setdefault(k, _Failures())
            if now - f.last > self.forget_after:
                f.count = 0
            f.count += 1
            f.last = now

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def begin(self, *keys: str) -> float:
        """Start one password check: the seconds to wait first (refused), or 0 with the check
        counted as in flight. Checking, then awaiting scrypt, then recording let 200
        simultaneous guesses all through (each saw the counter before any failure was
        recorded). Now a key lets at most as many checks run at once as it has free failures
        left (one once it is backing off), and nothing awaits between the look and the count,
        so it holds under any concurrency on the loop. Always follow with :meth:`finish`."""
        now = time.monotonic()
        wait = self.retry_after(*keys)
        if wait > 0:
            return wait
        for k in keys:
            f = self._failures.get(k)
            failures = f.count if f is not None and now - f.last <= self.forget_after else 0
            if self._in_flight.get(k, 0) >= max(1, self.free - failures):
                return self.base  # as many checks as may fail are running: try again soon
        for k in keys:
            self._in_flight[k] = self._in_flight.get(k, 0) + 1
        return 0.0

    async def check(self, password: str, stored: str | None, keys: tuple[str, ...],
                    refused: str) -> bool:
        """Is ``password`` the one ``stored`` hashes? Throttled on ``keys`` (the account or
        link first, then the address): 429 ``refused`` while backing off or while as many
        checks as may still fail are running (:meth:`begin`)."""
        wait = self.begin(*keys)
        if wait > 0:
            raise TooManyRequests(refused, retry_after=wait)
        ok = False
        try:
            ok = await check_password(password, stored)
        finally:
            self.finish(ok, *keys)
        return ok

    def finish(self, ok: bool, *keys: str) -> None:
        """The check :meth:`begin` let through is over: a failure is recorded on every key
        (a check cut short counts as one); a success starts the first key (the account, the
        link) over and leaves the others (the address) as they were."""
        for k in keys:
            n = self._in_flight.get(k, 0) - 1
            if n > 0:
                self._in_flight[k] = n
            else:
                self._in_flight.pop(k, None)
        if ok:
            self.succeeded(keys[0])
        else:
            self.failed(*keys)


def new_id(prefix: str) -> str:
    """Opaque, unguessable ids: knowing one id tells nothing about another."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"
