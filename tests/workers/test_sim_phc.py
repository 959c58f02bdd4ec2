"""The simulated PHC of `clock = "simulated"`: bias, read window, failures, repeatability."""

from __future__ import annotations

import itertools
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


def _model_device(tmp_path: Path, clock: FakeClock, **params: object) -> SimPhcDevice:
    from ntpd_py.core.sim.phc import PhcModel, PhcParams

    _, shared = _device(tmp_path, clock)
    model = PhcModel("/dev/ptp0", PhcParams(**params), seed=3)  # type: ignore[arg-type]
    return SimPhcDevice("/dev/ptp0", shared, SimulationConfig(), model,
                        monotonic_ns=lambda: clock.mono_ns)


def test_basic_reads_share_their_system_stamps(tmp_path: Path) -> None:
    clock = FakeClock()
    device, _ = _device(tmp_path, clock, **{"phc-noise": 0.0})
    readings = device.read(ReadMethod.BASIC, 4)
    assert all(a.sys_after_ns == b.sys_before_ns for a, b in itertools.pairwise(readings))
    assert all(r.sys_after_ns - r.sys_before_ns == READ_WINDOW_NS for r in readings)


def test_reading_level_basic_device_honours_the_method(tmp_path: Path) -> None:
    clock = FakeClock()
    device = _model_device(tmp_path, clock, method="basic", delay_up_s=600e-9,
                           delay_down_s=400e-9, max_reads_per_s=10.0)
    # a basic-only device: EXTENDED and PRECISE fail as unsupported (the worker falls back)
    for method in (ReadMethod.PRECISE, ReadMethod.EXTENDED):
        with pytest.raises(PhcError) as exc:
            device.read(method, 5)
        assert exc.value.kind is DeviceErrorKind.UNSUPPORTED
    assert device.caps().cross_timestamping is False
    readings = device.read(ReadMethod.BASIC, 25)
    assert len(readings) == 10  # max-reads-per-s
    assert all(a.sys_after_ns == b.sys_before_ns for a, b in itertools.pairwise(readings))
    windows = {r.sys_after_ns - r.sys_before_ns for r in readings}
    assert len(windows) > 1  # each reading's own transits
    for r in readings:  # the latch lies inside its window: |error| <= window / 2
        latch = r.phc_ns - r.sys_before_ns + round(OFFSET_S * 1e9)  # up, ns
        assert 0 <= latch <= r.sys_after_ns - r.sys_before_ns


def test_reading_level_basic_stamp_jitter_matches_the_simulator(tmp_path: Path) -> None:
    from ntpd_py.core.sim.phc import PhcModel, PhcParams

    clock = FakeClock()
    params = dict(method="basic", delay_up_s=600e-9, delay_down_s=400e-9, stamp_jitter_s=300e-9)
    device = _model_device(tmp_path, clock, **params)
    readings = device.read(ReadMethod.BASIC, 25)
    assert all(a.sys_after_ns == b.sys_before_ns for a, b in itertools.pairwise(readings))
    for r in readings:  # a jittered stamp never passes a latch
        latch = r.phc_ns - r.sys_before_ns + round(OFFSET_S * 1e9)
        assert 0 <= latch <= r.sys_after_ns - r.sys_before_ns
    # against the same device without jitter: every shared stamp moved, the last one
    # (which opens no reading) did not
    model = PhcModel("/dev/ptp0", PhcParams(**params), seed=3)  # type: ignore[arg-type]
    jitter = [model.stamp_jitter_ns(k) for k in range(24)]
    assert any(j != 0 for j in jitter)
    plain = _model_device(tmp_path, clock, **{**params, "stamp_jitter_s": 0.0})
    base = plain.read(ReadMethod.BASIC, 25)
    moved = [a.sys_after_ns - b.sys_after_ns for a, b in zip(readings, base, strict=True)]
    assert moved[:-1] != [0] * 24 and moved[-1] == 0  # the final stamp is nobody's opener


def test_reading_level_extended_and_precise_devices(tmp_path: Path) -> None:
    clock = FakeClock()
    extended = _model_device(tmp_path, clock, method="extended", delay_up_s=200e-9,
                             delay_down_s=200e-9, gap_s=1e-6)
    readings = extended.read(ReadMethod.EXTENDED, 5)
    assert all(b.sys_before_ns - a.sys_after_ns >= 1000 for a, b in itertools.pairwise(readings))
    assert len(extended.read(ReadMethod.BASIC, 5)) == 5  # a later method works too
    precise = _model_device(tmp_path, clock, method="precise", bias_s=1e-6)
    assert precise.caps().cross_timestamping is True
    [r] = precise.read(ReadMethod.PRECISE, 5)
    assert r.sys_before_ns == r.sys_after_ns
    assert r.phc_ns - r.sys_before_ns == round(-OFFSET_S * 1e9) + 1000
