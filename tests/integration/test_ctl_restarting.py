"""ntpctl tells "clock-control restarting" (75) from "daemon not running" (69)."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.daemon import Daemon, wait_for

pytestmark = pytest.mark.integration

SIM_PTP = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[synchronization]
minimum-agreeing-sources = 1
"""


def test_ntpctl_says_restarting_while_clock_control_is_down() -> None:
    daemon = Daemon(SIM_PTP)
    with daemon:
        document = daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        cc = next(p["pid"] for p in document["processes"] if p["worker_id"] == "clock-control")
        assert (daemon.runtime / "bus" / "supervisor.pid").read_text() == f"{daemon.pid}\n"
        # Hold the supervisor still so that clock-control stays down while we ask.
        daemon.signal(signal.SIGSTOP)
        try:
            os.kill(cc, signal.SIGKILL)
            result = wait_for(lambda: (r := daemon.ctl("status")).returncode != 0 and r, 10,
                              "ntpctl to notice")
            assert result.returncode == 75, result.stderr
            assert (f"ntpd-py is running (supervisor pid {daemon.pid}) but clock-control is "
                    "not answering") in result.stderr
        finally:
            daemon.signal(signal.SIGCONT)
        wait_for(lambda: daemon.ctl("status").returncode == 0, 20, "clock-control back")
        assert daemon.stop() == 0
        assert not (daemon.runtime / "bus" / "supervisor.pid").exists()
        result = daemon.ctl("status")
        assert result.returncode == 69 and "not running" in result.stderr, result.stderr
