"""Unit tests of ``driveserver/permissions.py`` and the receipt check in ``blocks/grants.py``:
the decisions that need no server. Everything a route decides through them is in the
permission matrix (tests/test_permission_matrix.py)."""

from __future__ import annotations

import json

import pytest

from driveproto.blocks import block_hash
from driveserver.auth import TokenSigner
from driveserver.blocks.grants import Grants
from driveserver.errors import Conflict
from driveserver.permissions import ROLE_ALLOWS, SHARE_ROLES, Action, Role, refuse_managed_path

H1, H2 = block_hash(b"one"), block_hash(b"two")


def test_role_values_are_what_the_database_and_the_api_carry() -> None:
    assert [Role(v) for v in ("owner", "edit", "view")] == [Role.OWNER, Role.EDIT, Role.VIEW]
    assert json.dumps({"permission": Role.EDIT}) == '{"permission": "edit"}'
    assert Role.VIEW == "view" and f"{Role.OWNER}" == "owner"
    assert set(ROLE_ALLOWS) == set(Role) and Role.OWNER not in SHARE_ROLES


def test_only_the_owner_may_share_or_purge_and_a_viewer_only_reads() -> None:
    assert ROLE_ALLOWS[Role.OWNER] == frozenset(Action)
    assert {a for r in (Role.EDIT, Role.VIEW) for a in ROLE_ALLOWS[r]} \
        == {Action.READ, Action.WRITE, Action.DELETE}
    assert ROLE_ALLOWS[Role.VIEW] == {Action.READ}


@pytest.mark.parametrize("parts", [["Shared with me"], ["shared WITH me", "Proj"],
                                   ["SHARED WITH ME", "x"]])
def test_shared_with_me_and_its_mount_names_are_not_writable(parts: list[str]) -> None:
    with pytest.raises(Conflict) as e:
        refuse_managed_path(parts)
    assert e.value.code == "reserved_name"


@pytest.mark.parametrize("parts", [[], ["Proj"], ["Shared with me", "Proj", "doc.txt"],
                                   ["Docs", "Shared with me"]])
def test_other_paths_are_left_to_the_roles(parts: list[str]) -> None:
    refuse_managed_path(parts)  # no error: below a mount the share's role decides


def test_a_receipt_is_good_only_for_its_own_user_and_block() -> None:
    grants = Grants(TokenSigner(b"k" * 32), upload_seconds=60, read_seconds=60)
    token = grants.receipt("u-alice", H1, 3)
    receipt = grants.receipt_for(token, "u-alice", H1)
    assert receipt is not None and (receipt.user_id, receipt.block_hash, receipt.size) \
        == ("u-alice", H1, 3)
    assert grants.receipt_for(token, "u-bob", H1) is None      # someone else's receipt
    assert grants.receipt_for(token, "u-alice", H2) is None    # for another block
    assert grants.receipt_for(token + "x", "u-alice", H1) is None  # tampered with
    assert grants.receipt_for(None, "u-alice", H1) is None
    other = Grants(TokenSigner(b"o" * 32), upload_seconds=60, read_seconds=60)
    assert other.receipt_for(token, "u-alice", H1) is None     # another server's key
