"""Run the whole-system simulation (tests/sim_run.py) over many seeds and print the count.

    python scripts/simulate.py --seeds 500            # seeds 1..500
    python scripts/simulate.py --seeds 500 --jobs 2   # in two processes
    python scripts/simulate.py --seed 1234 -v         # one seed again, with its log

Each seed starts its own server and devices in a temporary directory (removed after, unless the
seed failed: then its directory and log are kept and named). The last line reads
``seeds run: N, divergences: D, losses: L, problems: P``; the exit status is 1 if any seed
failed. A failing seed replays the same operations and crash points from its number.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.sim_run import Outcome, simulate  # noqa: E402


def run_seed(job: tuple[int, int, bool]) -> tuple[int, int, int, int, int, int, int, str]:
    """One seed in a fresh directory: (seed, divergences, losses, problems, crashes, syncs,
    items kept of shares that ended, report if it failed or ``verbose``)."""
    seed, steps, verbose = job
    logging.disable(logging.CRITICAL)  # the server's access log and the client's lines
    workdir = Path(tempfile.mkdtemp(prefix=f"sim-{seed}-"))
    try:
        outcome: Outcome = asyncio.run(simulate(seed, workdir, steps))
    except BaseException as exc:  # a crash of the harness itself is a failed seed too
        return seed, 0, 0, 1, 0, 0, 0, f"seed {seed}: the run raised {exc!r} (kept: {workdir})"
    text = ""
    if not outcome.ok:
        (workdir / "simulation.log").write_text(outcome.report())
        text = outcome.report() + f"\n(kept: {workdir})"
    else:
        if verbose:
            text = outcome.report()
        shutil.rmtree(workdir, ignore_errors=True)
    return (seed, len(outcome.divergences), len(outcome.losses), len(outcome.problems),
            outcome.crashes, outcome.syncs, outcome.kept_after_unshare, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, help="run this one seed")
    ap.add_argument("--seeds", type=int, default=100, help="run seeds FIRST..FIRST+N-1")
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="operations per seed")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run at once, in processes")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every seed's log")
    args = ap.parse_args()
    seeds = [args.seed] if args.seed is not None else \
        list(range(args.first, args.first + args.seeds))
    jobs = [(s, args.steps, args.verbose) for s in seeds]
    start = time.monotonic()
    totals = [0, 0, 0, 0, 0, 0]
    failed: list[int] = []
    with mp.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        for i, (seed, div, lost, probs, crashes, syncs, kept, text) in enumerate(
                pool.imap_unordered(run_seed, jobs), 1):
            for k, v in enumerate((div, lost, probs, crashes, syncs, kept)):
                totals[k] += v
            if div or lost or probs:
                failed.append(seed)
            if text:
                print(text, flush=True)
            if i % 10 == 0 or i == len(jobs):
                print(f"... {i}/{len(jobs)} seeds, {time.monotonic() - start:.0f} s, "
                      f"failed so far: {sorted(failed)}", flush=True)
    print(f"steps per seed: {args.steps}; syncs: {totals[4]}; crashes injected: {totals[3]}; "
          f"items kept of shares that ended (by design): {totals[5]}; "
          f"{time.monotonic() - start:.0f} s")
    print(f"seeds run: {len(jobs)}, divergences: {totals[0]}, losses: {totals[1]}, "
          f"problems: {totals[2]}" + (f"; failed seeds: {sorted(failed)}" if failed else ""))
    return 1 if failed else 0


class _Serial:
    """The Pool interface, in this process (``--jobs 1``)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn, jobs):  # type: ignore[no-untyped-def]
        return map(fn, jobs)


if __name__ == "__main__":
    sys.exit(main())
