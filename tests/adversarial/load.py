"""CPU and memory of the daemon's processes, measured over a window (psutil, by PID)."""

from __future__ import annotations

import threading
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


class Background:
    """`measure()` in a thread, so a window can run during an attack or an existing wait.

    Starts at once (after `delay_s`); `result()` waits for the window to end.
    """

    def __init__(self, pids: dict[str, int], window_s: float = 1.0, delay_s: float = 0.0) -> None:
        self._result: ProcessLoad | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                time.sleep(delay_s)
                self._result = measure(pids, window_s)
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True, name="load-measure")
        self._thread.start()

    def result(self, timeout: float = 30.0) -> ProcessLoad:
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        assert self._result is not None, "the measurement did not finish"
        return self._result
