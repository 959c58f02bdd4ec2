"""Simulated PHCs and NTP servers, and the client arithmetic that turns them into samples."""

from __future__ import annotations

import statistics

import pytest
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.sim.clock import LocalClockModel, LocalClockParams, SimClock
from ntpd_py.core.sim.ntp import Exchange, KissOfDeath, NtpServerModel, ServerParams, ntp_sample
from ntpd_py.core.sim.phc import PhcModel, PhcParams, phc_sample, phc_uncertainty

S = 1_000_000_000
EPOCH = 1_780_000_000 * S


def clock(offset: float = 0.0) -> SimClock:
    return SimClock(LocalClockModel(LocalClockParams(offset_s=offset), 1), real_epoch_ns=EPOCH,
                    mono_epoch_ns=1000 * S)


def test_phc_read_gives_kernel_like_triplets() -> None:
    c = clock(offset=1e-3)
    phc = PhcModel("/dev/ptp0", PhcParams(bias_s=300e-6, window_s=2e-6, window_jitter_s=1e-6,
                                          readings=5), seed=1)
    readings = phc.read(10 * S, 0, c)
    assert readings is not None and len(readings) == 5
    for before, value, after in readings:
        assert after - before >= 2000
        assert (value - before - (after - before) / 2) / S == pytest.approx(300e-6 - 1e-3, abs=1e-9)
    assert readings == phc.read(10 * S, 0, c)  # same index, same noise
    s = phc_sample("/dev/ptp0", readings, precision_s=1e-7, mono_minus_real_ns=-EPOCH)
    windows = [a - b for b, _, a in readings]
    assert s.delay_s == min(windows) / S and s.kind is SourceKind.PTP
    assert s.offset_s == pytest.approx(300e-6 - 1e-3, abs=1e-9)
    assert s.uncertainty_s == pytest.approx(phc_uncertainty(1e-7, s.delay_s))


def test_phc_common_noise_is_shared_within_a_read_and_varies_between_reads() -> None:
    c = clock()
    phc = PhcModel("/dev/ptp0", PhcParams(method="extended", readings=5, delay_up_s=0.0,
                                          delay_down_s=0.0, common_noise_s=20e-9), seed=4)
    means = []
    for index in range(400):
        readings = phc.read(10 * S + index * S, index, c)
        assert readings is not None
        errors = {value - before for before, value, _ in readings}
        assert len(errors) == 1  # no transit delay, no own noise: all five share one error
        means.append(errors.pop() / S)
    assert statistics.pstdev(means) == pytest.approx(20e-9, rel=0.15)


def test_phc_noise_failures_and_steps() -> None:
    c = clock()
    phc = PhcModel("p", PhcParams(noise_s=50e-9, read_failure=0.25, step_at_s=100.0,
                                  step_s=1.0), seed=2)
    reads = [phc.read(k * S, k, c) for k in range(4000)]
    failed = sum(r is None for r in reads)
    assert 800 < failed < 1200
    errors = [(r[0][1] - r[0][0]) / S for r in reads[:100] if r is not None]
    assert statistics.pstdev(errors) == pytest.approx(50e-9, rel=0.25)
    assert phc.time_error(101 * S) == 1.0 and phc.time_error(99 * S) == 0.0


def test_phc_sample_picks_the_quickest_reading() -> None:
    s = phc_sample("p", [(0, 600, 1000), (2000, 2100, 2200), (3000, 3900, 5000)],
                   precision_s=1e-9, mono_minus_real_ns=0)
    assert s.delay_s == 200e-9 and s.offset_s == 0.0 and s.realtime_ns == 2100
    with pytest.raises(ValueError):
        phc_sample("p", [], precision_s=1e-9, mono_minus_real_ns=0)
    with pytest.raises(ValueError):
        phc_sample("p", [(10, 5, 0)], precision_s=1e-9, mono_minus_real_ns=0)


def test_ntp_exchange_and_client_arithmetic() -> None:
    c = clock(offset=-2e-3)
    server = NtpServerModel("192.0.2.1", ServerParams(delay_s=100e-6, delay_jitter_s=100e-6,
                                                      error_s=1e-3), seed=1)
    offsets, delays = [], []
    for k in range(3000):
        send = k * S
        x = server.exchange(send, k, c)
        assert isinstance(x, Exchange)
        t1, t4 = c.realtime_ns(send), c.realtime_ns(x.arrival_ns)
        s = ntp_sample("192.0.2.1", t1, x.t2_ns, x.t3_ns, t4, mono_t1_ns=c.mono_ns(send),
                       mono_t4_ns=c.mono_ns(x.arrival_ns), stratum=1, root_delay_s=0.0,
                       root_dispersion_s=1e-6, leap=LeapIndicator.NONE, reference_id=1,
                       poll_log2=4)
        offsets.append(s.offset_s)
        delays.append(s.delay_s)
        # the error of each exchange is bounded by half the round trip's excess
        assert abs(s.offset_s - 3e-3) <= (s.delay_s - 200e-6) / 2 + 1e-9
    assert statistics.fmean(offsets) == pytest.approx(3e-3, abs=5e-6)  # server - local
    assert statistics.fmean(delays) == pytest.approx(400e-6, rel=0.05)
    assert statistics.pstdev(offsets) == pytest.approx(70.7e-6, rel=0.1)


def _round_trips(params: ServerParams, n: int = 4000) -> list[float]:
    c = clock()
    server = NtpServerModel("d", params, seed=2)
    trips = []
    for k in range(n):
        x = server.exchange(k * S, k, c)
        assert isinstance(x, Exchange)
        trips.append((x.arrival_ns - k * S) / S - params.processing_s)
    return trips


def test_gamma_delays_keep_the_mean_and_narrow_the_spread() -> None:
    expo = _round_trips(ServerParams(delay_s=100e-6, delay_jitter_s=100e-6))
    gamma = _round_trips(ServerParams(delay_s=100e-6, delay_jitter_s=100e-6,
                                      delay_dist="gamma", delay_shape=4.0))
    assert statistics.fmean(gamma) == pytest.approx(400e-6, rel=0.03)
    assert statistics.fmean(expo) == pytest.approx(400e-6, rel=0.03)
    # per direction: sd = mean for the exponential, mean / 2 for gamma(4)
    assert statistics.pstdev(expo) == pytest.approx(141e-6, rel=0.1)
    assert statistics.pstdev(gamma) == pytest.approx(70.7e-6, rel=0.1)
    # a minimum-delay exchange (both ways < 10 µs of queueing) is rare under gamma
    assert sum(t < 220e-6 for t in gamma) < sum(t < 220e-6 for t in expo) / 10


def test_delay_spikes_hit_about_their_share_of_transits() -> None:
    trips = _round_trips(ServerParams(delay_s=100e-6, delay_jitter_s=100e-6,
                                      spike_probability=0.02, spike_min_s=1e-3,
                                      spike_max_s=10e-3))
    spiked = sum(t > 1.2e-3 for t in trips) / len(trips)
    assert spiked == pytest.approx(1 - 0.98**2, abs=0.01)
    assert max(trips) < 20.2e-3 + 3e-3


def test_asymmetry_biases_the_offset_by_half() -> None:
    c = clock()
    server = NtpServerModel("s", ServerParams(delay_s=1e-3, delay_jitter_s=0.0, asymmetry_s=2e-4),
                            seed=1)
    x = server.exchange(0, 0, c)
    assert isinstance(x, Exchange)
    t4 = c.realtime_ns(x.arrival_ns)
    s = ntp_sample("s", c.realtime_ns(0), x.t2_ns, x.t3_ns, t4, mono_t1_ns=0, mono_t4_ns=0,
                   stratum=1, root_delay_s=0, root_dispersion_s=0, leap=LeapIndicator.NONE,
                   reference_id=0, poll_log2=4)
    assert s.offset_s == pytest.approx(1e-4, abs=1e-9)


def test_loss_kod_and_steps() -> None:
    c = clock()
    lossy = NtpServerModel("l", ServerParams(loss=0.3), seed=1)
    lost = sum(lossy.exchange(k * S, k, c) is None for k in range(2000))
    assert 500 < lost < 700
    kod = NtpServerModel("k", ServerParams(kod="deny", kod_at_s=10.0), seed=1)
    assert isinstance(kod.exchange(5 * S, 0, c), Exchange)
    denied = kod.exchange(20 * S, 1, c)
    assert isinstance(denied, KissOfDeath) and denied.code == "DENY"
    stepping = NtpServerModel("s", ServerParams(step_at_s=50.0, step_s=-1.0), seed=1)
    assert stepping.time_error(49 * S) == 0.0 and stepping.time_error(51 * S) == -1.0
