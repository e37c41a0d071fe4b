"""What the load test's parts share: its settings, the figures it gathers, percentiles."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class LoadConfig:
    users: int = 200
    seconds: float = 60.0
    slowloris: int = 300
    bomb_every: float = 2.0
    longpoll_seconds: float = 20.0
    think: tuple[float, float] = (0.2, 1.0)
    seed: int = 1
    header_timeout: float = 60.0  # the server's limits.header_timeout_seconds


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    attacks: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # status, seconds
    attack_failures: list[str] = field(default_factory=list)
    loris: dict[str, int] = field(default_factory=lambda: {
        "opened": 0, "refused": 0, "dropped": 0, "bytes_sent": 0, "most_at_once": 0})
    loris_open: int = 0
    polls_with_changes: int = 0
    rss_kb: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)  # when the load began
    slowest: list[tuple[float, str, float]] = field(default_factory=list)  # s, kind, at

    def took(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if kind != "longpoll wake":
            self.slowest.append((seconds, kind, time.monotonic() - seconds - self.started))
            if len(self.slowest) > 200:
                self.slowest = sorted(self.slowest, reverse=True)[:20]

    def error(self, who: str, what: str) -> None:
        if len(self.errors) < 10_000:
            self.errors.append(f"{who}: {what}")

    def honest_p99(self) -> float:
        every = [t for k, v in self.latencies.items() if k != "longpoll wake" for t in v]
        return percentile(every, 0.99) if every else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def address(i: int) -> str:
    """User ``i``'s own source address, in 127.1.0.0/16 (all of 127/8 is loopback on Linux)."""
    return f"127.1.{i // 250}.{i % 250 + 1}"
