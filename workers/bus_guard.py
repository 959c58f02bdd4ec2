"""Admission control for the sample bus: who may send what, how fast, and the counts.

Clock-control accepts a frame only from a worker id it knows, of a type that
worker kind may send, about the source that worker measures, and within that
source's rate cap (a token bucket sized from its *configured* poll limits, as
the supervisor's SourceSet says: never from what the worker reports about
itself). Everything else is dropped and counted per sender; `ntpctl status`
shows the counts.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from ntpd_py.core.token_bucket import TokenBucket

__all__ = ["BusGuard", "SenderStats", "TokenBucket"]

# Allow several times the expected sample rate, and bursts (e.g. an iburst).
RATE_FACTOR = 4.0
MIN_RATE_PER_S = 2.0
BURST = 16.0


@dataclass
class SenderStats:
    accepted: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class BusGuard:
    """Per-sender rate caps and drop counters for frames arriving on the bus."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self.stats: dict[str, SenderStats] = collections.defaultdict(SenderStats)

    def configure(self, sender: str, poll_log2: int, frames_per_poll: int = 1) -> None:
        """Cap `sender` from its configured (shortest) poll interval; a bucket kept if unchanged."""
        rate = max(MIN_RATE_PER_S, RATE_FACTOR * frames_per_poll * 2.0 ** (-poll_log2))
        bucket = self._buckets.get(sender)
        if bucket is None or bucket.rate_per_s != rate:
            self._buckets[sender] = TokenBucket(rate, max(BURST, rate))

    def forget(self, sender: str) -> None:
        self._buckets.pop(sender, None)

    def known(self) -> set[str]:
        return set(self._buckets)

    def admit(self, sender: str, now_ns: int) -> bool:
        bucket = self._buckets.get(sender)
        if bucket is None:
            self.drop(sender, "unknown-sender")
            return False
        if not bucket.take(now_ns):
            self.drop(sender, "rate-limited")
            return False
        return True

    def accept(self, sender: str) -> None:
        self.stats[sender].accepted += 1

    def drop(self, sender: str, reason: str) -> None:
        # Unknown senders all count under one name so a spoofer cannot grow the table.
        key = sender if sender in self._buckets else "(unknown)"
        self.stats[key].dropped[reason] += 1

    def totals(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for stats in self.stats.values():
            total.update(stats.dropped)
        return dict(total)
