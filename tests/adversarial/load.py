"""CPU and memory of the daemon's processes, measured over a window (psutil, by PID)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcessLoad:
    """CPU share of one core over a window, and RSS at its end, per named process."""

    cpu_percent: dict[str, float]
    rss_mb: dict[str, float]

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {"cpu_percent": self.cpu_percent, "rss_mb": self.rss_mb}

    def __str__(self) -> str:
        return ", ".join(f"{name} {self.cpu_percent[name]:.0f} % CPU {self.rss_mb[name]:.1f} MB"
                         for name in self.cpu_percent)


def measure(pids: dict[str, int], window_s: float = 2.0) -> ProcessLoad:
    """CPU (percent of one core) over `window_s` and RSS at the end, for each pid given."""
    procs = {}
    start = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
        except psutil.Error:
            continue
        procs[name] = proc
        start[name] = times.user + times.system
    t0 = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - t0
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    for name, proc in procs.items():
        try:
            times = proc.cpu_times()
            cpu[name] = 100.0 * (times.user + times.system - start[name]) / elapsed
            rss[name] = proc.memory_info().rss / 1e6
        except psutil.Error:
            cpu[name] = float("nan")
            rss[name] = float("nan")
    return ProcessLoad(cpu, rss)
