"""Basic PTP_SYS_OFFSET with shared stamps that land early or late: which estimator copes.

    .venv/bin/python benchmarks/phc_stamp_jitter.py [--jitters NS ...] [--seeds N] [--polls N]

For each `stamp-jitter` (core/sim/phc.py) on the aws-ena-basic scenario's
delays: (1) per poll, with no clock in the loop, the sd and p99 of each
estimator's offset (seed 1), and (2) the whole scenario (1 h, figures over
the last 30 min) with the low-quartile mean (the basic default) and with
ROBUST, mean of seeds 1..N: RMS, max and mean offset.
"""

from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import replace
from pathlib import Path

from ntpd_py.core.phc import Reading
from ntpd_py.core.phc_estimate import Estimator, WindowSlope, estimate
from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams, SimClock
from ntpd_py.core.sim.phc import PhcModel, PhcParams
from ntpd_py.core.sim.runner import Simulation
from ntpd_py.core.sim.scenario import load_scenario_text

SCENARIO = Path(__file__).resolve().parent.parent / "deploy" / "scenarios" / "aws-ena-basic.toml"
NS = 1_000_000_000
BASE = PhcParams(method="basic", readings=25, delay_dist="gamma", delay_shape=4,
                 delay_up_s=600e-9, delay_down_s=400e-9, granularity_s=10e-9)


def per_poll(jitter_s: float, polls: int) -> dict[Estimator, tuple[float, float]]:
    model = PhcModel("/dev/ptp0", replace(BASE, stamp_jitter_s=jitter_s), 1)
    clock = SimClock(LocalClockModel(LocalClockParams(), 1), real_epoch_ns=0, mono_epoch_ns=0)
    offsets: dict[Estimator, list[int]] = {e: [] for e in Estimator}
    slopes = {e: WindowSlope() for e in Estimator}
    for k in range(polls):
        raw = model.read(k * NS, k, clock) or []
        readings = [Reading(*r) for r in raw]
        for e in Estimator:
            offsets[e].append(estimate(readings, e, slopes[e]).offset_ns)
            slopes[e].update(readings)
    out = {}
    for e, values in offsets.items():
        values = values[50:]  # after the slope's warm-up
        mid = statistics.median(values)
        dev = sorted(abs(v - mid) for v in values)
        out[e] = (statistics.pstdev(values), float(dev[int(0.99 * len(dev))]))
    return out


def whole(jitter_s: float, estimator: str, seeds: int) -> tuple[float, float, float]:
    text = re.sub(r"(?m)^stamp-jitter = .*$", f"stamp-jitter = {jitter_s!r}",
                  SCENARIO.read_text())
    text = text.replace('method = "basic"', f'method = "basic"\nestimator = "{estimator}"', 1)
    scenario = load_scenario_text(text, "aws-ena-basic")
    runs = [Simulation(scenario, seed=s).run().summary for s in range(1, seeds + 1)]
    return (statistics.fmean(r.rms_offset_s or 0.0 for r in runs),
            statistics.fmean(r.max_abs_offset_s or 0.0 for r in runs),
            statistics.fmean(r.mean_offset_s or 0.0 for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jitters", type=float, nargs="*", default=[0, 100, 200, 400],
                        help="ns (default 0 100 200 400)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--polls", type=int, default=1000)
    args = parser.parse_args()
    print("per poll, seed 1: sd / p99 of the offset (ns)")
    print("| jitter | " + " | ".join(e.value for e in Estimator) + " |")
    print("|---" * (len(Estimator) + 1) + "|")
    for j in args.jitters:
        figures = per_poll(j * 1e-9, args.polls)
        print(f"| ±{j:g} ns | " + " | ".join(
            f"{sd:.0f} / {p99:.0f}" for sd, p99 in figures.values()) + " |")
    print(f"\naws-ena-basic, 1 h, last 30 min, mean of {args.seeds} seeds: RMS / max / mean offset")
    print("| jitter | low-quartile-mean | robust |")
    print("|---|---|---|")
    for j in args.jitters:
        cells = []
        for est in ("low-quartile-mean", "robust"):
            rms, mx, mean = whole(j * 1e-9, est, args.seeds)
            cells.append(f"{rms * 1e9:.1f} / {mx * 1e9:.0f} / {mean * 1e9:+.0f} ns")
        print(f"| ±{j:g} ns | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
