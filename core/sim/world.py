"""The world of one scenario: the local clock and every simulated source, built from the file.

Only models and their parameters live here (no scheduling): the lead's
real-time harness can build the same :class:`World` and evaluate it at any
true time from separate processes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..events import LeapIndicator, SourceKind
from .clock import LocalClockModel, LocalClockParams, SimClock
from .ntp import NtpServerModel, ServerParams
from .phc import PhcModel, PhcParams
from .scenario import (
    PhcSim,
    Scenario,
    SimPpsSource,
    SimPtpSource,
    SimServerSource,
    SimSockSource,
    source_id,
)

__all__ = ["MONO_EPOCH_NS", "PhcSource", "PpsFeed", "ServerSource", "SimSourceModel", "SockFeed",
           "World",
           "build_world", "phc_params"]

MONO_EPOCH_NS = 1_000 * 1_000_000_000  # CLOCK_MONOTONIC at the start: booted 1000 s ago
_LEAP = {
    "none": LeapIndicator.NONE,
    "insert": LeapIndicator.INSERT,
    "delete": LeapIndicator.DELETE,
    "unsynchronized": LeapIndicator.UNSYNCHRONIZED,
}


@dataclass(frozen=True, slots=True)
class PhcSource:
    source_id: str
    config: SimPtpSource
    model: PhcModel
    reference_id: int
    latency_s: float

    kind = SourceKind.PTP

    def time_error(self, t_ns: int) -> float:
        return self.model.time_error(t_ns)


@dataclass(frozen=True, slots=True)
class ServerSource:
    source_id: str
    config: SimServerSource
    model: NtpServerModel
    reference_id: int
    poll_log2: int
    poll_limits: tuple[int, int]
    iburst: int

    kind = SourceKind.NTP

    def time_error(self, t_ns: int) -> float:
        return self.model.time_error(t_ns)


@dataclass(frozen=True, slots=True)
class SockFeed:
    """A GPS receiver behind gpsd, writing SOCK samples (the sample is core's own codec)."""

    source_id: str
    config: SimSockSource

    kind = SourceKind.SOCK

    def time_error(self, t_ns: int) -> float:
        # what a sample says minus the truth, on average: the message's mean delay
        del t_ns
        return -self.config.sim.delay


@dataclass(frozen=True, slots=True)
class PpsFeed:
    """A 1PPS signal into a kernel PPS device."""

    source_id: str
    config: SimPpsSource

    kind = SourceKind.PPS

    def time_error(self, t_ns: int) -> float:
        del t_ns
        return -self.config.sim.bias


SimSourceModel = PhcSource | ServerSource | SockFeed | PpsFeed


@dataclass(frozen=True, slots=True)
class World:
    clock: SimClock
    sources: tuple[SimSourceModel, ...]
    seed: int


def _refid_text(text: str) -> int:
    return int.from_bytes(text.encode("ascii", "replace")[:4].ljust(4, b"\0"), "big")


def _server_refid(address: str) -> int:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    try:
        return int(ipaddress.IPv4Address(host))
    except ValueError:
        return _refid_text("SIM")


def phc_params(s: PhcSim) -> PhcParams:
    """The model parameters of a scenario's `[source.sim]` PHC table."""
    return PhcParams(
        bias_s=s.bias,
        noise_s=s.noise,
        window_s=s.window,
        window_jitter_s=s.window_jitter,
        readings=s.readings,
        read_failure=s.read_failure,
        time_backwards=s.time_backwards,
        step_at_s=s.step_at,
        step_s=s.step,
        method=s.method,
        delay_dist=s.delay_dist,
        delay_shape=s.delay_shape,
        delay_up_s=s.delay_up,
        delay_down_s=s.delay_down,
        spike_probability=s.spike_probability,
        spike_min_s=s.spike_min,
        spike_max_s=s.spike_max,
        gap_s=s.gap,
        precise_noise_s=s.precise_noise,
        common_noise_s=s.common_noise,
        granularity_s=s.granularity,
        max_reads_per_s=s.max_reads_per_s,
        stamp_jitter_s=s.stamp_jitter,
    )


def _phc(src: SimPtpSource, seed: int, index: int) -> PhcSource:
    params = phc_params(src.sim)
    name = source_id(src)
    return PhcSource(name, src, PhcModel(name, params, seed), _refid_text(f"PHC{index}"),
                     src.sim.latency)


def _server(src: SimServerSource, scenario: Scenario, seed: int) -> ServerSource:
    s = src.sim
    params = ServerParams(
        delay_s=s.delay,
        delay_jitter_s=s.delay_jitter,
        asymmetry_s=s.asymmetry,
        loss=s.loss,
        error_s=s.error,
        step_at_s=s.step_at,
        step_s=s.step,
        kod=s.kod,
        kod_at_s=s.kod_at,
        processing_s=s.processing,
        stratum=s.stratum,
        root_delay_s=s.root_delay,
        root_dispersion_s=s.root_dispersion,
        leap=_LEAP[s.leap],
        delay_dist=s.delay_dist,
        delay_shape=s.delay_shape,
        spike_probability=s.spike_probability,
        spike_min_s=s.spike_min,
        spike_max_s=s.spike_max,
    )
    limits = src.poll_limits(scenario.source_defaults)
    name = source_id(src)
    return ServerSource(
        name,
        src,
        NtpServerModel(name, params, seed),
        _server_refid(src.address),
        src.initial_poll(scenario.source_defaults),
        (limits.min, limits.max),
        s.iburst,
    )


def build_world(scenario: Scenario, seed: int) -> World:
    lc = scenario.local_clock
    params = LocalClockParams(
        offset_s=lc.offset,
        frequency=lc.frequency,
        wander=lc.wander,
        temperature_amplitude=lc.temperature_amplitude,
        temperature_period_s=lc.temperature_period,
        frequency_change_noise_s=lc.frequency_change_noise,
    )
    clock = SimClock(
        LocalClockModel(params, seed),
        real_epoch_ns=scenario.scenario.start_ns(),
        mono_epoch_ns=MONO_EPOCH_NS,
    )
    sources: list[SimSourceModel] = []
    phcs = 0
    for src in scenario.source:
        if isinstance(src, SimPtpSource):
            sources.append(_phc(src, seed, phcs))
            phcs += 1
        elif isinstance(src, SimSockSource):
            sources.append(SockFeed(source_id(src), src))
        elif isinstance(src, SimPpsSource):
            sources.append(PpsFeed(source_id(src), src))
        else:
            sources.append(_server(src, scenario, seed))
    return World(clock, tuple(sources), seed)
