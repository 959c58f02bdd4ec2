"""Draw a simulation run: |offset| (log), offset after convergence, frequency, and the
frequency error after convergence (mean rate error per metric interval). Needs matplotlib."""

from __future__ import annotations

from typing import Any

from ntpd_py.core.sim.runner import SimResult

__all__ = ["plot_result"]


def _unit(values: list[float]) -> tuple[str, float]:
    peak = max((abs(v) for v in values), default=0.0)
    for name, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if peak >= scale:
            return name, scale
    return "ns", 1e-9


def _draw_log(ax: Any, result: SimResult) -> None:
    t = result.trace.t_s
    ax.semilogy(t, [max(abs(v), 1e-12) for v in result.trace.offset_s], linewidth=0.7)
    for limit, label in ((1e-3, "1 ms"), (1e-6, "1 µs")):
        ax.axhline(limit, color="grey", linestyle=":", linewidth=0.8)
        ax.text(t[-1] if t else 0, limit, label, va="bottom", ha="right", fontsize=8)
    ax.set_ylabel("|true offset| (s)")


def _draw_freq_error(ax: Any, result: SimResult, window: list[int]) -> None:
    trace, summary = result.trace, result.summary
    ax.plot(
        [trace.t_s[i] for i in window],
        [trace.interval_freq_error[i] * 1e6 for i in window],
        linewidth=0.7,
        color="tab:green",
    )
    title = "frequency error after convergence (mean rate error per interval)"
    if summary.rms_freq_error_ppm is not None and summary.max_abs_freq_error_ppm is not None:
        title += (
            f": RMS {summary.rms_freq_error_ppm:.3g} ppm, "
            f"max {summary.max_abs_freq_error_ppm:.3g} ppm"
        )
    ax.set_title(title, fontsize=9)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_ylabel("ppm")
    ax.set_xlabel("simulated time (s)")


def plot_result(result: SimResult, path: str) -> None:
    """Write a PNG (or any format matplotlib knows from the file name) of ``result``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    trace, summary = result.trace, result.summary
    t = trace.t_s
    fig, (ax_log, ax_lin, ax_freq, ax_ferr) = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    fig.suptitle(f"ntpd-py simulate: {summary.scenario} (seed {summary.seed})")

    _draw_log(ax_log, result)
    start = summary.measure_from_s
    window = [i for i, x in enumerate(t) if x >= start]
    values = [trace.offset_s[i] for i in window]
    name, scale = _unit(values)
    ax_lin.plot([t[i] for i in window], [v / scale for v in values], linewidth=0.7)
    rms = summary.rms_offset_s
    title = f"after convergence (from {start:g} s)"
    if rms is not None:
        title += f": RMS {rms / scale:.3g} {name}"
    ax_lin.set_title(title, fontsize=9)
    ax_lin.set_ylabel(f"true offset ({name})")
    ax_lin.axhline(0.0, color="grey", linewidth=0.5)

    ax_freq.plot(
        t, [c * 1e6 for c in trace.correction], linewidth=0.7, label="frequency correction"
    )
    ax_freq.plot(
        t, [f * 1e6 for f in trace.freq_error], linewidth=0.7, label="residual frequency error"
    )
    ax_freq.set_ylabel("ppm")
    ax_freq.legend(fontsize=8, loc="best")

    _draw_freq_error(ax_ferr, result, window)
    for step_t, _ in summary.step_list:
        for ax in (ax_log, ax_lin, ax_freq, ax_ferr):
            ax.axvline(step_t, color="red", linewidth=0.6, alpha=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
