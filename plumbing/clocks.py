"""Which local clock a process reads: the real clocks, or the shared simulated one."""

from __future__ import annotations

import os

from ntpd_py.core.config import Config

from .scheduler import LocalClock, SystemClockReader

__all__ = ["make_local_clock"]


def make_local_clock(config: Config, writable: bool = False) -> LocalClock:
    """The real clocks (read only), or the simulated clock every process maps from
    ``<runtime-dir>/sim-clock`` (writable by clock-control only)."""
    if config.daemon.clock == "simulated":
        from .sim_world import current_clock_model
        from .simclock import SimClock

        return SimClock(os.path.join(config.daemon.runtime_dir, "sim-clock"), writable,
                        current_clock_model())
    return SystemClockReader()
