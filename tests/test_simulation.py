"""The seeded whole-system simulation (tests/sim_run.py) at a small, fixed size.

A handful of seeds, each: Alice's two devices, Bob's one, an API client each, 40 random steps
(edits, renames, moves, deletes, folders, uploads and moves over the API, restores from the
trash, shares between the two and their permission changed, devices offline for a while,
engines crashed at a remote call and restarted), then every folder must equal its user's
server tree and nothing saved may be lost. A failing seed prints its log and the command that
replays it: ``python scripts/simulate.py --seed N -v``. Hundreds of seeds:
``python scripts/simulate.py --seeds 500``.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.helpers import start_server
from tests.sim_run import Outcome, check, kept_after_unshare, simulate
from tests.sim_world import SimDevice, SimUser, World, crashing, tune
from tests.sync_helpers import EMAIL, make_devices

SEEDS = [3, 17, 101, 2027, 40961]


@pytest.mark.parametrize("seed", SEEDS)
async def test_simulated_users_converge_and_lose_nothing(tmp_path: Path, seed: int) -> None:
    outcome = await simulate(seed, tmp_path, steps=40)
    assert outcome.ok, outcome.report()
    assert outcome.syncs >= 9  # at least the three final rounds ran, for each device


async def test_the_seeds_crash_engines_and_replay_exactly(tmp_path: Path) -> None:
    """The CI seeds do crash engines mid-sync (the hook is live), and one seed run twice
    makes the same operations and crash points: a failing seed reproduces from its number."""
    first = await simulate(SEEDS[1], tmp_path / "one", steps=40)
    again = await simulate(SEEDS[1], tmp_path / "two", steps=40)
    assert first.crashes >= 1, first.report()
    strip = [line for line in first.log if "conflicted copy" not in line]
    assert strip == [line for line in again.log if "conflicted copy" not in line]


async def test_the_check_sees_a_divergence_a_loss_and_a_failed_sync(tmp_path: Path) -> None:
    """The checks could fail: a file only in a folder, a saved content nowhere on the server
    and a crashed sync that never restarts are each reported."""
    server = await start_server(tmp_path / "data")
    try:
        await server.register(EMAIL)
        user = SimUser(EMAIL, await server.login(EMAIL, device="api"))
        [dev] = make_devices(tmp_path, "pc")
        with redirect_stdout(io.StringIO()):
            await dev.init(server)
        tune(dev)
        d = SimDevice("alice", dev)
        user.devices.append(d)
        world = World(server, {"alice": user}, [])
        dev.write("kept.txt", "synced")
        await world.sync(d)
        dev.write("only-here.txt", "never synced")
        world.saved.add(b"saved but never sent")
        with crashing(1, after=False) as fired:
            await world._run_once(d, may_crash=True)  # dies before its first request
        assert fired == ["call"]
        out = Outcome(0, 0)
        await check(world, out)
        assert len(out.divergences) == 1 and "only-here.txt" in out.divergences[0]
        assert out.losses == ["LOST 20 bytes: b'saved but never sent'"]
        assert not world.problems
    finally:
        await server.stop()


def test_only_a_share_that_ended_may_differ() -> None:
    """What a device keeps of a folder no longer shared with its user is set aside (by design
    it keeps unsent changes); anything else, also inside a share that still stands, counts."""
    have = {"Shared with me": None, "Shared with me/A": None, "Shared with me/A/x": b"1",
            "Shared with me/B": None, "Shared with me/B/y": b"2", "z": b"3"}
    want = {"Shared with me": None, "Shared with me/A": None, "z": b"3"}
    assert kept_after_unshare(have, want) == {
        "Shared with me": None, "Shared with me/A": None, "Shared with me/A/x": b"1", "z": b"3"}
    assert kept_after_unshare({"Shared with me": None, "Shared with me/B": None}, {}) == {}
