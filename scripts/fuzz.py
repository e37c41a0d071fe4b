"""Fuzz a real server from its OpenAPI document, at volume (issue 17).

    python scripts/fuzz.py                      # >= 20,000 cases, seed 1
    python scripts/fuzz.py --seed 7 --examples 40
    python scripts/fuzz.py --seed 7 --only createFolder --only moveFile   # replay a finding

Starts ``drive-server serve`` as its own process on a fresh data directory (so its memory is
measured alone), makes the drive tests/fuzzing.py describes, then sends ``--examples`` valid and
``--examples`` invalid requests to every operation of ``GET /api/openapi.json`` (split over
``--workers`` processes), seeded by ``--seed`` (the same seed sends the same requests; one
worker also sends them in the same order), rounds after rounds with seeds ``seed``,
``seed+1``, ... until ``--cases`` have been sent; each round also runs ``--chains`` stateful
chains along the document's links (tests/fuzzing_links.py). Prints the cases run, the 5xx
found (each with its seed, operation and curl command), the other failures (answers the
document does not describe, errors not in the JSON shape) and the server's RSS before and
after; exits 1 on any 5xx or failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fuzzing, fuzzing_links  # noqa: E402

METRICS_TOKEN = "fuzz-metrics-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The server as users run it, with registration open and short long polls (a fuzzed
    ``timeout`` would otherwise hold each feed request for up to two minutes)."""
    env = {**os.environ, "DRIVE_ACCOUNTS_REGISTRATION_OPEN": "true",
           "DRIVE_LIMITS_MAX_CONNECTIONS_PER_CLIENT": "0",
           "DRIVE_SYNC_LONGPOLL_DEFAULT_SECONDS": "0.2", "DRIVE_SYNC_LONGPOLL_MAX_SECONDS": "0.5",
           "DRIVE_METRICS_TOKEN": METRICS_TOKEN}
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "driveserver", "serve", "--data-dir",
                             str(data_dir / "data"), "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return proc
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not start; see {data_dir / 'server.log'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000, help="at least this many (20,000)")
    parser.add_argument("--examples", type=int, default=40,
                        help="valid and invalid requests per operation and round (40)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", action="append", default=[], help="an operationId (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="statuses per operation")
    parser.add_argument("--chains", type=int, default=100,
                        help="stateful chains (along the document's links) per round (100)")
    parser.add_argument("--workers", type=int, default=2,
                        help="fuzzing processes (2); replay a finding with 1")
    args = parser.parse_args()
    # SIGTERM stops the run like Ctrl-C, so the server it started is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="drive-fuzz-") as tmp:
        port = free_port()
        proc = start_server(Path(tmp), port)
        base_url = f"http://127.0.0.1:{port}"
        try:
            rss_before = rss_mb(proc.pid)
            reports = []
            seed_value = args.seed
            while sum(r.cases for r in reports) < args.cases:
                if args.only or args.workers <= 1:
                    report = fuzzing.run(base_url, examples=args.examples, seed_value=seed_value,
                                         only=args.only, metrics_token=METRICS_TOKEN)
                else:
                    report = fuzzing.run_parallel(base_url, examples=args.examples,
                                                  seed_value=seed_value, workers=args.workers,
                                                  metrics_token=METRICS_TOKEN)
                reports.append(report)
                print(report.summary(), f"(server RSS now {rss_mb(proc.pid):.0f} MB)", flush=True)
                if args.chains and not args.only:
                    pools = fuzzing.prepare(base_url, f"-chains-{seed_value}")
                    chained = fuzzing_links.run_stateful(base_url, pools, scenarios=args.chains,
                                                         steps=8, seed_value=seed_value)
                    reports.append(chained)
                    print("  stateful:", chained.summary(),
                          f"(server RSS now {rss_mb(proc.pid):.0f} MB)", flush=True)
                    for finding in chained.server_errors + chained.failures:
                        print("  ", finding, flush=True)
                if args.verbose:
                    for op_id in sorted(report.per_operation):
                        shown = ", ".join(f"{s}: {n}" for (o, s), n in
                                          sorted(report.per_operation_status.items()) if o == op_id)
                        print(f"    {op_id}: {shown}")
                for finding in report.server_errors + report.failures:
                    print("  ", finding, flush=True)
                if report.cases == 0 or args.only:
                    break
                seed_value += 1
            rss_after = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cases = sum(r.cases for r in reports)
        server_errors = sum(len(r.server_errors) for r in reports)
        count_5xx = sum(r.count_5xx for r in reports)
        failures = sum(len(r.failures) for r in reports)
        seeds = ", ".join(str(r.seed) for r in reports)
        print(f"cases run: {cases} (seeds {seeds}); 5xx found: {count_5xx}; other failures: "
              f"{failures}; server RSS before/after: {rss_before:.0f} / {rss_after:.0f} MB")
        if server_errors or count_5xx:  # the tracebacks, before the data directory goes
            log = (Path(tmp) / "server.log").read_text(errors="replace").splitlines()
            print("\n".join(line for line in log if "Error" in line or "unhandled" in line),
                  file=sys.stderr)
        return 1 if (count_5xx or failures) else 0


if __name__ == "__main__":
    sys.exit(main())
