"""Counter-based random numbers: every draw is a pure function of (seed, name, stream, index).

A world evaluated by several processes, or out of order, must give the same
noise for the same reading. Hashing the key (BLAKE2b) instead of advancing a
shared generator makes that true, and is stable across Python versions
(unlike ``random.gauss`` and friends, whose algorithms may change).
"""

from __future__ import annotations

import hashlib
import math

__all__ = ["exponential", "normal", "uniform"]

_SCALE = 1.0 / (1 << 53)


def _pair(seed: int, name: str, stream: str, index: int) -> tuple[float, float]:
    key = f"{seed}\x1f{name}\x1f{stream}\x1f{index}".encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    a = int.from_bytes(digest[:8], "little") >> 11
    b = int.from_bytes(digest[8:], "little") >> 11
    # Both in (0, 1): never exactly 0, so log() below is safe.
    return (a + 0.5) * _SCALE, (b + 0.5) * _SCALE


def uniform(seed: int, name: str, stream: str, index: int) -> float:
    """Uniform on (0, 1)."""
    return _pair(seed, name, stream, index)[0]


def normal(seed: int, name: str, stream: str, index: int, sigma: float = 1.0) -> float:
    """Normal with mean 0 and standard deviation ``sigma`` (Box-Muller)."""
    u1, u2 = _pair(seed, name, stream, index)
    return sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def exponential(seed: int, name: str, stream: str, index: int, mean: float) -> float:
    """Exponential with the given mean (0 when the mean is 0)."""
    if mean <= 0.0:
        return 0.0
    return -mean * math.log(uniform(seed, name, stream, index))
