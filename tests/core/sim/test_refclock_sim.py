"""sock and pps as simulated source kinds: the PPS refines a GPS sock source to its own noise.

The runner drives the workers' own state machines (core/sock_source.py, pps_source.py)
with datagrams and pulse events, so what is measured is the code the workers run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.pps_source import PpsSource, PpsState
from ntpd_py.core.sim.metrics import Summary
from ntpd_py.core.sim.runner import Simulation
from ntpd_py.core.sim.scenario import SimPpsSource, SimSockSource, load_scenario_text
from ntpd_py.core.snapshots import SelectionState
from ntpd_py.core.sock_source import SockSource

SCENARIOS = Path(__file__).resolve().parents[3] / "deploy" / "scenarios"


def text(name: str) -> str:
    return (SCENARIOS / f"{name}.toml").read_text()


def run(body: str, duration: float) -> tuple[Simulation, Summary]:
    sim = Simulation(load_scenario_text(body, "s.toml"), duration_s=duration)
    return sim, sim.run().summary


def states(sim: Simulation) -> dict[str, SelectionState]:
    end = sim.clock.mono_ns(int(sim.duration_s * 1e9))
    return {s.source_id: s.state for s in sim.controller.source_snapshots(now_mono_ns=end)}


def refclock(sim: Simulation, source_id: str) -> SockSource | PpsSource:
    source = sim.clients[source_id].refclock
    assert source is not None
    return source


def test_scenario_tables_load_with_the_sources_own_keys() -> None:
    scenario = load_scenario_text(text("gps-sock-pps"), "gps-sock-pps")
    sock, pps = scenario.source
    assert isinstance(sock, SimSockSource) and isinstance(pps, SimPpsSource)
    assert sock.precision_s == 500e-6 and sock.sim.jitter == 500e-6
    assert pps.period == 1.0 and pps.sim.jitter == 1e-6


def test_scenario_mistakes_name_the_key() -> None:
    bad = text("gps-sock-pps").replace("jitter = 1e-6", "jiter = 1e-6")
    with pytest.raises(ConfigError) as info:
        load_scenario_text(bad, "s.toml")
    assert [i.key for i in info.value.issues] == ["source[1].sim.jiter"]


def test_pps_refines_the_sock_source_to_the_pps_noise_level() -> None:
    with_pps, summary_pps = run(text("gps-sock-pps"), 1200)
    _, summary_sock = run(text("gps-sock-only"), 1200)
    rms_pps, rms_sock = summary_pps.rms_offset_s, summary_sock.rms_offset_s
    assert rms_pps is not None and rms_sock is not None
    # the GPS messages alone: tens of µs (their 500 µs jitter, averaged by the filter)
    assert rms_sock > 10e-6
    # with the pulse: within its 1 µs noise, and far below the sock source alone
    assert rms_pps < 1e-6
    assert rms_pps < rms_sock / 20
    assert states(with_pps)["/dev/pps0"] is SelectionState.SELECTED
    pps = refclock(with_pps, "/dev/pps0")
    assert pps.state is PpsState.RUNNING
    status = pps.status()
    assert "whole seconds from /run/chrony.ttyS0.sock" in status.message
    assert status.samples > 1100  # one per second once the sock source was selected
    # pulses before the sock source was selected had no whole seconds
    assert 0 < status.drops.get("unpaired", 0) < 60


def test_pps_alone_waits_for_whole_seconds_and_never_steers() -> None:
    body = text("gps-sock-pps")
    head, _, pps_part = body.partition("[[source]]\nmode = \"sock\"")
    pps_only = head + "[[source]]" + pps_part.partition("[[source]]")[2]
    sim, summary = run(pps_only, 120)
    pps = refclock(sim, "/dev/pps0")
    assert pps.state is PpsState.WAITING_FOR_SECONDS
    assert "waiting for a source with whole seconds" in pps.status().message
    assert pps.status().samples == 0
    assert summary.steps == 0
    assert abs(sim.clock.error(120 * 10**9)) > 0.29  # still 0.3 s off: nothing steered it


def test_a_lossy_feeder_is_survived() -> None:
    body = text("gps-sock-only").replace("interval = 1.0", "interval = 1.0\nloss = 0.3")
    sim, _ = run(body, 600)
    sock = refclock(sim, "/run/chrony.ttyS0.sock")
    assert 300 < sock.status().samples < 500  # about 70 % of 600
    assert states(sim)["/run/chrony.ttyS0.sock"] is SelectionState.SELECTED
