"""The QEMU e2e's steady window in the simulator: kvm-guest-tcg, minute 2-3 after launch.

    .venv/bin/python benchmarks/sim_tcg_window.py [--seeds N] [--scenario NAME]
        [--wander W] [--windows 180] [--common-noise S] [--frequency-change-noise S]

`python -m tests.vm e2e` judges each daemon on the last 60 s of a 180 s run,
long before the 30 minutes after which benchmarks/sim_accuracy.py measures.
This runs the scenario that models the guest's igb PHC (kvm-guest-tcg: 23 ns
of noise shared by the readings of a poll) cut to the e2e's timeline, and for
comparison after 10 and 60 minutes, and prints the clock's RMS offset and RMS
frequency error per seed and their mean. The e2e's figures are these plus the
truth reader's own floor (added in quadrature). ``--wander`` replaces the local
clock's wander (the guest's is near zero: its PHC and its clock both come from the
host's), ``--windows 180`` prints the minute 2-3 row only. ``--common-noise``
replaces the PHC's per-poll shared noise, ``--frequency-change-noise`` adds the phase
step the guest's kernel leaves behind each time the frequency is changed
(tests/vm/freq_glitch.py measures it). The last column is the sd of the frequency
correction's change from one second to the next, the e2e's "freq step".
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
from pathlib import Path

from ntpd_py.core.sim.metrics import Trace
from ntpd_py.core.sim.runner import Simulation
from ntpd_py.core.sim.scenario import load_scenario_text

SCENARIOS = Path(__file__).resolve().parent.parent / "deploy" / "scenarios"
WINDOWS = ((180, 120), (600, 540), (3600, 1800))  # (duration, measured from), seconds


def _freq_step(trace: Trace, after_s: float) -> float:
    """sd of the frequency correction's change per second from ``after_s`` on."""
    per_second: dict[int, float] = {}
    for t, correction in zip(trace.t_s, trace.correction, strict=True):
        if t >= after_s:
            per_second.setdefault(int(t), correction)
    values = [per_second[k] for k in sorted(per_second)]
    changes = [b - a for a, b in itertools.pairwise(values)]
    return statistics.pstdev(changes) if len(changes) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenario", default="kvm-guest-tcg")
    parser.add_argument("--wander", type=float, default=None,
                        help="the local clock's wander instead of the scenario's")
    parser.add_argument("--common-noise", type=float, default=None,
                        help="the PHC's per-poll shared noise instead of the scenario's (s)")
    parser.add_argument("--frequency-change-noise", type=float, default=None,
                        help="phase step (sigma, s) each frequency change leaves behind")
    parser.add_argument("--windows", type=int, nargs="*", default=[d for d, _ in WINDOWS],
                        help="durations to run (180, 600, 3600)")
    args = parser.parse_args()
    text = (SCENARIOS / f"{args.scenario}.toml").read_text()
    if args.wander is not None:
        text = re.sub(r"(?m)^wander = .*$", f"wander = {args.wander!r}", text)
    if args.common_noise is not None:
        text = re.sub(r"(?m)^common-noise = \S+", f"common-noise = {args.common_noise!r}", text)
    if args.frequency_change_noise is not None:
        text = re.sub(r"(?m)^wander = .*$", lambda m: m.group(0) + "\nfrequency-change-noise = "
                      f"{args.frequency_change_noise!r}", text, count=1)
    print(f"| {args.scenario} | RMS offset per seed (ns) | mean | RMS frequency error (mean) "
          "| freq step (mean) |")
    print("|---|---|---|---|---|")
    for duration, after in WINDOWS:
        if duration not in args.windows:
            continue
        edited = re.sub(r"(?m)^duration = .*$", f"duration = {duration}", text)
        edited = re.sub(r"(?m)^measure-after = .*$", f"measure-after = {after}", edited)
        scenario = load_scenario_text(edited, args.scenario)
        results = [Simulation(scenario, seed=s).run() for s in range(1, args.seeds + 1)]
        rms = [r.summary.rms_offset_s or 0.0 for r in results]
        freq = [r.summary.rms_freq_error_ppm or 0.0 for r in results]
        steps = [_freq_step(r.trace, after) for r in results]
        print(f"| {after}-{duration} s | {' '.join(f'{v * 1e9:.1f}' for v in rms)} "
              f"| {statistics.fmean(rms) * 1e9:.1f} ns | {statistics.fmean(freq) * 1e3:.1f} ppb "
              f"| {statistics.fmean(steps) * 1e9:.1f} ppb |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
