"""What the sync engine needs of the server, as a Protocol.

``remote.Remote`` (aiohttp) is the one implementation in production; typing every stage
against this Protocol instead lets the executor be unit-tested with a fake server in memory
(``tests/test_sync_executor.py``) beside the end-to-end tests with a real one. The replies are
the JSON bodies of ``docs/api.md``; errors are raised as ``errors.ApiError`` (its ``status`` and
``code`` are what the stages branch on) and a lost connection as ``errors.Offline``.
"""

from __future__ import annotations

from typing import Any, Protocol

from driveproto.replies import (
    BlockReceipt,
    ChangesReply,
    CompleteReply,
    ContentFileHeader,
    DownloadReply,
    ErrorBody,
    FileMetadata,
    ListedEntry,
    PathEntry,
    UploadInitBatchReply,
    UploadInitReply,
)


class RemoteApi(Protocol):
    """The server routes one folder's sync uses (see ``docs/api.md``).

    The replies are the ``driveproto.replies`` shapes ``Remote`` returns, so a stage that reads
    a field a reply does not have is a type error rather than a KeyError at run time."""

    # --- the tree ----------------------------------------------------------------------------
    async def changes(self, cursor: str, wait_seconds: float = 0) -> ChangesReply: ...
    async def mkdir(self, path: str) -> PathEntry: ...
    async def move(self, file_id: str, path: str) -> PathEntry: ...
    async def delete(self, file_id: str) -> None: ...
    async def list_folder(self, path: str) -> list[ListedEntry]: ...
    async def metadata(self, file_id: str) -> FileMetadata: ...

    # --- content -----------------------------------------------------------------------------
    async def upload_init(self, body: dict[str, Any]) -> UploadInitReply: ...
    async def upload_init_batch(self, files: list[dict[str, Any]]) -> UploadInitBatchReply: ...
    async def complete(self, file_id: str, body: dict[str, Any]) -> CompleteReply: ...
    async def complete_batch(self, files: list[dict[str, Any]]
                             ) -> list[CompleteReply | ErrorBody]: ...
    async def download_info(self, file_id: str) -> DownloadReply: ...
    async def content(self, file_id: str) -> bytes: ...
    async def content_batch(self, file_ids: list[str]
                            ) -> dict[str, tuple[ContentFileHeader, bytes]]: ...
    async def put_block(self, block_url: str, h: str, data: bytes) -> BlockReceipt: ...
    async def put_batch(self, batch_url: str, body: bytes) -> list[BlockReceipt]: ...
    async def get_block(self, url: str, h: str, size: int) -> bytes: ...
