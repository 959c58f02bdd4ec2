"""Restart policy for children, as pure functions of time (no clock reads here).

A child that dies is restarted after an exponential backoff (0.5 s doubling
to a 30 s cap). A child that stayed up for `STABLE_AFTER_NS` counts as
healthy again and its next failure starts from the short delay.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BACKOFF_CAP_NS",
    "BACKOFF_START_NS",
    "HEARTBEAT_TIMEOUT_NS",
    "RestartState",
    "next_restart_ns",
]

BACKOFF_START_NS = 500_000_000
BACKOFF_CAP_NS = 30_000_000_000
STABLE_AFTER_NS = 60_000_000_000
# Four missed heartbeats (ipc.messages.HEARTBEAT_INTERVAL_NS): a hung child is
# restarted within 20 s, and a loaded machine delaying one heartbeat is no reason.
HEARTBEAT_TIMEOUT_NS = 20_000_000_000
STOP_GRACE_NS = 5_000_000_000


def backoff_ns(consecutive_failures: int) -> int:
    """Delay before restart number `consecutive_failures` (1 = first restart)."""
    if consecutive_failures <= 0:
        return 0
    delay = BACKOFF_START_NS << min(consecutive_failures - 1, 16)
    return min(delay, BACKOFF_CAP_NS)


@dataclass
class RestartState:
    """Per-child bookkeeping: how often it failed in a row and when it started."""

    restarts: int = 0
    consecutive_failures: int = 0
    started_mono_ns: int | None = None

    def on_start(self, now_ns: int) -> None:
        self.started_mono_ns = now_ns

    def on_exit(self, now_ns: int) -> int:
        """Record an unexpected exit; return the monotonic time to restart at."""
        if self.started_mono_ns is not None and now_ns - self.started_mono_ns >= STABLE_AFTER_NS:
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        self.restarts += 1
        self.started_mono_ns = None
        return next_restart_ns(self.consecutive_failures, now_ns)


def next_restart_ns(consecutive_failures: int, now_ns: int) -> int:
    return now_ns + backoff_ns(consecutive_failures)
