"""Does a PHC poll's claimed σ match the scatter between polls? (run in the QEMU guest)

    python -m tests.vm run -- .venv/bin/python benchmarks/phc_sigma_check.py [--seconds 60]

Reads /dev/ptp0 once a second with PTP_SYS_OFFSET_EXTENDED (25 readings),
turns each poll into one offset with ROBUST (the default estimator for
EXTENDED), and compares the σ ROBUST claims from the poll's own scatter with
the scatter between polls: nothing steers the clock here, so the offsets lie
on a line plus noise, and the second difference of three consecutive offsets
(taken 1 s apart) has variance 6 σ² for independent per-poll errors. A ratio
(between-poll σ over claimed σ) well above 1 means the readings of one poll
share an error their scatter cannot show, and a filter trusting the claimed σ
follows that error. Nothing here adjusts any clock.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from ntpd_py.core.phc import ReadMethod
from ntpd_py.core.phc_estimate import Estimator, WindowSlope, estimate
from ntpd_py.workers._phc import open_phc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--path", default="/dev/ptp0")
    parser.add_argument("--readings", type=int, default=25)
    args = parser.parse_args()
    device, _ = open_phc(args.path)
    slope = WindowSlope()
    polls: list[tuple[int, float, float, int]] = []  # (midpoint, offset, claimed σ, window)
    next_t = time.monotonic()
    for _ in range(args.seconds):
        next_t += 1.0
        time.sleep(max(0.0, next_t - time.monotonic()))
        readings = device.read(ReadMethod.EXTENDED, args.readings)
        assert isinstance(readings, list)
        est = estimate(readings, Estimator.ROBUST, slope)
        slope.update(readings)
        polls.append((est.realtime_ns, float(est.offset_ns), est.sigma_ns or 0.0,
                      min(r.window_ns for r in readings)))
    # second differences over (nearly) equally spaced polls, scaled to per-poll σ
    d2 = []
    for a, b, c in zip(polls, polls[1:], polls[2:], strict=False):
        t0, t1, t2 = a[0], b[0], c[0]
        # interpolate b's line position from a and c: removes drift for uneven spacing
        w = (t1 - t0) / (t2 - t0)
        d2.append(b[1] - (a[1] + w * (c[1] - a[1])))
    # Var(b - (1-w) a - w c) = σ² (1 + (1-w)² + w²) ≈ 1.5 σ² for w ≈ 1/2
    between = math.sqrt(statistics.fmean(x * x for x in d2) / 1.5)
    claimed = statistics.median(p[2] for p in polls)
    print(f"polls {len(polls)}; best window median {statistics.median(p[3] for p in polls):.0f} ns")
    print(f"claimed σ per poll (ROBUST, median): {claimed:.1f} ns")
    print(f"between-poll σ (second differences): {between:.1f} ns")
    print(f"ratio between / claimed: {between / max(claimed, 1e-9):.1f}")
    print("d2 (ns):", " ".join(f"{x:.0f}" for x in d2[:40]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
