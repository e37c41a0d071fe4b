"""A block store in an S3 bucket (AWS, MinIO, Ceph, Garage, SeaweedFS...) via aiobotocore.

Each object is ``<prefix><name>`` in one bucket. Objects are written with
``If-None-Match: *``, so S3 itself arbitrates between concurrent writers of
one name and put-if-absent costs one request. Servers that do not implement
conditional writes get a HEAD-then-PUT fallback, which is safe here because
two objects under one name always hold the same block.

Retries: botocore's retry handler (``standard`` mode by default: exponential
backoff with full jitter and a retry quota that stops retry storms) retries
throttling (SlowDown, 503), 500/502/504, RequestTimeout and connection errors.
On top of that this module retries only what botocore cannot see: a response
body that breaks off mid-download, and AWS's 409 ConditionalRequestConflict.

Errors are translated at this boundary (see :func:`_translate`): callers see
BlockNotFound, StorageUnavailable (unreachable, throttled past all retries,
refused credentials, missing bucket) or StorageError, never botocore types.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import aiohttp

# aiobotocore and botocore ship no type information (no py.typed; the third-party stubs are
# generated per AWS service and heavy): their names are Any here, checked by the S3 tests.
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from driveserver.storage.base import (
    AsyncContextStore,
    BlockNotFound,
    StorageError,
    StorageUnavailable,
    is_valid_name,
    validate_name,
)

__all__ = ["S3BlockStore"]

log = logging.getLogger(__name__)

_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "403",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_BUSY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError"})
# Classes whose objects must be restored before they can be read; a store
# whose reads need a manual restore is not a block store.
_ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 5.0


def _error_info(exc: ClientError) -> tuple[str, int, str]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0), str(error.get("Message", ""))


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter (attempt counts from 0)."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


class S3BlockStore(AsyncContextStore):
    """Objects in an S3 bucket under a key prefix.

    :param endpoint_url: e.g. ``http://127.0.0.1:8333``; None means AWS.
    :param bucket: bucket name (it must exist; see :meth:`ensure_bucket`).
    :param region: signing region; None uses the AWS config/env default.
    :param access_key_id: with ``secret_access_key``; both None (or empty) means
        the usual AWS credential chain (environment, config files, instance role).
    :param prefix: prepended to every object name; end it with ``/``.
    :param storage_class: e.g. ``STANDARD_IA`` or ``GLACIER_IR`` for a cold
        tier. ``GLACIER`` and ``DEEP_ARCHIVE`` are refused: their objects need
        a restore before they can be read.
    :param max_attempts: total tries per request, including the first.
    :param retry_mode: botocore retry mode, ``standard`` or ``adaptive`` (adds
        client-side rate limiting when the server throttles).
    :param conditional_writes: False for servers known not to support
        ``If-None-Match`` (otherwise detected on the first 501).
    :param addressing_style: ``path`` for servers without virtual-host buckets;
        None lets botocore choose.
    """

    def __init__(
        self,
        endpoint_url: str | None,
        bucket: str,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "blocks/",
        storage_class: str | None = None,
        *,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 32,
        conditional_writes: bool = True,
        addressing_style: str | None = None,
    ) -> None:
        # Empty strings (unset config values) mean "not given".
        endpoint_url = endpoint_url or None
        access_key_id = access_key_id or None
        secret_access_key = secret_access_key or None
        storage_class = storage_class or None
        if not bucket:
            raise ValueError("bucket must not be empty")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if storage_class is not None and storage_class.upper() in _ARCHIVE_CLASSES:
            raise ValueError(
                f"storage class {storage_class} needs a restore before each read; "
                "use GLACIER_IR, STANDARD_IA or ONEZONE_IA for a cold tier"
            )
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise ValueError(f"unknown retry mode {retry_mode!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        self.storage_class = storage_class
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._max_attempts = max_attempts
        self._conditional_writes = conditional_writes
        s3_options = {"addressing_style": addressing_style} if addressing_style else None
        self._config = AioConfig(
            retries={"max_attempts": max_attempts, "mode": retry_mode},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            s3=s3_options,
        )
        self._stack: AsyncExitStack | None = None
        self._client_obj: Any = None
        self._start_lock = asyncio.Lock()

    def __repr__(self) -> str:
        where = self.endpoint_url or "aws"
        return f"S3BlockStore({where}, bucket={self.bucket!r}, prefix={self.prefix!r})"


    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Create the S3 client (no request is made; use :meth:`check` for that). Idempotent."""
        async with self._start_lock:
            if self._client_obj is not None:
                return
            stack = AsyncExitStack()
            try:
                self._client_obj = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        aws_access_key_id=self._access_key_id,
                        aws_secret_access_key=self._secret_access_key,
                        config=self._config,
                    )
                )
            except BaseException:
                await stack.aclose()
                raise
            self._stack = stack

    async def close(self) -> None:
        """Close the client and its connection pool. Idempotent."""
        async with self._start_lock:
            stack, self._stack, self._client_obj = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            raise StorageUnavailable(f"{self!r} is not started (or already closed)")
        return self._client_obj

    def _key(self, name: str) -> str:
        return self.prefix + validate_name(name)

    # -- operations ---------------------------------------------------------

    async def put_if_absent(self, name: str, data: bytes) -> bool:
        key = self._key(name)
        extra: dict[str, Any] = {"ContentType": "application/octet-stream"}
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        attempt = 0
        while self._conditional_writes:
            try:
                with self._translate(f"write block {name}"):
                    await self._client.put_object(
                        Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", **extra
                    )
                    return True
            except _ConditionFailed:
                return False
            except _ConditionConflict:
                # AWS: another conditional write of this key is in flight; the
                # next try sees its result (412) or, if it failed, writes ours.
                attempt += 1
                if attempt >= self._max_attempts:
                    raise StorageUnavailable(
                        f"S3 kept reporting conflicting writes of block {name}"
                    ) from None
                await asyncio.sleep(_backoff(attempt))
            except _ConditionUnsupported:
                log.warning(
                    "%r: server does not support conditional writes (If-None-Match); "
                    "falling back to HEAD before PUT",
                    self,
                )
                self._conditional_writes = False
        if await self.exists(name):
            return False
        with self._translate(f"write block {name}"):
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        return True

    async def get(self, name: str) -> bytes:
        key = self._key(name)
        attempt = 0
        while True:
            with self._translate(f"read block {name}", missing=name):
                response = await self._client.get_object(Bucket=self.bucket, Key=key)
            try:
                async with response["Body"] as body:
                    return bytes(await body.read())
            except (HTTPClientError, IncompleteReadError, aiohttp.ClientPayloadError,
                    aiohttp.ClientConnectionError, FlexibleChecksumError) as exc:
                # botocore retries requests, not a body that breaks off midway (reset
                # connection, read timeout, fewer bytes than Content-Length: aiohttp reports
                # the last two as its own errors, which botocore does not wrap) or that fails
                # the checksum S3 sent with it (bytes damaged on the way: read it again).
                attempt += 1
                if attempt >= self._max_attempts:
                    raise StorageUnavailable(
                        f"download of block {name} from {self._where()} kept breaking off "
                        f"after {attempt} attempts ({exc})"
                    ) from None
                await asyncio.sleep(_backoff(attempt))

    async def exists(self, name: str) -> bool:
        return await self._head(name) is not None

    async def stat_mtime(self, name: str) -> float | None:
        head = await self._head(name)
        return None if head is None else float(head["LastModified"].timestamp())

    async def _head(self, name: str) -> dict[str, Any] | None:
        key = self._key(name)
        try:
            with self._translate(f"look up block {name}", missing=name):
                return dict(await self._client.head_object(Bucket=self.bucket, Key=key))
        except BlockNotFound:
            return None

    async def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            with self._translate(f"delete block {name}", missing=name):
                await self._client.delete_object(Bucket=self.bucket, Key=key)
        except BlockNotFound:
            pass  # S3 itself says 204 for a missing key; some servers say 404

    async def iterate(self) -> AsyncIterator[str]:
        """Yield the names under the prefix, a listing page (up to 1000) at a time."""
        paginator = self._client.get_paginator("list_objects_v2")
        skip = len(self.prefix)
        with self._translate("list blocks"):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", ()):
                    name = obj["Key"][skip:]
                    if is_valid_name(name):
                        yield name

    async def check(self) -> None:
        """List one key under the prefix: proves endpoint, credentials, bucket and read access."""
        with self._translate("list blocks"):
            await self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests and ``drive-server check``)."""
        with self._translate("look up bucket"):
            try:
                await self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _error_info(exc)[1] != 404:
                    raise
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with self._translate("create bucket"):
            try:
                await self._client.create_bucket(**params)
            except ClientError as exc:
                if _error_info(exc)[0] != "BucketAlreadyOwnedByYou":
                    raise  # (created concurrently by us is fine)

    # -- error translation --------------------------------------------------

    @contextmanager
    def _translate(self, action: str, *, missing: str | None = None) -> Iterator[None]:
        """Turn botocore exceptions into storage errors with a message that says what to fix.

        ``missing``: the name to report in BlockNotFound when the object is
        absent (only for calls where absence is an expected answer).
        """
        writing = action.startswith("write")
        try:
            yield
        except ClientError as exc:
            code, status, message = _error_info(exc)
            detail = f"{code or status}" + (f": {message}" if message else "")
            if writing and (code == "PreconditionFailed" or status == 412):
                raise _ConditionFailed() from None
            if writing and (code == "ConditionalRequestConflict" or status == 409):
                raise _ConditionConflict() from None
            if writing and (code == "NotImplemented" or status == 501):
                raise _ConditionUnsupported() from None
            if code == "NoSuchBucket":
                raise StorageUnavailable(
                    f"cannot {action}: bucket {self.bucket!r} does not exist at {self._where()}"
                ) from None
            if missing is not None and (code in _NOT_FOUND_CODES or status == 404):
                raise BlockNotFound(missing, repr(self)) from None
            if code in _ACCESS_CODES or status == 403:
                raise StorageUnavailable(
                    f"cannot {action}: {self._where()} refused access to bucket "
                    f"{self.bucket!r} ({detail}); check the access key and secret"
                ) from None
            if code == "InvalidObjectState":
                raise StorageError(
                    f"cannot {action}: the object is archived and must be restored first ({detail})"
                ) from None
            if code in _BUSY_CODES or status >= 500:
                raise StorageUnavailable(
                    f"cannot {action}: {self._where()} is unavailable or throttling "
                    f"after {self._max_attempts} attempts ({detail})"
                ) from None
            raise StorageError(f"cannot {action}: {self._where()} answered {detail}") from None
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
            raise StorageUnavailable(
                f"cannot {action}: no usable S3 credentials ({exc}); set access_key_id and "
                "secret_access_key or the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables"
            ) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StorageUnavailable(
                f"cannot {action}: cannot reach {self._where()} after "
                f"{self._max_attempts} attempts ({exc})"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot {action}: {exc}") from None

    def _where(self) -> str:
        return f"S3 endpoint {self.endpoint_url}" if self.endpoint_url else "AWS S3"


# Internal signals raised by _translate for outcomes that are not errors to
# the caller (or need handling before they become one).
class _ConditionFailed(Exception):
    pass


class _ConditionConflict(Exception):
    pass


class _ConditionUnsupported(Exception):
    pass
