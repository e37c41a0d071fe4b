"""The JSON replies the sync client reads, as the server sends them (docs/api.md).

Types only: nothing here validates at run time (the server is the client's own, and the client
verifies every byte of content by hash anyway). They say, in one place both sides import, which
fields the client relies on, so a change to a reply the client reads shows up here. Fields the
server leaves out in some answers are ``NotRequired``; fields it always sends but may set to
``null`` are ``X | None``.
"""

# No ``from __future__ import annotations`` here: ``NotRequired`` must be seen at run time, or
# every key counts as required (``__required_keys__``, which tests/test_driveproto.py checks
# real replies against).
from typing import Literal, NotRequired, TypedDict

__all__ = [
    "BlockReceipt",
    "ChangeEntry",
    "ChangesReply",
    "CompleteReply",
    "ContentErrorHeader",
    "ContentFileHeader",
    "ContentHeader",
    "DownloadBlock",
    "DownloadReply",
    "Entry",
    "ErrorBody",
    "ErrorDetail",
    "FileMetadata",
    "ListReply",
    "ListedEntry",
    "LoginReply",
    "PathEntry",
    "RestoreReply",
    "ShareReply",
    "TrashEntry",
    "UploadInitBatchReply",
    "UploadInitReply",
    "UploadInitResult",
    "VersionInfo",
]


class ErrorDetail(TypedDict):
    """``{"error": {...}}`` of every error answer, and of a failed item in a batch; routes add
    details (``current_version``, ``missing``, ``max_depth``, …) beside these."""

    code: str
    message: str
    status: NotRequired[int]  # in batch results and content frames


class ErrorBody(TypedDict):
    error: ErrorDetail


class LoginReply(TypedDict):
    token: str
    user_id: str
    device_id: str | None


class Entry(TypedDict):
    """An item of the tree."""

    name: str
    file_id: str
    is_directory: bool
    size: int
    version: int
    checksum: str | None
    executable: bool
    symlink: bool
    modified_at: float


class ListedEntry(TypedDict):
    """An entry of a folder listing: an item, or (in the root of a user something is shared
    with) the virtual ``/Shared with me``, which has no ``file_id``, no time, and is
    ``virtual``; a mount listed in it carries the ``permission`` the user has."""

    name: str
    file_id: str | None
    is_directory: bool
    size: int
    version: int
    checksum: str | None
    modified_at: float | None
    executable: NotRequired[bool]
    symlink: NotRequired[bool]
    virtual: NotRequired[bool]
    permission: NotRequired[str]


class PathEntry(Entry):
    """An entry with its path: what a create, move or trash restore answers."""

    path: str


class VersionInfo(TypedDict):
    version: int
    size: int
    checksum: str
    executable: bool
    symlink: bool
    modified_at: float
    modified_by: str | None
    user_id: str | None
    device: str | None
    device_id: str | None
    restored_from: int | None


class FileMetadata(PathEntry):
    trashed: bool
    versions: list[VersionInfo]


class ListReply(TypedDict):
    path: str
    file_id: str | None
    entries: list[ListedEntry]
    has_more: bool
    next_cursor: NotRequired[str]


class TrashEntry(PathEntry):
    trashed_at: float


class RestoreReply(TypedDict):
    status: str
    file_id: str
    version: int
    restored_from: int


class ChangeEntry(TypedDict):
    """One change of the feed (``GET /api/sync/changes``)."""

    seq: int | None
    workspace_id: str
    file_id: str
    path: str
    old_path: str | None
    action: str  # create, modify, move, delete, restore (the journal's actions)
    version: int
    size: int
    checksum: str | None
    executable: bool
    symlink: bool
    is_directory: bool
    device_id: str | None
    user_id: str | None
    modified_at: float


class ChangesReply(TypedDict):
    changes: list[ChangeEntry]
    next_cursor: str
    has_more: bool
    reset: NotRequired[bool]


class UploadInitResult(TypedDict):
    """One file's part of an upload-init answer; ``blocks_*`` only when the request listed
    its blocks (the delta path)."""

    file_id: str
    version: int
    blocks_to_upload: NotRequired[list[str]]
    blocks_already_exist: NotRequired[list[str]]


class UploadInitReply(UploadInitResult):
    token: str
    upload_url: str
    block_url: str  # with a literal ``{hash}`` to fill in
    batch_url: str


class UploadInitBatchReply(TypedDict):
    """One grant for all the files that succeeded; a failed one is ``{"error": ...}``."""

    results: list[UploadInitResult | ErrorBody]
    token: str
    upload_url: str
    block_url: str
    batch_url: str


class BlockReceipt(TypedDict):
    """What a block route answers for each stored block; ``complete`` takes it back."""

    hash: str
    size: int
    receipt: str


class CompleteReply(TypedDict):
    status: Literal["created", "unchanged"]
    file_id: str
    version: int


class DownloadBlock(TypedDict):
    order: int
    hash: str
    size: int
    url: NotRequired[str]  # left out for the blocks of ``since`` (docs/api.md)


class DownloadReply(TypedDict):
    file_id: str
    version: int
    size: int
    checksum: str
    chunking: str
    executable: bool
    symlink: bool
    blocks: list[DownloadBlock]


class ContentFileHeader(TypedDict):
    """A ``content/batch`` frame carrying a file: ``length`` payload bytes in ``encoding``."""

    file_id: str
    version: int
    size: int
    checksum: str
    encoding: str
    length: int


class ContentErrorHeader(TypedDict):
    """A ``content/batch`` frame for a file that could not be sent (no payload)."""

    file_id: str | None
    error: ErrorDetail


ContentHeader = ContentFileHeader | ContentErrorHeader


class ShareReply(TypedDict):
    share_id: str
    mount_name: str
