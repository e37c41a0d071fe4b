"""kill -9 sweep at volume: ``drive-server serve`` and two ``drive-sync run`` daemons killed
with SIGKILL at seeded points during uploads, downloads, moves, conflicts and GC, restarted,
and checked to converge with every saved content kept (see ``tests/kill_points.py``).

    python scripts/kill_sweep.py --points 200 --seed 1     # prints the count survived
    python scripts/kill_sweep.py --seed 1 --only 57        # reruns kill point (1, 57) alone

Exits 1 at the first point that does not survive, naming it and where its logs are.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kill_points import run_sweep  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--points", type=int, default=200, help="kill points 0..N-1 (default 200)")
    p.add_argument("--start", type=int, default=0, help="first point index")
    p.add_argument("--only", type=int, nargs="+", help="just these point indexes")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args()
    points = args.only or list(range(args.start, args.start + args.points))
    work = Path(tempfile.mkdtemp(prefix="kill-sweep-"))
    started = time.monotonic()
    try:
        sweep = asyncio.run(run_sweep(work, args.seed, points,
                                      log=lambda line: print(line, flush=True)))
    except AssertionError as exc:
        print(f"FAILED: {exc}\nwork directory kept: {work}", flush=True)
        return 1
    kinds = Counter(f"{s}/{v}" for _, _, s, v in sweep.survived)
    print(f"TOTAL: {len(sweep.survived)} of {len(points)} kill points survived (seed "
          f"{args.seed}), {len(sweep.saved)} saved contents all kept, in "
          f"{time.monotonic() - started:.0f} s; by scenario/victim: {dict(sorted(kinds.items()))}")
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
