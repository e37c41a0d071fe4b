"""The HTTP client for the server's API and block routes (aiohttp).

Errors are translated here, at the boundary: connection failures become :class:`Offline` (the
daemon retries with backoff), 401 becomes :class:`AuthError`, every other error answer an
:class:`ApiError` carrying the server's ``code`` so that callers can react to
``version_conflict`` or ``exists`` without parsing messages.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import aiohttp

from driveproto.blocks import block_hash
from driveproto.frames import read_content_frame
from driveproto.replies import (
    BlockReceipt,
    ChangesReply,
    CompleteReply,
    ContentFileHeader,
    DownloadReply,
    ErrorBody,
    FileMetadata,
    ListedEntry,
    ListReply,
    LoginReply,
    PathEntry,
    RestoreReply,
    TrashEntry,
    UploadInitBatchReply,
    UploadInitReply,
    VersionInfo,
)
from driveproto.wire import WIRE_IDENTITY, compress_for_wire, decompress_from_wire

from .errors import ApiError, AuthError, Offline

# Long polls hold a response open for up to ``timeout`` seconds; reads wait a little longer.
LONGPOLL_SECONDS = 30


class Remote:
    """One session against one server. ``close()`` is safe to call twice."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=LONGPOLL_SECONDS + 30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method: str, path: str, json: Any = None,
                   params: dict[str, str] | None = None) -> Any:
        url = path if path.startswith("http") else self.base_url + path
        try:
            async with self.session.request(method, url, json=json, params=params,
                                            headers=self._headers()) as resp:
                raw = await resp.read()
                return _answer(resp.status, raw)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc or type(exc).__name__}") from exc

    # --- accounts -------------------------------------------------------------------------------

    async def login(self, email: str, password: str, device_name: str,
                    new_device: bool = False) -> LoginReply:
        """Log in as ``device_name``. ``new_device``: the account must not have a device of
        that name yet (409 ``device_name_taken`` otherwise)."""
        body: LoginReply = await self.call("POST", "/api/auth/login", {
            "email": email, "password": password, "device_name": device_name,
            "device_type": "desktop", "new_device": new_device})
        self.token = body["token"]
        return body

    async def logout(self) -> None:
        await self.call("POST", "/api/auth/logout")

    # --- tree -----------------------------------------------------------------------------------

    async def changes(self, cursor: str, wait_seconds: float = 0) -> ChangesReply:
        return await self.call("GET", "/api/sync/changes", params={
            "cursor": cursor, "timeout": str(wait_seconds), "limit": "5000"})

    async def mkdir(self, path: str) -> PathEntry:
        return await self.call("POST", "/api/folders", {"path": path})

    async def move(self, file_id: str, path: str) -> PathEntry:
        return await self.call("PATCH", f"/api/files/{file_id}", {"path": path})

    async def delete(self, file_id: str) -> None:
        await self.call("DELETE", f"/api/files/{file_id}")

    async def list_folder(self, path: str) -> list[ListedEntry]:
        entries: list[ListedEntry] = []
        params = {"path": path, "limit": "5000"}
        while True:
            body: ListReply = await self.call("GET", "/api/files", params=params)
            entries += body["entries"]
            if not body.get("has_more"):
                return entries
            params["cursor"] = body["next_cursor"]

    async def metadata(self, file_id: str) -> FileMetadata:
        return await self.call("GET", f"/api/files/{file_id}")

    async def versions(self, file_id: str) -> list[VersionInfo]:
        return (await self.call("GET", f"/api/files/{file_id}/versions"))["versions"]

    async def restore(self, file_id: str, version: int) -> RestoreReply:
        return await self.call("POST", f"/api/files/{file_id}/restore/{version}")

    async def trash(self) -> list[TrashEntry]:
        return (await self.call("GET", "/api/trash"))["entries"]

    async def restore_from_trash(self, file_id: str) -> PathEntry:
        """Put a trashed item back; the answer's ``path`` says where it is now."""
        return await self.call("POST", f"/api/trash/{file_id}/restore")

    # --- content --------------------------------------------------------------------------------

    async def upload_init(self, body: dict[str, Any]) -> UploadInitReply:
        return await self.call("POST", "/api/files/upload-init", body)

    async def upload_init_batch(self, files: list[dict[str, Any]]) -> UploadInitBatchReply:
        return await self.call("POST", "/api/files/upload-init/batch", {"files": files})

    async def complete(self, file_id: str, body: dict[str, Any]) -> CompleteReply:
        return await self.call("POST", f"/api/files/{file_id}/complete", body)

    async def complete_batch(self, files: list[dict[str, Any]]
                             ) -> list[CompleteReply | ErrorBody]:
        return (await self.call("POST", "/api/files/complete/batch", {"files": files}))["results"]

    async def download_info(self, file_id: str, since: int | None = None) -> DownloadReply:
        """The current version's block list; with ``since`` (a version whose blocks this
        device holds) without URLs for those blocks."""
        params = {"since": str(since)} if since else None
        return await self.call("GET", f"/api/files/{file_id}/download", params=params)

    async def content(self, file_id: str) -> bytes:
        """The whole current content (for small files; the caller verifies the checksum)."""
        try:
            async with self.session.get(f"{self.base_url}/api/files/{file_id}/content",
                                        headers=self._headers()) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    _answer(resp.status, raw)
                return raw
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc}") from exc

    async def content_batch(self, file_ids: list[str]
                            ) -> dict[str, tuple[ContentFileHeader, bytes]]:
        """The current content of many small files in one request (``POST
        /api/files/content/batch``): ``{file_id: (header, bytes)}`` for each file the server
        sent; files it answered with an error frame are left out (the caller falls back to
        fetching them one by one, which reports the error). Callers verify the checksums."""
        out: dict[str, tuple[ContentFileHeader, bytes]] = {}
        try:
            async with self.session.post(f"{self.base_url}/api/files/content/batch",
                                         json={"files": [{"file_id": f} for f in file_ids]},
                                         headers=self._headers()) as resp:
                if resp.status != 200:
                    _answer(resp.status, await resp.read())
                for _ in file_ids:
                    header, payload = await read_content_frame(resp.content.readexactly)
                    if "error" not in header:  # narrows the header to a ContentFileHeader
                        data = decompress_from_wire(header["encoding"], payload)
                        out[header["file_id"]] = (header, data)
        except (aiohttp.ClientConnectionError, TimeoutError, OSError,
                asyncio.IncompleteReadError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc}") from exc
        return out

    async def put_block(self, block_url: str, h: str, data: bytes) -> BlockReceipt:
        encoding, payload = compress_for_wire(data)
        url = block_url.replace("{hash}", urllib.parse.quote(h))
        try:
            async with self.session.put(url, data=payload,
                                        headers={"X-Block-Encoding": encoding}) as resp:
                return _answer(resp.status, await resp.read())
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc}") from exc

    async def put_batch(self, batch_url: str, body: bytes) -> list[BlockReceipt]:
        try:
            async with self.session.post(batch_url, data=body) as resp:
                return _answer(resp.status, await resp.read())["blocks"]
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc}") from exc

    async def get_block(self, url: str, h: str, size: int) -> bytes:
        """Fetch one block and verify its SHA-256 (never trust bytes off the wire)."""
        try:
            async with self.session.get(url) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    _answer(resp.status, raw)
                encoding = resp.headers.get("X-Block-Encoding", WIRE_IDENTITY)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc}") from exc
        data = decompress_from_wire(encoding, raw)
        if len(data) != size or block_hash(data) != h:
            raise ApiError(502, "block_mismatch", f"block {h} failed verification")
        return data


    async def _raw(self, method: str, url: str, data: bytes | None = None
                   ) -> tuple[str, bytes]:
        """A block route's answer as (``X-Block-Encoding``, body); errors raised as usual."""
        try:
            async with self.session.request(method, url, data=data) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    _answer(resp.status, raw)
                return resp.headers.get("X-Block-Encoding", WIRE_IDENTITY), raw
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise Offline(f"cannot reach {self.base_url}: {exc}") from exc

    async def block_signature(self, block_url: str, h: str) -> bytes:
        """``GET /blocks/{hash}/signature`` under an upload grant (driveproto.patches)."""
        return (await self._raw("GET", block_url.replace("{hash}", f"{h}/signature")))[1]

    async def put_patch(self, block_url: str, h: str, body: bytes) -> BlockReceipt:
        """``PUT /blocks/{hash}/patch``: block ``h`` as a patch body (driveproto.patches)."""
        return _answer(200, (await self._raw("PUT", block_url.replace("{hash}", f"{h}/patch"),
                                             body))[1])

    async def get_patch(self, url: str, bases: list[str]) -> tuple[str, bytes]:
        """``GET /blocks/{hash}/patch?base=`` for a block URL of ``download``: the encoding
        (``patch`` or a usual one) and the payload, which the caller decodes and verifies."""
        path, _, query = url.partition("?")
        return await self._raw("GET", f"{path}/patch?{query}&base={','.join(bases)}")


def _answer(status: int, raw: bytes) -> Any:
    import json

    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if status < 400:
        return body
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    message = err.get("message", "") if isinstance(err, dict) else raw[:200].decode(errors="replace")
    if status == 401:
        raise AuthError(status, code, message or "not authorised: run `drive-sync init` again",
                        err)
    raise ApiError(status, code, message, err)
