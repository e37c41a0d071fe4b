"""S3 faults at volume: uploads and downloads through the real server on a real S3 server
(SeaweedFS, started here on 127.0.0.1) with faults injected on a share of all S3 calls.

    python scripts/s3_fault_sweep.py --files 1000 --share 0.15 --seeds 1 2 3

Each seed is one campaign (``tests.test_s3_faults.run_campaign``: a fresh bucket and server,
``--files`` uploads, a quarter of them overwriting a file, each committed file downloaded by
both paths during the faults and again after, then every block of every committed version
read back and verified). Prints what the proxy did and what the clients saw; exits 1 if any
byte served was wrong, any committed block unreadable, or any failure unclear.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.s3_faults import ALL_KINDS, FaultPlan  # noqa: E402
from tests.s3server import _sync_client, _verify, _WeedProcess  # noqa: E402
from tests.test_s3_faults import run_campaign  # noqa: E402


async def sweep(args: argparse.Namespace, work: Path) -> int:
    weed = _WeedProcess(work / "weed")
    s3 = weed.start()
    bad = 0
    totals = {"calls": 0, "faults": 0, "up_ok": 0, "up_failed": 0, "down_ok": 0,
              "down_failed": 0, "versions": 0, "blocks": 0}
    try:
        _verify(s3)
        client = _sync_client(s3)
        for seed in args.seeds:
            bucket = f"sweep-{uuid.uuid4().hex[:16]}"
            client.create_bucket(Bucket=bucket)
            plan = FaultPlan(share=args.share, kinds=tuple(args.kinds), latency=(0.02, 0.2))
            start = time.monotonic()
            out, proxy = await run_campaign(work / f"seed{seed}", s3, bucket, seed=seed,
                                            files=args.files, plan=plan,
                                            concurrency=args.concurrency)
            s = proxy.summary()
            print(f"seed {seed}: {s['calls']} S3 calls, {s['faults']} faulted "
                  f"({100 * s['share']:.1f} %: {s['counts']}); uploads {out.uploads_ok} ok, "
                  f"{out.uploads_failed} failed clearly {dict(out.errors)}; downloads "
                  f"{out.downloads_ok} ok, {out.downloads_failed} failed; verified "
                  f"{out.versions_verified} versions / {out.blocks_verified} blocks; corrupt "
                  f"{len(out.corrupt)}, lost {len(out.lost)}, unclear {len(out.unclear)} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
            for line in (out.corrupt + out.lost + out.unclear)[:20]:
                print("  ", line)
            bad += len(out.corrupt) + len(out.lost) + len(out.unclear)
            totals["calls"] += s["calls"]
            totals["faults"] += s["faults"]
            totals["up_ok"] += out.uploads_ok
            totals["up_failed"] += out.uploads_failed
            totals["down_ok"] += out.downloads_ok
            totals["down_failed"] += out.downloads_failed
            totals["versions"] += out.versions_verified
            totals["blocks"] += out.blocks_verified
            client.delete_bucket(Bucket=bucket)
    finally:
        weed.stop()
    share = totals["faults"] / totals["calls"] if totals["calls"] else 0.0
    print(f"TOTAL: {len(args.seeds)} seeds, {totals['calls']} S3 calls, {totals['faults']} "
          f"faulted ({100 * share:.1f} %); uploads {totals['up_ok']} ok / {totals['up_failed']} "
          f"failed clearly; downloads {totals['down_ok']} ok / {totals['down_failed']} failed; "
          f"{totals['versions']} versions, {totals['blocks']} blocks verified; "
          f"corrupt/lost/unclear: {bad}")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=500, help="uploads per seed (default 500)")
    p.add_argument("--share", type=float, default=0.15, help="share of S3 calls faulted")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--kinds", nargs="+", default=list(ALL_KINDS), choices=ALL_KINDS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3-faults-") as tmp:
        return asyncio.run(sweep(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
