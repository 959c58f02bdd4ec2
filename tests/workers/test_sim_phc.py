"""The simulated PHC of `clock = "simulated"`: bias, read window, failures, repeatability."""

from __future__ import annotations

from pathlib import Path

import pytest
from ntpd_py.core.config import SimulationConfig
from ntpd_py.core.phc import ReadMethod
from ntpd_py.core.ptp_events import DeviceErrorKind
from ntpd_py.plumbing.simclock import SimClock
from ntpd_py.workers._phc import PhcError
from ntpd_py.workers.sim_phc import READ_WINDOW_NS, SimPhcDevice

from tests.doubles import FakeClock

OFFSET_S = 0.25  # the simulated local clock is ahead of true time by this much


def _device(tmp_path: Path, clock: FakeClock, **sim: object) -> tuple[SimPhcDevice, SimClock]:
    path = tmp_path / "simclock"
    if not path.exists():  # one shared clock per test, as in the daemon
        SimClock.create(str(path), initial_offset_s=OFFSET_S, frequency=0.0)
    shared = SimClock(str(path))
    config = SimulationConfig.model_validate(sim)
    return SimPhcDevice("/dev/ptp0", shared, config, monotonic_ns=lambda: clock.mono_ns), shared


def test_readings_straddle_the_local_clock_and_carry_the_bias(tmp_path: Path) -> None:
    clock = FakeClock()
    device, shared = _device(tmp_path, clock, **{"phc-bias": {"/dev/ptp0": 0.001},
                                                 "phc-noise": 0.0})
    readings = device.read(ReadMethod.EXTENDED, 3)
    assert len(readings) == 3
    for r in readings:
        assert r.sys_after_ns - r.sys_before_ns == READ_WINDOW_NS
        assert r.sys_before_ns == shared.local_ns(clock.mono_ns)
        # PHC = true time (+ bias); local = true + offset: the midpoint sees both.
        midpoint = (r.sys_before_ns + r.sys_after_ns) // 2
        assert r.phc_ns - midpoint == round(-OFFSET_S * 1e9) + 1_000_000


def test_precise_is_unsupported_and_failures_are_io_errors(tmp_path: Path) -> None:
    clock = FakeClock()
    device, _ = _device(tmp_path, clock, **{"phc-read-failure-rate": 1.0})
    with pytest.raises(PhcError) as exc:
        device.read(ReadMethod.PRECISE, 1)
    assert exc.value.kind is DeviceErrorKind.UNSUPPORTED
    with pytest.raises(PhcError) as exc:
        device.read(ReadMethod.EXTENDED, 1)
    assert exc.value.kind is DeviceErrorKind.IO
    assert device.caps().cross_timestamping is False


def test_noise_is_repeatable_for_one_seed_and_path(tmp_path: Path) -> None:
    clock = FakeClock()
    sim = {"phc-noise": 1e-6, "seed": 7}
    first, _ = _device(tmp_path, clock, **sim)
    second, _ = _device(tmp_path, clock, **sim)
    a = [r.phc_ns for r in first.read(ReadMethod.EXTENDED, 5)]
    assert a == [r.phc_ns for r in second.read(ReadMethod.EXTENDED, 5)]
    assert len(set(a)) > 1  # the noise is there
