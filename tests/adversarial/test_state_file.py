"""A writer of `clock-control.state` cannot poison or un-bound the steering (issue #17, item 4).

With real processes (simulated clock): after the start-up step, the state
file is rewritten (as root here, standing in for any process that could write
it) the way an attacker who knows the format would — +490 ppm and no steps
yet, a negative variance, inf in a filter's instant — and clock-control is
killed. The restarted one must discard the file and say so, not crash-loop,
not take the frequency, and keep the supervisor's step bounds: the start-up
phase stays over, so a 2 s offset is refused by single-step-panic-threshold
(0.5 s here) instead of being stepped as a start-up step would be. What was
forged and measured, and the CPU/RSS of the daemon's processes before the kill and
after the restart, are recorded (`figures`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from ntpd_py.plumbing.simclock import SimClock

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import load_pids, phc_config
from tests.adversarial.load import Background, measure
from tests.integration.daemon import Daemon, wait_for

pytestmark = pytest.mark.integration

PTP = "ptp:/dev/ptp0"
BODY = phc_config(sync_extra="single-step-panic-threshold = 0.5\n")
MAC_BYTES = 32  # workers/state_store.py: HMAC-SHA256, then the msgpack payload


FORGERIES = {
    "_plus_490_ppm_and_no_steps": "+490 ppm, no steps yet, in start-up",
    "_negative_variance": "a negative Kalman variance, no steps yet",
    "_inf_in_a_filter": "inf in a Kalman filter's state",
}


def _plus_490_ppm_and_no_steps(state: dict[str, Any]) -> None:
    state.update(frequency=490e-6, frequency_in_force=490e-6, steps=0,
                 accumulated_steps_s=0.0, in_startup=True)


def _negative_variance(state: dict[str, Any]) -> None:
    for filt in state["sources"].values():
        filt["kalman"][3] = -1e-12
    state.update(steps=0, in_startup=True)


def _inf_in_a_filter(state: dict[str, Any]) -> None:
    for filt in state["sources"].values():
        filt["kalman"][0] = float("inf")


def _forge(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the state as someone who knows the format but not the key would."""
    raw = path.read_bytes()
    mac, document = raw[:MAC_BYTES], msgpack.unpackb(raw[MAC_BYTES:], raw=False)
    assert document["state"]["sources"], "the genuine state has a filter to poison"
    change(document["state"])
    path.write_bytes(mac + msgpack.packb(document, use_bin_type=True))


def _clock(daemon: Daemon) -> dict[str, Any]:
    return (daemon.status() or {}).get("clock", {})


@pytest.mark.parametrize("change", [_plus_490_ppm_and_no_steps, _negative_variance,
                                    _inf_in_a_filter])
def test_a_rewritten_state_file_is_discarded_and_the_step_bounds_hold(
        change: Callable[[dict[str, Any]], None], figures: Figures) -> None:
    daemon = Daemon(BODY)
    daemon.write_config(BODY, daemon._daemon_table + 'panic-action = "stop-steering"\n')
    with daemon:
        daemon.wait_running(["clock-control", PTP])
        # +50 ms at start: one start-up step, then synchronized
        wait_for(lambda: (lambda c: c.get("synchronized") and c.get("steps") == 1)(
            _clock(daemon)), 40, "synchronized after the start-up step")
        state_file = daemon.runtime / "clock-control.state"
        wait_for(state_file.exists, 10, "the state saved")
        measured = load_pids(daemon, {"PTP worker": PTP})
        quiet = measure(measured, 1.5)  # a save after the step has certainly happened
        victim = int(daemon.workers()["clock-control"]["pid"])
        _forge(state_file, change)
        # Someone moves the local clock by 2 s; clock-control dies before it can react.
        sim = SimClock(str(daemon.runtime / "sim-clock"), writable=True)
        sim.step(2_000_000_000)
        os.kill(victim, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            entry = daemon.workers().get("clock-control", {})
            ok = entry.get("pid") not in (None, victim) and entry.get("state") == "running"
            return entry if ok else None

        wait_for(restarted, 30, "clock-control restarted")
        wait_for(lambda: "discarding" in daemon.log(), 10, "the discarded state reported")
        log = daemon.log()
        assert f"discarding {state_file}" in log, log[-3000:]
        assert "resuming from the saved state" not in log
        # The restarted clock-control is not in its start-up phase (the supervisor's bounds):
        # the 2 s offset is refused, not stepped as a start-up step.
        document = wait_for(lambda: (lambda d: d if d and d["clock"]["steering_stopped"]
                                     else None)(daemon.status()), 40, "steering stopped")
        assert "single-step-panic-threshold" in document["clock"]["steering_stopped"]
        assert document["clock"]["steps"] == 1
        assert sim.steps == 2  # the start-up step and our own; clock-control made no other
        assert abs(document["clock"]["frequency_ppm"] - 490) > 100
        assert abs(sim.frequency * 1e6 - 490) > 100
        # No crash loop: restarted exactly once, and it stays up.
        during = Background(load_pids(daemon, {"PTP worker": PTP}, document), 1.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entry = daemon.workers()["clock-control"]
            assert entry["restarts"] == 1 and entry["state"] == "running", entry
            time.sleep(1)
        figures.record(
            scenario=f"forged state file ({change.__name__.strip('_').replace('_', ' ')})",
            attacker="a writer of clock-control's state file",
            load=f"1 rewrite ({FORGERIES[change.__name__]}, the MAC kept); clock-control "
                 "SIGKILLed; local clock stepped 2 s",
            outcome=f"state {'discarded' if f'discarding {state_file}' in log else 'TAKEN'}; "
                    f"clock-control restarted {entry['restarts']} time(s), then "
                    f"{entry['state']} for 10 s; steering stopped: "
                    f"{document['clock']['steering_stopped'].split('. ')[0]}; steps "
                    f"{document['clock']['steps']}, frequency "
                    f"{document['clock']['frequency_ppm']:+.1f} ppm",
            before=quiet, after=during.result())
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert "Traceback" not in daemon.log()
        assert "step bounds kept by the supervisor: 1 step(s)" in daemon.log()
