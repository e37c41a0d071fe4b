"""The client's exceptions.

::

    SyncClientError            fatal for the command (a message for the user, exit non-zero)
    ├── NotConfigured          no config in the config dir: run ``drive-sync init``
    ├── FolderMissing          the folder or its ``.drive-sync`` marker is gone: stop, delete nothing
    ├── ApiError               the server said no (status + code from its JSON error)
    │   └── AuthError          401: the token is gone or revoked
    └── Offline                the server cannot be reached (the daemon retries with backoff)

Per-file problems (unreadable file, invalid name) are not exceptions that stop a sync: they are
recorded in the state database (``sync_errors``) and shown by ``drive-sync status``.
"""

from __future__ import annotations

from typing import Any


class SyncClientError(Exception):
    """An error that ends the command with a message."""


class NotConfigured(SyncClientError):
    pass


class FolderMissing(SyncClientError):
    pass


class Offline(SyncClientError):
    pass


class ApiError(SyncClientError):
    def __init__(self, status: int, code: str | None, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code or ''}: {message}".strip())
        self.status, self.code, self.body = status, code, body


class AuthError(ApiError):
    pass
