"""Examples of the pure rules around the planner (``syncclient.filters``, ``guards``); the
Hypothesis model of ``test_sync_planner.py`` runs the same functions on random trees."""

from __future__ import annotations

from syncclient.filters import (
    NO_LONGER_SHARED,
    NOT_A_SHARE,
    filter_trees,
    mount_of,
    not_on_windows,
    outside_shares,
)
from syncclient.guards import too_many_deletions
from syncclient.planner import Node, Op
from syncclient.state import SyncedEntry


def odd(path: str) -> str | None:
    return "has a '?'" if "?" in path else None


def test_an_unreadable_folder_is_left_alone_on_both_sides() -> None:
    remote = {"/a": Node(True, file_id="1"), "/a/x": Node(False, "c", "2"),
              "/b": Node(False, "d", "3")}
    kept = filter_trees(["/b"], remote, remote, problems={"/a"})
    assert set(kept.remote) == set(kept.synced) == {"/b"}
    everything = filter_trees([], remote, remote, problems={"/"})  # the root itself
    assert everything.remote == everything.synced == {}


def test_a_name_this_computer_cannot_create_stays_on_the_server_alone() -> None:
    remote = {"/q?": Node(True, file_id="1"), "/q?/in": Node(False, "c", "2")}
    kept = filter_trees([], remote, {}, uncreatable=odd)
    assert kept.remote == {} and set(kept.not_here) == {"/q?", "/q?/in"}
    assert filter_trees([], remote, {}).remote == remote  # a system that can create it


def test_a_file_renamed_on_the_server_to_such_a_name_keeps_its_copy_here() -> None:
    synced = {"/notes.txt": Node(False, "c", "7", 1)}
    kept = filter_trees(["/notes.txt"], {"/notes?.txt": Node(False, "c", "7", 2)}, synced,
                        uncreatable=odd)
    assert kept.synced == {} and kept.dropped_local == {"/notes.txt"}
    assert "renamed on the server to /notes?.txt" in kept.not_here["/notes.txt"]
    # Unless the server has another item at the old name now: that one comes here.
    other = {"/notes?.txt": Node(False, "c", "7", 2), "/notes.txt": Node(False, "e", "8", 1)}
    assert "/notes.txt" in filter_trees(["/notes.txt"], other, synced, uncreatable=odd).remote


def test_nothing_goes_to_a_mount_no_longer_shared() -> None:
    ops = [Op("upload", "/Shared with me/X/a", "edited"), Op("upload", "/Shared with me/X/b", "new"),
           Op("download", "/Shared with me/Y/c", "new"), Op("upload", "/mine", "new")]
    remote = {"/Shared with me": Node(True), "/Shared with me/Y": Node(True)}
    synced = {"/Shared with me/X", "/Shared with me/X/a"}
    kept, notices = outside_shares(ops, remote, synced)
    assert [(op.kind, op.path) for op in kept] == [
        ("forget", "/Shared with me/X/a"), ("download", "/Shared with me/Y/c"),
        ("upload", "/mine")]
    assert notices == {"/Shared with me/X/a": NO_LONGER_SHARED,
                       "/Shared with me/X/b": NO_LONGER_SHARED}
    # Put straight into /Shared with me under a name no share had: not a share either, and the
    # notice does not say it was one.
    moved = Op("move_remote", "/Shared with me/notes.txt", "moved", src="/Shared with me/Y/c")
    kept, notices = outside_shares([moved, Op("mkdir_remote", "/Shared with me/Z", "new")],
                                   remote, synced)
    assert kept == []
    assert notices == {"/Shared with me/notes.txt": NOT_A_SHARE, "/Shared with me/Z": NOT_A_SHARE}
    assert mount_of("/Shared with me") is None and mount_of("/Shared with me/X/a/b") == \
        "/Shared with me/X"


def test_windows_names_are_noticed_not_held_back() -> None:
    assert set(not_on_windows(["/ok.txt", "/a:b", "/CON.txt"])) == {"/a:b", "/CON.txt"}


def test_the_deletion_guard_counts_files_below_deleted_folders() -> None:
    synced = {f"/d/{i}": SyncedEntry(f"/d/{i}", False, str(i), 1, 1, 1, i, "c", ())
              for i in range(10)}
    synced["/d"] = SyncedEntry("/d", True, "d", 1, 0, 0, 99, None, ())
    folder = [Op("delete_remote", "/d", "deleted in the folder")]
    assert too_many_deletions(folder, synced, min_files=10, share=0.5) is not None
    assert too_many_deletions(folder, synced, min_files=11, share=0.5) is None  # too few files
    half = [Op("delete_remote", f"/d/{i}", "deleted") for i in range(5)]
    assert too_many_deletions(half, synced, min_files=10, share=0.5) is None  # not more than half
