"""kill -9 sweep in CI: the server and both daemons killed at seeded points during uploads,
downloads, moves, conflicts and GC (``tests/kill_points.py``), restarted, and they converge
with every content the user saved still on the server; at the end every block of every
committed version reads back verified. ``scripts/kill_sweep.py`` runs hundreds of points.

A failure names its kill point; ``python scripts/kill_sweep.py --seed S --only I`` reruns it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.kill_points import SCENARIOS, run_sweep

SEED = 17
POINTS = int(os.environ.get("KILL_SWEEP_POINTS", "12"))


async def test_kill_9_at_seeded_points_loses_nothing(tmp_path: Path) -> None:
    sweep = await run_sweep(tmp_path / "sweep", SEED, range(POINTS), log=lambda line: None)
    assert len(sweep.survived) == POINTS
    scenarios = {s for _, _, s, _ in sweep.survived}
    victims = {v for _, _, _, v in sweep.survived}
    # The fixed seed covers every scenario and kills each kind of process at least once.
    assert scenarios == set(SCENARIOS), sweep.survived
    assert {"a", "b", "server"} <= victims, sweep.survived
    assert len(sweep.saved) >= POINTS
