"""What a simulation run measured, and the figures reported for it.

"Offset" here is the **true** error of the simulated local clock (local minus
true time), which the world knows and the algorithm does not. Figures:

* ``time_to_1ms_s`` / ``time_to_100us_s`` / ``time_to_1us_s``: the earliest
  time from which |offset| stays below the limit until the end of the run
  (None if it does not end below it);
* ``rms_offset_s`` / ``max_abs_offset_s``: over the measurement window
  (from ``measure_from_s`` to the end: "after convergence");
* frequency error, over the same window: the local clock's **mean** rate
  error against true time over each metric interval (1 s by default), that is
  the change of its error over the interval, steps excluded, divided by the
  interval. It is what anything timing an interval on the host (also
  CLOCK_MONOTONIC, which is slewed too) sees, and unlike the rate at one
  instant it also catches a slew shorter than the interval.
  ``rms_freq_error_ppm``, ``max_abs_freq_error_ppm`` and
  ``freq_error_over_1ppm_fraction`` (the fraction of intervals with
  |frequency error| > 1 ppm);
* ``steps``; ``falseticker_selected_s``: simulated seconds during which a
  source whose clock was off by more than the scenario's
  ``falseticker-threshold`` was selected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Summary", "Trace", "summarize", "time_to_below"]


@dataclass(slots=True)
class Trace:
    """Values sampled every metric interval."""

    t_s: list[float] = field(default_factory=list)
    offset_s: list[float] = field(default_factory=list)  # true local - true time
    freq_error: list[float] = field(default_factory=list)  # true local rate - 1, at t
    # mean rate error over the interval ending at t (steps excluded); 0.0 for the first
    interval_freq_error: list[float] = field(default_factory=list)
    correction: list[float] = field(default_factory=list)  # frequency correction in force
    synchronized: list[bool] = field(default_factory=list)

    def append(
        self,
        t_s: float,
        offset_s: float,
        freq_error: float,
        correction: float,
        synchronized: bool,
        interval_freq_error: float = 0.0,
    ) -> None:
        self.t_s.append(t_s)
        self.interval_freq_error.append(interval_freq_error)
        self.offset_s.append(offset_s)
        self.freq_error.append(freq_error)
        self.correction.append(correction)
        self.synchronized.append(synchronized)


def time_to_below(trace: Trace, limit_s: float) -> float | None:
    """Earliest time from which |offset| < limit until the end; None if the run ends above."""
    if not trace.t_s or abs(trace.offset_s[-1]) >= limit_s:
        return None
    for index in range(len(trace.t_s) - 1, -1, -1):
        if abs(trace.offset_s[index]) >= limit_s:
            return trace.t_s[index + 1]
    return trace.t_s[0]


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    seed: int
    duration_s: float
    measure_from_s: float
    time_to_1ms_s: float | None
    time_to_100us_s: float | None
    time_to_1us_s: float | None
    rms_offset_s: float | None
    max_abs_offset_s: float | None
    mean_offset_s: float | None
    final_freq_error_ppm: float | None
    rms_freq_error_ppm: float | None
    max_abs_freq_error_ppm: float | None
    freq_error_over_1ppm_fraction: float | None
    steps: int
    step_list: list[tuple[float, float]]
    falseticker_selected_s: float
    panic: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "measure_from_s": self.measure_from_s,
            "time_to_1ms_s": self.time_to_1ms_s,
            "time_to_100us_s": self.time_to_100us_s,
            "time_to_1us_s": self.time_to_1us_s,
            "rms_offset_s": self.rms_offset_s,
            "max_abs_offset_s": self.max_abs_offset_s,
            "mean_offset_s": self.mean_offset_s,
            "final_freq_error_ppm": self.final_freq_error_ppm,
            "rms_freq_error_ppm": self.rms_freq_error_ppm,
            "max_abs_freq_error_ppm": self.max_abs_freq_error_ppm,
            "freq_error_over_1ppm_fraction": self.freq_error_over_1ppm_fraction,
            "steps": self.steps,
            "step_list": [[t, s] for t, s in self.step_list],
            "falseticker_selected_s": self.falseticker_selected_s,
            "panic": self.panic,
        }


def summarize(
    trace: Trace,
    *,
    scenario: str,
    seed: int,
    duration_s: float,
    measure_from_s: float,
    step_list: list[tuple[float, float]],
    falseticker_selected_s: float,
    panic: str | None,
) -> Summary:
    window = [i for i, t in enumerate(trace.t_s) if t >= measure_from_s]
    offsets = [trace.offset_s[i] for i in window]
    # The interval ending at the first sample began before the window; index 0 has none.
    freqs = [
        trace.interval_freq_error[i]
        for i in window
        if i > 0 and trace.t_s[i - 1] >= measure_from_s
    ]
    max_freq = max((abs(v) for v in freqs), default=None)

    def rms(values: list[float]) -> float | None:
        return math.sqrt(sum(v * v for v in values) / len(values)) if values else None

    rms_freq = rms(freqs)
    return Summary(
        scenario=scenario,
        seed=seed,
        duration_s=duration_s,
        measure_from_s=measure_from_s,
        time_to_1ms_s=time_to_below(trace, 1e-3),
        time_to_100us_s=time_to_below(trace, 1e-4),
        time_to_1us_s=time_to_below(trace, 1e-6),
        rms_offset_s=rms(offsets),
        max_abs_offset_s=max((abs(v) for v in offsets), default=None),
        mean_offset_s=sum(offsets) / len(offsets) if offsets else None,
        final_freq_error_ppm=trace.freq_error[-1] * 1e6 if trace.freq_error else None,
        rms_freq_error_ppm=None if rms_freq is None else rms_freq * 1e6,
        max_abs_freq_error_ppm=None if max_freq is None else max_freq * 1e6,
        freq_error_over_1ppm_fraction=sum(1 for v in freqs if abs(v) > 1e-6) / len(freqs)
        if freqs
        else None,
        steps=len(step_list),
        step_list=list(step_list),
        falseticker_selected_s=falseticker_selected_s,
        panic=panic,
    )
