"""Signed grants: how the API routes (which own all state) authorise the stateless block routes.

* An **upload grant** (minted by ``upload-init``) names the user, the files it may carry content
  for, and the most bytes it may send. It travels as ``?token=`` on ``upload_url`` and on
  ``PUT /blocks/{hash}``.
* A **receipt** (minted by the block routes for every block they received *and verified*) proves
  that this user sent these bytes. ``complete`` requires one for every block the user could not
  already read, so knowing a hash never lets anyone claim a block (the 2011 "Dropship" hole).
* A **read grant** (minted by ``download``) lets the holder fetch exactly one block for a short
  time; it is per block so a URL never carries a list of hashes.

Each kind is signed with its own purpose salt, so one kind can never be used as another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..auth import TokenSigner
from .format import is_block_hash

UPLOAD, RECEIPT, READ = "upload", "receipt", "block-read"
MAX_NAMED_FILES = 8


@dataclass(frozen=True)
class UploadGrant:
    user_id: str
    file_ids: tuple[str, ...]
    max_bytes: int


@dataclass(frozen=True)
class Receipt:
    user_id: str
    block_hash: str
    size: int


class Grants:
    def __init__(self, signer: TokenSigner, upload_seconds: float, read_seconds: float) -> None:
        self.signer = signer
        self.upload_seconds = upload_seconds
        # A receipt must outlive the upload that produced it, so complete can still use it.
        self.receipt_seconds = upload_seconds * 2
        self.read_seconds = read_seconds

    def upload_token(self, grant: UploadGrant) -> str:
        # The token travels in URLs (8 KB request lines at most): many files are named by a
        # digest of their ids rather than one by one. The block routes never need the ids.
        files = list(grant.file_ids)
        if len(files) > MAX_NAMED_FILES:
            digest = hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:32]
            files = [f"sha256:{digest}"]
        return self.signer.sign(UPLOAD, {"u": grant.user_id, "f": files, "n": grant.max_bytes})

    def load_upload(self, token: str) -> UploadGrant | None:
        p = self.signer.load(UPLOAD, token, self.upload_seconds)
        if not (isinstance(p, dict) and isinstance(p.get("u"), str)
                and isinstance(p.get("f"), list) and isinstance(p.get("n"), int)):
            return None
        return UploadGrant(p["u"], tuple(str(f) for f in p["f"]), p["n"])

    def receipt(self, user_id: str, block_hash: str, size: int) -> str:
        return self.signer.sign(RECEIPT, {"u": user_id, "h": block_hash, "s": size})

    def load_receipt(self, token: object) -> Receipt | None:
        if not isinstance(token, str):
            return None
        p = self.signer.load(RECEIPT, token, self.receipt_seconds)
        if not (isinstance(p, dict) and isinstance(p.get("u"), str) and is_block_hash(p.get("h"))
                and isinstance(p.get("s"), int)):
            return None
        return Receipt(p["u"], p["h"], p["s"])

    def read_token(self, user_id: str, block_hash: str) -> str:
        return self.signer.sign(READ, {"u": user_id, "h": block_hash})

    def load_read(self, token: str, block_hash: str) -> str | None:
        """The user id the read grant was minted for, if it is valid for ``block_hash``."""
        p = self.signer.load(READ, token, self.read_seconds)
        if isinstance(p, dict) and p.get("h") == block_hash and isinstance(p.get("u"), str):
            return str(p["u"])
        return None
