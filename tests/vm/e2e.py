"""`python -m tests.vm e2e [--quick]`: ntpd-py against chrony on a real kernel clock, with faults.

Boots one TCG guest and runs both daemons in it, one after the other (the
host only runs QEMU: every clock that is steered is the guest's own), so the
two are compared on the same boot's floor by the same independent reader;
``--order`` says which goes first (swap it between runs). In the guest
(:mod:`tests.vm.e2e_guest`), per daemon: the clock is put back to nominal, the
floor is measured, the guest clock is detuned, the daemon runs on the igb PHC
plus a loopback NTP server, and the reader records the true error once a
second under two definitions (the narrowest of 25 EXTENDED readings, and the
median of the narrowest quarter); ntpd-py then gets a privilege check and four
faults. Prints the figures side by side with ratios, the faults with what was
observed, and the verdict against the issue's targets; writes ``report.txt``,
``report.json`` and ``e2e.png`` to the output directory.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .e2e_guest import Plan
from .e2e_report import (
    RunData,
    fault_figures,
    load,
    plot,
    steady_figures,
    table,
    window_calibration,
)
from .harness import CACHE, REPO, HarnessUnavailable, run_in_guest

__all__ = ["PLANS", "main", "run_e2e"]

# One plan per daemon: in the quick mode chrony, which starts in a blink, gets a
# shorter run than ntpd-py, whose Python start-up alone takes ~25 s under TCG.
PLANS = {
    "default": {"ntpd-py": Plan(), "chrony": Plan()},
    "quick": {
        "ntpd-py": Plan(floor_s=5, steady_s=55, window_s=15, settle_s=4, outage_s=5),
        "chrony": Plan(floor_s=5, steady_s=30, window_s=15),
    },
}
ERROR_BOUND_NS = 1_000_000  # during faults: |error| never above 1 ms
BOOT_BUDGET_S = 120  # per guest, beyond its planned phases


def _ctl_codes() -> str:
    from ntpd_py.ipc.messages import SCHEMA_VERSION, MsgType

    return f"{SCHEMA_VERSION},{int(MsgType.CTL_REQUEST)},{int(MsgType.CTL_REPLY)}"


def _guest_seconds(plan: Plan, daemon: str) -> float:
    total = plan.floor_s + plan.steady_s + 60
    if daemon == "ntpd-py":
        total += 4 * plan.settle_s + plan.outage_s + 75 + 30
    return total


def run_boot(plans: dict[str, Plan], order: list[str]) -> dict[str, RunData]:
    """Both daemons (or the one in `order`) in one guest boot, in that order."""
    args = [sys.executable, "-m", "tests.vm.e2e_guest", "--daemons", ",".join(order),
            "--plans", json.dumps({d: asdict(plans[d]) for d in order})]
    if "ntpd-py" in order:
        args += ["--ctl", _ctl_codes()]
    command = shlex.join(args) + ' --out "$NTPDPY_VM_RUN_DIR"'
    seconds = sum(_guest_seconds(plans[d], d) for d in order)
    result = run_in_guest(command, cwd=REPO, echo=True, timeout_s=seconds + BOOT_BUDGET_S)
    (result.run_dir / "console.txt").write_text(result.console)
    for note in result.notes:
        print(f"e2e: {note}", file=sys.stderr)
    return analyse(result.run_dir, order, result.wall_s, result.returncode)


def analyse(run_dir: Path, order: list[str], wall_s: float,
            returncode: int | None) -> dict[str, RunData]:
    """Every daemon's figures from a boot's run directory (also for an old run, --reanalyse)."""
    runs = {}
    for daemon in order:
        run = load(daemon, run_dir / daemon, wall_s, run_dir / "truth.jsonl")
        run.summary.setdefault("guest_returncode", returncode)
        runs[daemon] = run
    # one calibration for the boot, from its first floor phase (no daemon yet)
    calibration = window_calibration(runs[order[0]]) if order else None
    for daemon, run in runs.items():
        run.figures["steady"] = steady_figures(run, calibration)
        run.figures["faults"] = fault_figures(run) if daemon == "ntpd-py" else []
    return runs


def _fault_lines(run: RunData) -> list[str]:
    lines = ["faults (ntpd-py), true error from the independent reader:"]
    for f in run.figures["faults"]:
        if not f["complete"]:
            lines.append(f"  {f['fault']}: did not complete")
            continue
        worst = max(v for v in (f["max_direct_ns"], f["max_extrapolated_ns"], 0) if v is not None)
        parts = [f"max |err| {worst / 1e3:.3f} µs over {f['seconds']:.0f} s", f"steps {f['steps']}"]
        if f["n_extrapolated"]:
            parts.append(f"{f['n_extrapolated']} s without the PHC: max |err| "
                         f"{f['max_extrapolated_ns'] / 1e3:.3f} µs against its timeline "
                         "extrapolated in MONOTONIC_RAW")
        if f.get("phc_restore"):
            restore = f["phc_restore"]
            parts.append(f"the reloaded driver started its PHC "
                         f"{restore['reinit_offset_ns'] / 1e3:+.3f} µs off the old timeline; "
                         f"the runner shifted it back (residual {restore['residual_ns']} ns)")
        lines.append(f"  {f['fault']}: " + "; ".join(parts))
        observed = {k: v for k, v in f["observed"].items() if k not in ("timeline", "log")}
        lines.append(f"      observed: {json.dumps(observed)}")
    return lines


def _privilege_lines(run: RunData) -> list[str]:
    priv = run.summary.get("privileges")
    if not priv:
        return ["privileges: not checked (the run did not get that far)"]
    lines = ["privileges (/proc/PID/status in the guest, daemon started as root):"]
    for worker_id, p in priv["processes"].items():
        lines.append(f"  {worker_id:22} uid {p['uids'][0]:>5} gid {p['gids'][0]:>5} "
                     f"CapEff {p['CapEff']} CapBnd {p['CapBnd']} NoNewPrivs {p['NoNewPrivs']}")
    kernel = priv["kernel"]
    lines.append(f"  kernel clock: tick {kernel['tick_us']} µs, freq {kernel['freq_ppm']:+.3f} ppm"
                 f", unsync {kernel['unsync']} (steered by clock-control, backend "
                 f"{priv['clock_backend']})")
    lines.append("  problems: " + ("; ".join(priv["problems"]) or "none"))
    return lines


def verdict(ours: RunData, chrony: RunData | None, total_s: float, budget_s: float) -> list[str]:
    a = ours.figures["steady"]
    b = chrony.figures["steady"] if chrony else {}
    out = ["targets:"]

    def line(ok: bool | None, text: str) -> None:
        out.append(f"  [{'ok' if ok else 'n/a' if ok is None else 'MISSED'}] {text}")

    if a.get("rms_ns") is not None and b.get("rms_ns") is not None:
        text = (f"steady-state RMS ≤ chrony's: {a['rms_ns']:.0f} vs {b['rms_ns']:.0f} ns "
                f"(ratio {a['rms_ns'] / b['rms_ns']:.2f}, goal 0.8)")
        at_floor = all(fig["rms_ns"] <= 1.2 * (fig.get("floor") or {}).get("sd_ns", 0)
                       for fig in (a, b))
        if a["rms_ns"] > b["rms_ns"] and at_floor:
            out.append(f"  [floor] {text}: both within 1.2× their boot's measurement floor, "
                       "so the harness cannot tell them apart")
        else:
            line(a["rms_ns"] <= b["rms_ns"], text)
    else:
        line(None, "steady-state RMS: missing figures")
    qa, qb = (a.get("quarter") or {}).get("rms_ns"), (b.get("quarter") or {}).get("rms_ns")
    if qa is not None and qb is not None:
        line(qa <= qb, f"the same with the truth = median of the narrowest quarter: "
                       f"{qa:.0f} vs {qb:.0f} ns (ratio {qa / qb:.2f})")
    ta, tb = a.get("t_1us_s"), b.get("t_1us_s")
    line(None if ta is None or tb is None else ta <= tb,
         f"time to 1 µs ≤ chrony's: {_fmt(ta)} vs {_fmt(tb)} from launch")
    ta, tb = a.get("t_action_to_1us_s"), b.get("t_action_to_1us_s")
    line(None if ta is None or tb is None else ta <= tb,
         f"time to 1 µs ≤ chrony's, from each daemon's first adjtimex (leaving out ntpd-py's "
         f"Python start-up, {_fmt(a.get('t_first_action_s'))} under TCG): "
         f"{_fmt(ta)} vs {_fmt(tb)} (1 s resolution)")
    faults = ours.figures["faults"]
    worst = max((max(v for v in (f.get("max_direct_ns"), f.get("max_extrapolated_ns"), 0)
                     if v is not None) for f in faults if f["complete"]), default=None)
    steps = sum(f.get("steps", 0) for f in faults)
    complete = bool(faults) and all(f["complete"] for f in faults)
    line(complete and steps == 0 and worst is not None and worst < ERROR_BOUND_NS,
         f"faults: no step ({steps}), |error| < 1 ms (max {_fmt_ns(worst)})")
    line(total_s <= budget_s, f"whole run {total_s:.0f} s ≤ {budget_s:.0f} s")
    return out


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def _fmt_ns(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e3:.3f} µs"


def run_e2e(plans: dict[str, Plan], quick: bool, out: Path, command: str,
            order: list[str] | None = None, reanalyse: Path | None = None) -> dict[str, Any]:
    started = time.monotonic()
    order = [d for d in (order or ["ntpd-py", "chrony"]) if d in plans]
    if reanalyse is not None:
        boot = json.loads((reanalyse / "summary.json").read_text())
        order = boot["order"]
        runs = analyse(reanalyse, order, 0.0, 0)
        total = 0.0
    else:
        runs = run_boot(plans, order)
        total = time.monotonic() - started
    ours, chrony = runs.get("ntpd-py"), runs.get("chrony")
    out.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    if ours is not None:
        report.append(table(ours, chrony, command))
        report += _fault_lines(ours) + _privilege_lines(ours)
        report += verdict(ours, chrony, total, 180 if quick else 600)
        plot(ours, chrony, out / "e2e.png")
        report.append(f"plot: {out / 'e2e.png'}")
    report.append("guest runs: " + ", ".join(
        f"{r.daemon} {r.wall_s:.0f} s wall, exit {r.summary.get('guest_returncode')}, "
        f"files in {r.run_dir}" for r in runs.values()))
    text = "\n".join(report)
    print(text)
    (out / "report.txt").write_text(text + "\n")
    document = {"command": command, "total_s": total, "order": order,
                "plans": {d: asdict(p) for d, p in plans.items()},
                "runs": {d: {"figures": r.figures, "summary": r.summary, "wall_s": r.wall_s,
                             "run_dir": str(r.run_dir)} for d, r in runs.items()}}
    (out / "report.json").write_text(json.dumps(document, indent=1, default=str))
    return document


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the ≤ 3 min version CI runs")
    parser.add_argument("--only", choices=("ntpd-py", "chrony"), help="run one daemon only")
    parser.add_argument("--detune-ppm", type=float, help="default 100")
    parser.add_argument("--debug-log", action="store_true",
                        help="ntpd-py at log-level debug: every sample and its filter's "
                             "offset, frequency and wander in ntpd-py.log")
    parser.add_argument("--algorithm", metavar="TOML",
                        help="lines for ntpd-py's [synchronization.algorithm] (experiments), "
                             "e.g. 'initial-wander = 1e-11'")
    parser.add_argument("--detune-via", choices=("tick", "freq"), help="default tick")
    parser.add_argument("--order", choices=("ntpd-py-first", "chrony-first"),
                        default="ntpd-py-first",
                        help="which daemon runs first in the boot (swap it between runs)")
    parser.add_argument("--out", type=Path, help="report directory (default under tests/vm/.cache)")
    parser.add_argument("--reanalyse", type=Path, metavar="RUN_DIR",
                        help="no guest: the report of an earlier boot's run directory")
    args = parser.parse_args(argv)
    plans = dict(PLANS["quick" if args.quick else "default"])
    for daemon, plan in plans.items():
        if args.detune_ppm is not None:
            plan = replace(plan, detune_ppm=args.detune_ppm)
        if args.detune_via is not None:
            plan = replace(plan, detune_via=args.detune_via)
        if args.debug_log:
            plan = replace(plan, log_level="debug")
        if args.algorithm:
            plan = replace(plan, algorithm=args.algorithm)
        plans[daemon] = plan
    if args.only:
        plans = {args.only: plans[args.only]}
    out = args.out or CACHE / time.strftime("e2e-%Y%m%d-%H%M%S")
    command = "python -m tests.vm e2e" + "".join(f" {a}" for a in argv)
    try:
        order = (["ntpd-py", "chrony"] if args.order == "ntpd-py-first"
                 else ["chrony", "ntpd-py"])
        document = run_e2e(plans, args.quick, out, command, order, args.reanalyse)
    except HarnessUnavailable as exc:
        print(f"tests.vm e2e: {exc}", file=sys.stderr)
        return 3
    ok = all(r["summary"].get("guest_returncode") == 0 for r in document["runs"].values())
    return 0 if ok else 1
