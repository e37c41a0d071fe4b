"""HTTP Basic on ``/dav/``: the account's email and one of its app passwords.

A WebDAV client sends the password with every request, and checking it (scrypt, ~50 ms of
CPU) every time would cap a client at a few requests a second. So a password that checked
out is remembered for ``CACHE_SECONDS``, in memory, under an HMAC of the email and password
with a key made at start-up (nothing reusable is kept), mapped to the app password's session.
Every request still loads that session from the database, so revoking the app password,
removing its device or changing the account password ends access at the next request; only
the scrypt check is skipped. Simultaneous requests with the same new credentials share one
check. Wrong passwords are throttled by the server's :class:`~driveserver.auth.LoginThrottle`,
on the same keys as logins (the account, the client address).

The account password itself is refused (401) unless ``dav.allow_account_password`` is on;
then it acts as a device named "WebDAV (account password)".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from aiohttp import web

from .. import appkeys
from ..auth import MAX_PASSWORD_BYTES
from ..connections import client_key
from ..emails import email_key
from ..errors import Unauthorized
from ..forwarded import client_of
from ..meta import accounts, app_passwords, devices
from ..meta.accounts import Principal
from ..meta.db import Tx

CACHE_SECONDS = 300.0
CACHE_MAX = 10_000
REALM = 'Basic realm="drive", charset="UTF-8"'
ACCOUNT_DEVICE = "WebDAV (account password)"


@dataclass
class _Entry:
    session_id: str
    until: float


class BasicAuthenticator:
    """Turns an ``Authorization: Basic`` header into the principal of a live session."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._cache: dict[bytes, _Entry] = {}
        self._checking: dict[bytes, asyncio.Task[str | None]] = {}

    def _digest(self, email: str, password: str) -> bytes:
        return hmac.new(self._key, f"{email_key(email)}\0{password}".encode(),
                        hashlib.sha256).digest()

    async def principal(self, request: web.Request) -> Principal:
        email, password = _credentials(request)
        db = request.app[appkeys.DB]
        digest = self._digest(email, password)
        now = time.monotonic()
        entry = self._cache.get(digest)
        session_id: str | None = None
        if entry is not None and entry.until > now:
            session_id = entry.session_id
        else:
            # One check per credentials at a time, in a task of its own: a client that
            # disconnects does not cancel the check the others with the same header wait on.
            check = self._checking.get(digest)
            if check is None:
                check = asyncio.ensure_future(self._check(request, email, password))
                self._checking[digest] = check
                check.add_done_callback(lambda _: self._checking.pop(digest, None))
            session_id = await asyncio.shield(check)
            if session_id is not None:
                if len(self._cache) >= CACHE_MAX:
                    self._cache = {k: v for k, v in self._cache.items() if v.until > now}
                    if len(self._cache) >= CACHE_MAX:
                        self._cache.clear()
                self._cache[digest] = _Entry(session_id, now + CACHE_SECONDS)
        p = await accounts.principal_for_session(db, session_id) if session_id else None
        if p is None:
            self._cache.pop(digest, None)
            raise Unauthorized("wrong email or app password", code="bad_credentials")
        return p

    async def _check(self, request: web.Request, email: str, password: str) -> str | None:
        """The session the credentials stand for, or None; throttled as logins are."""
        db = request.app[appkeys.DB]
        config = request.app[appkeys.CONFIG]
        throttle = request.app[appkeys.THROTTLE]
        keys = (f"acct:{email_key(email)}", f"addr:{client_key(client_of(request))}")
        user = await accounts.user_by_email(db, email)
        lookup = app_passwords.lookup_of(password)
        row = await app_passwords.candidate(db, user["id"], lookup) \
            if user is not None and lookup is not None else None
        refused = "too many wrong passwords; try again later"
        if row is not None or not config.dav_allow_account_password:
            stored = row["password_hash"] if row is not None else None
            if not await throttle.check(password, stored, keys, refused):
                return None
            assert row is not None
            app_id, device_id = row["id"], row["device_id"]
            await db.write(lambda tx: app_passwords.mark_used(tx, app_id, device_id))
            return str(row["session_id"])
        stored = user["password_hash"] if user is not None else None
        if not await throttle.check(password, stored, keys, refused):
            return None
        assert user is not None
        user_id = user["id"]

        async def unit(tx: Tx) -> str:
            device_id = await devices.register_device(tx, user_id, ACCOUNT_DEVICE, "app")
            return await app_passwords.account_password_session(
                tx, user_id, device_id, config.session_days * 86400)

        return await db.write(unit)


def _credentials(request: web.Request) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise Unauthorized("WebDAV needs HTTP Basic: your email and an app password",
                           code="missing_credentials")
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("malformed Basic credentials", code="bad_credentials") from None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    email, sep, password = decoded.partition(":")
    if not sep or not email or not password or len(password.encode()) > MAX_PASSWORD_BYTES \
            or len(email) > 254:
        raise Unauthorized("malformed Basic credentials", code="bad_credentials")
    return email, password
