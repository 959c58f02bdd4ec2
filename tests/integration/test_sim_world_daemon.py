"""The process tree runs in the simulator's world: `[daemon.simulation] scenario`."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from ntpd_py.core.sim.scenario import load_scenario_text
from ntpd_py.plumbing.sim_world import world_from_scenario
from ntpd_py.plumbing.simclock import SimClock

from tests.integration.daemon import Daemon, wait_for

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).resolve().parents[2] / "deploy" / "scenarios" / "kvm-guest.toml"


def test_daemon_disciplines_the_kvm_guest_scenario_clock() -> None:
    body = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 50e-9
stratum = 1

[synchronization]
minimum-agreeing-sources = 1
"""
    daemon = Daemon(body)
    daemon.write_config(body, daemon._daemon_table +
                        f'[daemon.simulation]\nscenario = "{SCENARIO}"\n')
    world = world_from_scenario(load_scenario_text(SCENARIO.read_text(), str(SCENARIO)))
    with daemon:
        wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"), 30,
                 "synchronized")
        assert "simulated world: scenario kvm-guest" in daemon.log()
        clock = SimClock(str(daemon.runtime / "sim-clock"), model=world.clock)
        # the true error of the simulated guest clock, as the world knows it
        assert clock.offset_to_true_s(time.clock_gettime_ns(time.CLOCK_MONOTONIC)) < 1e-3
        time.sleep(10)
        errors = []
        for _ in range(20):
            errors.append(clock.offset_to_true_s(time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
            time.sleep(0.5)
        rms = math.sqrt(sum(e * e for e in errors) / len(errors))
        print(f"process-tree kvm-guest: rms {rms * 1e9:.1f} ns, max {max(abs(e) for e in errors) * 1e9:.1f} ns")
        assert max(abs(e) for e in errors) < 1e-6, errors
        assert rms < 300e-9, rms
        assert clock.steps == 1
