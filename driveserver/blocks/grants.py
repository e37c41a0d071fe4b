"""Signed grants: how the API routes (which own all state) authorise the stateless block routes.

* An **upload grant** (minted by ``upload-init``) names the user, the files it may carry content
  for, and the most bytes it may send. It travels as ``?token=`` on ``upload_url`` and on
  ``PUT /blocks/{hash}``. It also names its row in the database (``meta.upload_grants``), which
  counts what it stored over its whole life and holds the epochs it was minted under: a
  signature alone could neither count nor be taken back (issue 12, findings 8 and 13).
* A **receipt** (minted by the block routes for every block they received *and verified*) proves
  that this user sent these bytes. ``complete`` requires one for every block the user could not
  already read, so knowing a hash never lets anyone claim a block (the 2011 "Dropship" hole).
* A **read grant** (minted by ``download``) lets the holder fetch exactly one block for a short
  time; it is per block so a URL never carries a list of hashes. It carries the epochs it was
  minted under (:class:`~driveserver.meta.accounts.GrantEpochs`: session, password, share),
  which ``GET /blocks/{hash}`` checks against the database, so it dies with the access it came
  from rather than up to an hour later.

Each kind is signed with its own purpose salt, so one kind can never be used as another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from driveproto.blocks import is_block_hash

from ..auth import TokenSigner
from ..meta.accounts import GrantEpochs

UPLOAD, RECEIPT, READ = "upload", "receipt", "block-read"
MAX_NAMED_FILES = 8


@dataclass(frozen=True)
class UploadGrant:
    user_id: str
    file_ids: tuple[str, ...]
    max_bytes: int  # per request; the budget for the grant's life is its database row's
    grant_id: str = ""


@dataclass(frozen=True)
class ReadGrant:
    user_id: str
    epochs: GrantEpochs | None  # None: minted before grants had epochs, so revoked


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
        return self.signer.sign(UPLOAD, {"u": grant.user_id, "f": files, "n": grant.max_bytes,
                                         "g": grant.grant_id})

    def load_upload(self, token: str) -> UploadGrant | None:
        """The grant, if the token is genuine and unexpired. A grant minted before grants had
        rows has ``grant_id`` "" and is refused as revoked when it is used."""
        p = self.signer.load(UPLOAD, token, self.upload_seconds)
        if not (isinstance(p, dict) and isinstance(p.get("u"), str)
                and isinstance(p.get("f"), list) and isinstance(p.get("n"), int)):
            return None
        grant_id = p.get("g")
        return UploadGrant(p["u"], tuple(str(f) for f in p["f"]), p["n"],
                           grant_id if isinstance(grant_id, str) else "")

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

    def receipt_for(self, token: object, user_id: str, block_hash: object) -> Receipt | None:
        """The receipt in ``token`` if it is genuine, unexpired, and vouches that ``user_id``
        sent the block ``block_hash``: a receipt another user obtained (or one for another block)
        proves nothing about this upload, so it is as good as none. The one check of a receipt's
        owner; ``complete`` asks it for every block it takes on a receipt's word."""
        receipt = self.load_receipt(token)
        if receipt is None or receipt.user_id != user_id or receipt.block_hash != block_hash:
            return None
        return receipt

    def read_token(self, user_id: str, block_hash: str, epochs: GrantEpochs) -> str:
        return self.signer.sign(READ, {"u": user_id, "h": block_hash, "e": epochs.to_json()})

    def load_read(self, token: str, block_hash: str) -> ReadGrant | None:
        """The read grant, if the token is genuine, unexpired and for ``block_hash``. Whether
        its epochs still hold is for the caller to ask the database."""
        p = self.signer.load(READ, token, self.read_seconds)
        if isinstance(p, dict) and p.get("h") == block_hash and isinstance(p.get("u"), str):
            return ReadGrant(str(p["u"]), GrantEpochs.from_json(p.get("e")))
        return None
