"""The QEMU e2e's steady window in the simulator: kvm-guest-tcg, minute 2-3 after launch.

    .venv/bin/python benchmarks/sim_tcg_window.py [--seeds N] [--scenario NAME]
        [--wander W] [--windows 180]

`python -m tests.vm e2e` judges each daemon on the last 60 s of a 180 s run,
long before the 30 minutes after which benchmarks/sim_accuracy.py measures.
This runs the scenario that models the guest's igb PHC (kvm-guest-tcg: 23 ns
of noise shared by the readings of a poll) cut to the e2e's timeline, and for
comparison after 10 and 60 minutes, and prints the clock's RMS offset and RMS
frequency error per seed and their mean. The e2e's figures are these plus the
truth reader's own floor (added in quadrature). ``--wander`` replaces the local
clock's wander (the guest's is near zero: its PHC and its clock both come from the
host's), ``--windows 180`` prints the minute 2-3 row only.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from ntpd_py.core.sim.runner import Simulation
from ntpd_py.core.sim.scenario import load_scenario_text

SCENARIOS = Path(__file__).resolve().parent.parent / "deploy" / "scenarios"
WINDOWS = ((180, 120), (600, 540), (3600, 1800))  # (duration, measured from), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenario", default="kvm-guest-tcg")
    parser.add_argument("--wander", type=float, default=None,
                        help="the local clock's wander instead of the scenario's")
    parser.add_argument("--windows", type=int, nargs="*", default=[d for d, _ in WINDOWS],
                        help="durations to run (180, 600, 3600)")
    args = parser.parse_args()
    text = (SCENARIOS / f"{args.scenario}.toml").read_text()
    if args.wander is not None:
        text = re.sub(r"(?m)^wander = .*$", f"wander = {args.wander!r}", text)
    print(f"| {args.scenario} | RMS offset per seed (ns) | mean | RMS frequency error (mean) |")
    print("|---|---|---|---|")
    for duration, after in WINDOWS:
        if duration not in args.windows:
            continue
        edited = re.sub(r"(?m)^duration = .*$", f"duration = {duration}", text)
        edited = re.sub(r"(?m)^measure-after = .*$", f"measure-after = {after}", edited)
        scenario = load_scenario_text(edited, args.scenario)
        runs = [Simulation(scenario, seed=s).run().summary for s in range(1, args.seeds + 1)]
        rms = [r.rms_offset_s or 0.0 for r in runs]
        freq = [r.rms_freq_error_ppm or 0.0 for r in runs]
        print(f"| {after}-{duration} s | {' '.join(f'{v * 1e9:.1f}' for v in rms)} "
              f"| {statistics.fmean(rms) * 1e9:.1f} ns | {statistics.fmean(freq) * 1e3:.1f} ppb |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
