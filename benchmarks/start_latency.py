"""How long the daemon takes from start to its first clock action, on the host.

Starts `ntpd-py run` (simulated clock, one simulated PHC at `interval = 0`) a few
times and reads the log's timestamps: supervisor start -> PTP worker started, and
PTP worker started -> clock-control's first step or slew. Loopback only; every
daemon is stopped by PID.

    sudo .venv/bin/python benchmarks/start_latency.py [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.adversarial.helpers import SIM_PTP  # noqa: E402
from tests.integration.daemon import Daemon  # noqa: E402

ACTIONS = ("stepping the clock", "slewing")


def _first(log: str, pattern: str) -> float | None:
    for line in log.splitlines():
        if pattern in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def one_start(timeout_s: float = 20.0) -> tuple[float, float]:
    with Daemon(SIM_PTP) as daemon:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not any(a in daemon.log() for a in ACTIONS):
            time.sleep(0.05)
        time.sleep(0.2)
        log = daemon.log()
    daemon.cleanup()
    start, ptp = _first(log, "supervisor: INFO"), _first(log, "started ptp:")
    acted = min((t for t in (_first(log, a) for a in ACTIONS) if t is not None), default=None)
    if start is None or ptp is None or acted is None:
        raise SystemExit(f"no clock action within {timeout_s} s:\n{log[-2000:]}")
    return ptp - start, acted - ptp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = [one_start() for _ in range(args.runs)]
    for spawn, act in rows:
        print(f"supervisor start -> PTP worker {spawn:5.2f} s   PTP worker -> first clock "
              f"action {act:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
