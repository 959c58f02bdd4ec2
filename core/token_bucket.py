"""A token bucket with time passed in: the rate limiter of the bus and the control socket.

Pure state: `take(now_ns)` refills by the CLOCK_MONOTONIC time elapsed since the
last call and spends one token if there is one. The first call starts full.
"""

from __future__ import annotations

from dataclasses import dataclass

from .units import NS_PER_S

__all__ = ["TokenBucket"]


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float = 0.0
    last_ns: int | None = None

    def take(self, now_ns: int) -> bool:
        if self.last_ns is None:
            self.tokens = self.burst
        else:
            elapsed = max(0, now_ns - self.last_ns) / NS_PER_S
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)
        self.last_ns = now_ns
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
