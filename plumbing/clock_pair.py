"""CLOCK_MONOTONIC and CLOCK_REALTIME as one instant.

Two clock reads in a row are one instant only if nothing runs between them; a
preempted process pairs a monotonic time with a realtime read microseconds
(under load, milliseconds) later. Whatever then converts between the two
clocks carries that gap as a constant error. Reading realtime between two
monotonic reads bounds the gap, and the tightest of a few tries keeps it near
the cost of a clock read.
"""

from __future__ import annotations

import time

__all__ = ["PAIR_TRIES", "mono_real_pair"]

PAIR_TRIES = 4


def mono_real_pair(tries: int = PAIR_TRIES) -> tuple[int, int]:
    """(CLOCK_MONOTONIC ns, CLOCK_REALTIME ns) at the same instant, within the tightest
    of ``tries`` monotonic windows around the realtime read."""
    get, mono_id, real_id = time.clock_gettime_ns, time.CLOCK_MONOTONIC, time.CLOCK_REALTIME
    best: tuple[int, int, int] | None = None
    for _ in range(max(1, tries)):
        before = get(mono_id)
        real = get(real_id)
        after = get(mono_id)
        if best is None or after - before < best[0]:
            best = (after - before, before + (after - before) // 2, real)
    assert best is not None
    return best[1], best[2]
