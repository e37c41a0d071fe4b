"""Where sealed blocks live: the BlockStore interface and its backends.

- :class:`LocalBlockStore`: a directory (the default).
- :class:`S3BlockStore`: an S3 bucket, via aiobotocore.
- :class:`TieredBlockStore`: a hot store in front of a cold one.
"""

from driveserver.storage.base import (
    BlockNotFound,
    BlockStore,
    StorageError,
    StorageUnavailable,
    is_valid_name,
    validate_name,
)
from driveserver.storage.local import LocalBlockStore
from driveserver.storage.s3 import S3BlockStore
from driveserver.storage.tiered import TieredBlockStore

__all__ = [
    "BlockNotFound",
    "BlockStore",
    "LocalBlockStore",
    "S3BlockStore",
    "StorageError",
    "StorageUnavailable",
    "TieredBlockStore",
    "is_valid_name",
    "validate_name",
]
