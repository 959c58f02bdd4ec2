"""`ntpd-py simulate SCENARIO.toml`: run the real clock algorithm against a simulated world.

Reads and validates the scenario (errors name file, line and key; exit 78),
runs it faster than real time with a progress line on stderr every
simulated minute or so, and prints a table of figures (or, with ``--json``,
one JSON object). ``--plot out.png`` draws offset and frequency over time
with matplotlib (the optional extra ``ntpd-py[plot]``). A run that hits a
panic threshold prints the panic message and exits 70, as the daemon would.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

from ntpd_py.core.errors import ConfigError, ConfigIssue
from ntpd_py.core.exit_codes import EX_CONFIG, EX_UNAVAILABLE, EX_USAGE
from ntpd_py.core.sim.metrics import Summary
from ntpd_py.core.sim.runner import Progress, SimResult, Simulation
from ntpd_py.core.sim.scenario import Scenario, load_scenario_text

__all__ = ["EX_PLOT", "format_duration", "format_summary", "simulate_command"]

EX_PLOT = EX_UNAVAILABLE  # --plot without matplotlib
MAX_SCENARIO_BYTES = 1024 * 1024


def _read_scenario(path: str) -> Scenario:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ConfigError([ConfigIssue(path, "", "larger than 1 MiB; not a scenario file")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(path, "", "not valid UTF-8")]) from None
    return load_scenario_text(text, path)


def format_duration(seconds: float | None, signed: bool = False) -> str:
    """A time difference in the unit that suits it (ns, µs, ms, s)."""
    if seconds is None or not math.isfinite(seconds):
        return "never"
    sign = "+" if signed and seconds >= 0 else ""
    magnitude = abs(seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if magnitude >= scale:
            return (
                f"{sign}{seconds / scale:.3f} {unit}" if unit != "s" else f"{sign}{seconds:.3f} s"
            )
    return f"{sign}{seconds * 1e9:.1f} ns"


def format_summary(summary: Summary, cpu_s: float, final_states: str) -> list[str]:
    s = summary
    steps = ", ".join(f"{format_duration(v, True)} at {t:.1f} s" for t, v in s.step_list[:5])
    rms_freq = "n/a" if s.rms_freq_error_ppm is None else f"{s.rms_freq_error_ppm:.4f} ppm"
    max_freq = "n/a" if s.max_abs_freq_error_ppm is None else f"{s.max_abs_freq_error_ppm:.4f} ppm"
    over = (
        "n/a"
        if s.freq_error_over_1ppm_fraction is None
        else f"{s.freq_error_over_1ppm_fraction * 100:.2f} %"
    )
    final_freq = "n/a" if s.final_freq_error_ppm is None else f"{s.final_freq_error_ppm:+.4f} ppm"
    rows = [
        f"scenario {s.scenario} (seed {s.seed}): {s.duration_s:g} s simulated in {cpu_s:.1f} s CPU",
        f"  time to |offset| < 1 ms     {_at(s.time_to_1ms_s)}",
        f"  time to |offset| < 100 µs   {_at(s.time_to_100us_s)}",
        f"  time to |offset| < 1 µs     {_at(s.time_to_1us_s)}",
        f"  after convergence (from {s.measure_from_s:g} s):",
        f"    RMS offset                {format_duration(s.rms_offset_s)}",
        f"    max |offset|              {format_duration(s.max_abs_offset_s)}",
        f"    mean offset               {format_duration(s.mean_offset_s, True)}",
        f"    RMS frequency error       {rms_freq}  (mean rate error per metric interval)",
        f"    max |frequency error|     {max_freq}",
        f"    |frequency error| > 1 ppm {over} of the intervals",
        f"  final frequency error       {final_freq}",
        f"  steps                       {s.steps}" + (f" ({steps})" if steps else ""),
        f"  falseticker selected        {s.falseticker_selected_s:g} s",
        f"  sources at the end          {final_states}",
    ]
    return rows


def _at(seconds: float | None) -> str:
    return "never (not below at the end)" if seconds is None else f"{seconds:.1f} s"


def _print_progress(p: Progress) -> None:
    sync = "synchronized" if p.synchronized else "unsynchronized"
    print(
        f"[{p.t_s:8.0f} s] offset {format_duration(p.offset_s, True):>14}  "
        f"freq {p.freq_correction * 1e6:+10.4f} ppm  {sync:14}  {p.states}",
        file=sys.stderr,
        flush=True,
    )


def _check_matplotlib() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            "--plot needs matplotlib, which is not installed: "
            "pip install 'ntpd-py[plot]' (or pip install matplotlib)"
        )
    return None


def simulate_command(
    path: str, *, seed: int | None, duration: float | None, as_json: bool, plot: str | None
) -> int:
    """Run a scenario; print the table or JSON; return the exit code."""
    try:
        scenario = _read_scenario(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue.render()}", file=sys.stderr)
        print(f"scenario invalid: {len(exc.issues)} error(s)", file=sys.stderr)
        return EX_CONFIG
    if duration is not None and not (0 < duration <= 30 * 86400):
        print("error: --duration must be between 0 and 30 days (in seconds)", file=sys.stderr)
        return EX_USAGE
    if plot is not None and (problem := _check_matplotlib()):
        print(f"error: {problem}", file=sys.stderr)
        return EX_PLOT
    sim = Simulation(scenario, seed=seed, duration_s=duration)
    started = time.process_time()
    result = sim.run(
        progress=None if as_json else _print_progress,
        progress_every_s=max(60.0, sim.duration_s / 60.0),
    )
    cpu_s = time.process_time() - started
    states = _final_states(sim)
    if as_json:
        document: dict[str, Any] = result.summary.to_json()
        document["cpu_s"] = round(cpu_s, 3)
        print(json.dumps(document))
    else:
        for line in format_summary(result.summary, cpu_s, states):
            print(line)
    if plot is not None:
        from .simulate_plot import plot_result

        plot_result(result, plot)
        if not as_json:
            print(f"plot written to {plot}")
    return _finish(result)


def _final_states(sim: Simulation) -> str:
    end = sim.clock.mono_ns(int(sim.duration_s * 1e9))
    return ", ".join(
        f"{s.state.value} {s.source_id}" for s in sim.controller.source_snapshots(now_mono_ns=end)
    )


def _finish(result: SimResult) -> int:
    if result.panic_message is None:
        return 0
    print(f"panic: {result.panic_message}", file=sys.stderr)
    return result.panic_exit_code or 70
