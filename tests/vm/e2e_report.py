"""Host side of the e2e scenario: figures from what the guests wrote, the table, the plot.

Everything here is computed from the independent truth (:mod:`tests.vm.phc_truth`
records: guest CLOCK_REALTIME − PHC once a second, every clock step), never
from what a daemon says about itself. While the PHC is gone (`rmmod igb`) the
error is taken against the PHC timeline extrapolated in MONOTONIC_RAW from the
minute before the fault.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .phc_truth import fit_line, spread

__all__ = ["RunData", "WindowCalibration", "fault_figures", "load", "plot", "steady_figures",
           "table", "window_calibration"]

NS = 1e9


@dataclass
class RunData:
    daemon: str
    run_dir: Path
    samples: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    events: list[dict[str, Any]]
    summary: dict[str, Any]
    wall_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    def event_mono(self, what: str) -> int | None:
        return next((e["mono"] for e in self.events if e["what"] == what), None)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # cut short by the power-off
            out.append(json.loads(line))
    return out


def load(daemon: str, run_dir: Path, wall_s: float, truth_path: Path | None = None) -> RunData:
    """One daemon's records: its own events/summary, the boot's truth (shared when the
    daemons ran in one boot; every figure selects the truth records by time)."""
    truth = _jsonl(truth_path or run_dir / "truth.jsonl")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return RunData(daemon, run_dir, [r for r in truth if r.get("k") == "s"],
                   [r for r in truth if r.get("k") == "step"], _jsonl(run_dir / "events.jsonl"),
                   summary, wall_s)


def _settle_time(trace: list[tuple[float, int]], threshold_ns: float) -> float | None:
    """First t from which every later |error| stays below threshold (None: never)."""
    last_bad = None
    for i, (_, err) in enumerate(trace):
        if abs(err) >= threshold_ns:
            last_bad = i
    if last_bad is None:
        return trace[0][0] if trace else None
    return trace[last_bad + 1][0] if last_bad + 1 < len(trace) else None


@dataclass(frozen=True)
class WindowCalibration:
    """How the truth reader's error depends on its best reading's window, with no daemon.

    The narrowest of 25 readings still varies from second to second (on the
    igb PHC its window spreads by ~80 ns), and where the PHC latched inside it
    moves with it: over every floor measurement so far the error fell by
    0.17-0.23 ns per ns of window, which was most of the floor's spread. The
    slope is fitted during the boot's first floor phase, when no daemon runs
    (against the detrended error, so the free-running clock's line does not
    enter), and every daemon of the boot is measured with the same slope and
    reference window: a truth corrected with it is still nobody's estimator.
    """

    slope: float  # ns of error per ns of window
    ref_window_ns: float  # the floor phase's median window: corrected errors refer to it
    floor_sd_ns: float  # the floor's spread after the correction
    floor_raw_sd_ns: float  # ... and before it
    n: int

    def correct(self, err_ns: float, window_ns: float) -> float:
        return err_ns - self.slope * (window_ns - self.ref_window_ns)


def window_calibration(run: RunData) -> WindowCalibration | None:
    """The calibration from `run`'s floor phase (None if it has too few readings)."""
    start = run.event_mono("floor-start")
    seconds = (run.summary.get("plan") or {}).get("floor_s")
    if start is None or seconds is None:
        return None
    recs = [r for r in run.samples
            if "err" in r and start <= r["mono"] <= start + round(seconds * NS)]
    if len(recs) < 10:
        return None
    _, detrended = fit_line([(r["mono"], r["err"]) for r in recs])
    windows = [float(r["w"]) for r in recs]
    # error = a + b·t + slope·w, fitted jointly (windows that happen to drift with time
    # must not leak into the clock's line): regress both error and window on time first
    _, w_detrended = fit_line([(r["mono"], r["w"]) for r in recs])
    sxx = sum(w * w for w in w_detrended)
    if sxx <= 0.0:
        return None
    slope = sum(w * d for w, d in zip(w_detrended, detrended, strict=True)) / sxx
    residual = [d - slope * w for w, d in zip(w_detrended, detrended, strict=True)]
    ordered = sorted(windows)
    return WindowCalibration(slope, ordered[len(ordered) // 2], spread(residual)["sd_ns"],
                             spread(detrended)["sd_ns"], len(recs))


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"rms_ns": None, "max_ns": None, "mean_ns": None, "sd_ns": None}
    return {"rms_ns": math.sqrt(sum(e * e for e in values) / len(values)),
            "max_ns": max(abs(e) for e in values),
            "mean_ns": sum(values) / len(values),
            "sd_ns": spread(values)["sd_ns"] if len(values) > 1 else None}


def steady_figures(run: RunData, calibration: WindowCalibration | None = None) -> dict[str, Any]:
    launch = run.summary.get("launch_mono")
    end = run.event_mono("steady-end")
    if launch is None or end is None:
        return {"complete": False}
    plan = run.summary["plan"]
    trace = [((r["mono"] - launch) / NS, r["err"]) for r in run.samples
             if "err" in r and launch <= r["mono"] <= end]
    window_from = end - round(plan["window_s"] * NS)
    window = [e for t, e in trace if t >= (window_from - launch) / NS]
    in_window = [r for r in run.samples if "err" in r and window_from <= r["mono"] <= end]
    # the second truth definition (median of the narrowest quarter of the same 25
    # readings), and how far the two definitions sit apart in this window
    quarter = [float(r["err_q"]) for r in in_window if "err_q" in r]
    gap = [float(r["err"] - r["err_q"]) for r in in_window if "err_q" in r]
    # the third: the narrowest reading corrected for its window (the boot's calibration)
    corrected = ([calibration.correct(r["err"], r["w"]) for r in in_window]
                 if calibration is not None else [])
    retried = sum(1 for r in run.samples if r.get("retries") and window_from <= r["mono"] <= end)
    steps = [s for s in run.steps if launch <= s["mono"] <= end]
    # the kernel clock state the runner left (after its detune): a daemon's first change of
    # it is its first action on the clock
    left = (run.summary.get("detune") or {}).get("after") or {}
    baseline = [left.get("freq_ppm"), left.get("tick_us"), left.get("status")]
    first_action = next(((r["mono"] - launch) / NS for r in run.samples if r["mono"] >= launch
                         and r.get("kernel") not in (None, baseline)), None)
    after_action = ([(t - first_action, e) for t, e in trace if t > first_action]
                    if first_action is not None else [])
    first_step = (steps[0]["mono"] - launch) / NS if steps else None
    after_step = [(t - first_step, e) for t, e in trace if t > first_step] if first_step else []
    figures: dict[str, Any] = {
        "complete": bool(window),
        "t_first_step_s": first_step,
        "t_first_action_s": first_action,
        "t_action_to_1us_s": _settle_time(after_action, 1_000) if after_action else None,
        "t_step_to_1us_s": _settle_time(after_step, 1_000) if after_step else None,
        "t_100us_s": _settle_time(trace, 100_000),
        "t_1us_s": _settle_time(trace, 1_000),
        "rms_ns": math.sqrt(sum(e * e for e in window) / len(window)) if window else None,
        "max_ns": max(abs(e) for e in window) if window else None,
        "mean_ns": sum(window) / len(window) if window else None,
        "sd_ns": spread(window)["sd_ns"] if len(window) > 1 else None,
        "n_window": len(window),
        "quarter": _stats(quarter),
        "definition_gap": _stats(gap),
        "window_corrected": {**_stats(corrected), **(
            {"slope": calibration.slope, "ref_window_ns": calibration.ref_window_ns,
             "floor_sd_ns": calibration.floor_sd_ns,
             "floor_raw_sd_ns": calibration.floor_raw_sd_ns} if calibration else {})},
        "retried_in_window": retried,
        "steps": [{"after_s": round((s["mono"] - launch) / NS, 1),
                   "approx_s": s["approx_ns"] / NS} for s in steps],
        "floor": run.summary.get("floor", {}),
    }
    return figures


def _raw_line(run: RunData, before: int) -> Any:
    """The PHC timeline in MONOTONIC_RAW, fitted on the minute before `before`."""
    pts = [(r["real"] - r["rr"], r["real"] - r["err"]) for r in run.samples
           if "err" in r and before - 60 * NS <= r["mono"] < before]
    return fit_line(pts)[0] if len(pts) >= 10 else None


def fault_figures(run: RunData) -> list[dict[str, Any]]:
    figures = []
    for fault in run.summary.get("faults", []):
        start, end = fault["start"], fault.get("end")
        if end is None:
            figures.append({"fault": fault["fault"], "complete": False})
            continue
        inside = [r for r in run.samples if start <= r["mono"] <= end]
        # a reloaded PHC is only a reference again once the runner put it back on its timeline
        restored = fault.get("phc_restored", start)
        epoch0 = inside[0]["epoch"] if inside else None
        direct = [abs(r["err"]) for r in inside
                  if "err" in r and (r["epoch"] == epoch0 or r["mono"] > restored)]
        line = _raw_line(run, start)
        extrapolated = []
        if line is not None:
            for r in inside:
                if "err" not in r:
                    raw = r["raw"]
                    extrapolated.append((r["mono"], raw + r["rr"] - line.at(raw)))
        steps = [s for s in run.steps if start <= s["mono"] <= end]
        figures.append({
            "fault": fault["fault"],
            "complete": True,
            "seconds": (end - start) / NS,
            "max_direct_ns": max(direct) if direct else None,
            "max_extrapolated_ns": max(abs(e) for _, e in extrapolated) if extrapolated else None,
            "n_extrapolated": len(extrapolated),
            "extrapolated": extrapolated,
            "phc_restore": fault.get("phc_restore"),
            "steps": len(steps),
            "observed": fault.get("observed", {}),
        })
    return figures


def _fmt_ns(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} ms"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.2f} µs"
    return f"{value:.0f} ns"


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def _q(fig: dict[str, Any], key: str, part: str = "quarter") -> float | None:
    value: float | None = (fig.get(part) or {}).get(key)
    return value


def _floor_note(fig: dict[str, Any]) -> str:
    floor = fig.get("floor") or {}
    rms, sd = fig.get("rms_ns"), floor.get("sd_ns")
    if rms is None or sd is None:
        return ""
    if rms <= 1.2 * sd:
        return f"at the floor (sd {sd:.0f} ns): not resolvable"
    return f"≈ {math.sqrt(max(0.0, rms * rms - sd * sd)):.0f} ns above the floor"


def table(ours: RunData, chrony: RunData | None, command: str) -> str:
    a, b = ours.figures["steady"], chrony.figures["steady"] if chrony else {}
    plan = ours.summary.get("plan", {})
    lines = [
        f"$ {command}",
        f"TCG guest -smp 1, igb PHC /dev/ptp0, one boot, "
        f"{' then '.join(ours.summary.get('order') or [ours.daemon])}; each daemon's "
        f"guest clock reset to nominal, then detuned "
        f"{plan.get('detune_offset_s', 0):+g} s / {plan.get('detune_ppm', 0):+g} ppm "
        f"(via {plan.get('detune_via')})",
    ]
    for run in (ours, chrony):
        if run is not None and run.summary.get("plan"):
            p = run.summary["plan"]
            end = run.event_mono("steady-end")
            length = (end - run.summary["launch_mono"]) / NS if end else p["steady_s"]
            lines.append(f"{run.daemon}: {length:.0f} s from launch, steady state = "
                         f"the last {p['window_s']:.0f} s of it")
    for run, fig in ((ours, a), (chrony, b)):
        if run is not None and fig.get("floor"):
            fl = fig["floor"]
            lines.append(f"measurement floor before {run.daemon} (no daemon, {fl['n']} s): "
                         f"sd {fl['sd_ns']:.0f} ns, range {fl['range_ns']:.0f} ns, "
                         f"median read window {fl['median_window_ns']} ns")
    cal = a.get("window_corrected") or {}
    if "slope" in cal:
        lines.append(f"truth window calibration (first floor, no daemon): {cal['slope']:+.3f} ns "
                     f"per ns of window, reference window {cal['ref_window_ns']:.0f} ns; floor "
                     f"sd {cal['floor_raw_sd_ns']:.0f} ns -> {cal['floor_sd_ns']:.0f} ns corrected")
    rows = [
        ("time to |err| < 100 µs", _fmt_s(a.get("t_100us_s")), _fmt_s(b.get("t_100us_s")),
         _ratio(a.get("t_100us_s"), b.get("t_100us_s"))),
        ("time to |err| < 1 µs", _fmt_s(a.get("t_1us_s")), _fmt_s(b.get("t_1us_s")),
         _ratio(a.get("t_1us_s"), b.get("t_1us_s"))),
        ("  launch to first adjtimex", _fmt_s(a.get("t_first_action_s")),
         _fmt_s(b.get("t_first_action_s")), ""),
        ("  then to < 1 µs", _fmt_s(a.get("t_action_to_1us_s")),
         _fmt_s(b.get("t_action_to_1us_s")),
         _ratio(a.get("t_action_to_1us_s"), b.get("t_action_to_1us_s"))),
        ("truth = narrowest of 25:", "", "", ""),
        ("RMS error", _fmt_ns(a.get("rms_ns")), _fmt_ns(b.get("rms_ns")),
         _ratio(a.get("rms_ns"), b.get("rms_ns"))),
        ("max |error|", _fmt_ns(a.get("max_ns")), _fmt_ns(b.get("max_ns")),
         _ratio(a.get("max_ns"), b.get("max_ns"))),
        ("mean error", _fmt_ns(a.get("mean_ns")), _fmt_ns(b.get("mean_ns")), ""),
        ("sd of error", _fmt_ns(a.get("sd_ns")), _fmt_ns(b.get("sd_ns")),
         _ratio(a.get("sd_ns"), b.get("sd_ns"))),
        ("truth = median of narrowest quarter:", "", "", ""),
        ("  RMS error", _fmt_ns(_q(a, "rms_ns")), _fmt_ns(_q(b, "rms_ns")),
         _ratio(_q(a, "rms_ns"), _q(b, "rms_ns"))),
        ("  max |error|", _fmt_ns(_q(a, "max_ns")), _fmt_ns(_q(b, "max_ns")),
         _ratio(_q(a, "max_ns"), _q(b, "max_ns"))),
        ("  mean error", _fmt_ns(_q(a, "mean_ns")), _fmt_ns(_q(b, "mean_ns")), ""),
        ("  sd of error", _fmt_ns(_q(a, "sd_ns")), _fmt_ns(_q(b, "sd_ns")),
         _ratio(_q(a, "sd_ns"), _q(b, "sd_ns"))),
        ("truth = narrowest, window-corrected:", "", "", ""),
        ("  RMS error", _fmt_ns(_q(a, "rms_ns", "window_corrected")),
         _fmt_ns(_q(b, "rms_ns", "window_corrected")),
         _ratio(_q(a, "rms_ns", "window_corrected"), _q(b, "rms_ns", "window_corrected"))),
        ("  mean error", _fmt_ns(_q(a, "mean_ns", "window_corrected")),
         _fmt_ns(_q(b, "mean_ns", "window_corrected")), ""),
        ("  sd of error", _fmt_ns(_q(a, "sd_ns", "window_corrected")),
         _fmt_ns(_q(b, "sd_ns", "window_corrected")),
         _ratio(_q(a, "sd_ns", "window_corrected"), _q(b, "sd_ns", "window_corrected"))),
        ("narrowest − quarter mean", _fmt_ns(_q(a, "mean_ns", "definition_gap")),
         _fmt_ns(_q(b, "mean_ns", "definition_gap")), ""),
        ("steps", str(len(a.get("steps", []))), str(len(b.get("steps", []))) if b else "—", ""),
        ("readings retried (window)", str(a.get("retried_in_window", "—")),
         str(b.get("retried_in_window", "—")) if b else "—", ""),
    ]
    lines.append(f"{'':24}{'ntpd-py':>12}{'chrony':>12}{'ratio':>8}")
    lines += [f"{name:24}{x:>12}{y:>12}{r:>8}" for name, x, y, r in rows]
    for run, fig in ((ours, a), (chrony, b)):
        if run is not None and fig.get("steps"):
            desc = ", ".join(f"{s['approx_s']:+.4f} s at {s['after_s']:.0f} s"
                             for s in fig["steps"])
            lines.append(f"{run.daemon} steps: {desc}")
        if run is not None and fig.get("rms_ns") is not None:
            lines.append(f"{run.daemon} RMS {_floor_note(fig)}")
    return "\n".join(lines)


def plot(ours: RunData, chrony: RunData | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    for run, colour in ((ours, "tab:blue"), (chrony, "tab:orange")):
        if run is None or run.summary.get("launch_mono") is None:
            continue
        launch = run.summary["launch_mono"]
        end = run.event_mono("steady-end") or max(r["mono"] for r in run.samples)
        pts = [((r["mono"] - launch) / NS, max(abs(r["err"]), 1)) for r in run.samples
               if "err" in r and launch - 5 * NS <= r["mono"] <= end]
        top.semilogy([p[0] for p in pts], [p[1] for p in pts], ".-", ms=3, lw=0.8,
                     color=colour, label=run.daemon)
        sd = (run.summary.get("floor") or {}).get("sd_ns")
        if sd:
            top.axhline(sd, color=colour, ls=":", lw=0.8, label=f"floor sd (before {run.daemon})")
    top.set_xlabel("seconds since the daemon was launched")
    top.set_ylabel("|guest CLOCK_REALTIME − PHC| (ns)")
    top.set_title("Convergence and steady state (independent PTP_SYS_OFFSET_EXTENDED reader)")
    top.legend(fontsize=8)
    top.grid(True, which="both", alpha=0.3)
    launch = ours.summary.get("launch_mono", 0)
    steady_end = ours.event_mono("steady-end")
    pts = []
    for r in ours.samples:
        if steady_end and r["mono"] >= steady_end - 30 * NS:
            # no line across the time without the PHC
            pts.append(((r["mono"] - launch) / NS, r["err"] / 1e3 if "err" in r else math.nan))
    bottom.plot([p[0] for p in pts], [p[1] for p in pts], ".-", ms=3, lw=0.8, color="tab:blue",
                label="against the PHC")
    gone = [((m - launch) / NS, e / 1e3) for f in ours.figures.get("faults", [])
            for m, e in f.get("extrapolated", [])]
    if gone:
        bottom.plot([p[0] for p in gone], [p[1] for p in gone], "x", ms=4, color="tab:red",
                    label="PHC removed: against its timeline extrapolated in MONOTONIC_RAW")
        bottom.legend(fontsize=8)
    for fault in ours.summary.get("faults", []):
        end = fault.get("end", fault["start"])
        bottom.axvspan((fault["start"] - launch) / NS, (end - launch) / NS, alpha=0.12,
                       color="tab:red")
        bottom.annotate(fault["fault"], ((fault["start"] - launch) / NS, 0), fontsize=7,
                        rotation=90, va="bottom")
    bottom.set_yscale("symlog", linthresh=0.1)
    bottom.set_xlabel("seconds since ntpd-py was launched")
    bottom.set_ylabel("guest CLOCK_REALTIME − PHC (µs)")
    bottom.set_title("ntpd-py under faults (shaded)")
    bottom.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
