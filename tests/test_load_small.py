"""The load test (bench/load_bench.py) at a small size: a correctness check, not a benchmark.

30 honest users for 15 s against a ``drive-server serve`` subprocess, beside a slowloris and the
bomb attempts. Every honest request must succeed (each download equal to the bytes saved, each
listing whole, the long polls woken by the users' own commits on their other device), every
attack must be refused with a 4xx (or the connection closed) within its bound, the slowloris
must have been dropped by the head timeout (set to 4 s here so that it fires in the run), and
no honest request may have been stalled past a generous bound. ``python bench/load_bench.py``
runs it at 200 users.
"""

from __future__ import annotations

from bench.load_bench import LoadConfig, bench, report

STALL_BOUND_SECONDS = 10.0  # generous: the machine is shared; a stalled loop takes far longer


async def test_honest_users_are_served_beside_a_slowloris_and_bombs() -> None:
    cfg = LoadConfig(users=30, seconds=15, slowloris=60, bomb_every=1.0,
                     longpoll_seconds=5, header_timeout=4.0)
    stats = await bench(cfg)
    text = report(stats, cfg)
    assert not stats.errors, text
    assert not stats.attack_failures, text
    for kind in ("upload", "overwrite", "download", "list"):
        assert len(stats.latencies.get(kind, [])) >= 10, text
    assert stats.polls_with_changes >= cfg.users, text
    worst = max(t for kind, v in stats.latencies.items() if kind != "longpoll wake" for t in v)
    assert worst < STALL_BOUND_SECONDS, text
    assert len(stats.attacks) == 4, text  # every kind of bomb was tried, and refused
    for name, results in stats.attacks.items():
        assert all(st == 0 or 400 <= st < 500 for st, _ in results), (name, text)
    loris = stats.loris
    assert loris["most_at_once"] >= cfg.slowloris // 2 and loris["bytes_sent"] > 0, text
    assert loris["dropped"] >= cfg.slowloris // 2, text  # the head timeout closed them
