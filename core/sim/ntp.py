"""Simulated NTP servers and the client's arithmetic on the four timestamps.

A server's clock is true time plus ``error`` (a falseticker has a large one),
optionally stepping by ``step`` at ``step-at``. A request sent at true time t
travels ``delay + asymmetry/2 + Exp(delay-jitter)`` to the server, which
answers ``processing`` later; the answer travels
``delay - asymmetry/2 + Exp(delay-jitter)`` back. The queueing part may
instead be gamma-distributed with the same mean (``delay-dist = "gamma"``,
integer shape ``delay-shape``: a sum of that many exponentials, less skewed),
and either may carry rare spikes (``spike-probability`` per direction, a
uniform ``spike-min``..``spike-max`` added: a congested switch, a preempted
server), so that a result can be checked against more than one delay model.
A request is lost with
probability ``loss``; from ``kod-at`` on the server answers with a
kiss-o'-death (RATE or DENY) instead. Every random draw is keyed by (seed,
server name, request index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..events import LeapIndicator, Sample, SourceKind
from ..units import NS_PER_S
from . import rng
from .clock import SimClock

__all__ = ["Exchange", "KissOfDeath", "NtpServerModel", "ServerParams", "ntp_sample"]



@dataclass(frozen=True, slots=True)
class ServerParams:
    delay_s: float = 100e-6  # one-way base delay
    delay_jitter_s: float = 100e-6  # mean of the exponential queueing delay, each way
    asymmetry_s: float = 0.0  # outbound minus return base delay
    loss: float = 0.0
    error_s: float = 0.0  # server clock minus true time
    step_at_s: float | None = None
    step_s: float = 0.0
    kod: Literal["none", "rate", "deny"] = "none"
    kod_at_s: float = 0.0
    processing_s: float = 10e-6
    stratum: int = 1
    root_delay_s: float = 0.0
    root_dispersion_s: float = 10e-6
    leap: LeapIndicator = LeapIndicator.NONE
    delay_dist: Literal["exponential", "gamma"] = "exponential"
    delay_shape: float = 4.0
    spike_probability: float = 0.0  # per request and direction
    spike_min_s: float = 0.0
    spike_max_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request answered: server stamps t2/t3 (ns) and when the answer arrives (true ns)."""

    t2_ns: int
    t3_ns: int
    arrival_ns: int


@dataclass(frozen=True, slots=True)
class KissOfDeath:
    code: Literal["RATE", "DENY"]
    arrival_ns: int


class NtpServerModel:
    """One NTP server and the network path to it; pure functions of time and request index."""

    def __init__(self, name: str, params: ServerParams, seed: int) -> None:
        self.name = name
        self.params = params
        self.seed = seed

    def time_error(self, t_ns: int) -> float:
        p = self.params
        stepped = p.step_at_s is not None and t_ns >= p.step_at_s * NS_PER_S
        return p.error_s + (p.step_s if stepped else 0.0)

    def exchange(self, send_ns: int, index: int, clock: SimClock) -> Exchange | KissOfDeath | None:
        """What happens to request ``index`` sent at true time ``send_ns`` (None: lost)."""
        p = self.params
        if p.loss and rng.uniform(self.seed, self.name, "loss", index) < p.loss:
            return None
        out = p.delay_s + p.asymmetry_s / 2 + self._queueing(index, "out")
        back = p.delay_s - p.asymmetry_s / 2 + self._queueing(index, "back")
        received = send_ns + max(round(out * NS_PER_S), 0)
        sent = received + round(p.processing_s * NS_PER_S)
        arrival = sent + max(round(back * NS_PER_S), 0)
        if p.kod != "none" and send_ns >= p.kod_at_s * NS_PER_S:
            return KissOfDeath("RATE" if p.kod == "rate" else "DENY", arrival)
        t2 = clock.real_epoch_ns + received + round(self.time_error(received) * NS_PER_S)
        t3 = clock.real_epoch_ns + sent + round(self.time_error(sent) * NS_PER_S)
        return Exchange(t2, t3, arrival)

    def _queueing(self, index: int, direction: str) -> float:
        """The variable part of one transit: the delay distribution's body plus a rare spike."""
        p = self.params
        if p.delay_dist == "gamma" and p.delay_jitter_s > 0.0:
            k = max(1, round(p.delay_shape))
            body = sum(
                rng.exponential(self.seed, self.name, f"{direction}{j}", index,
                                p.delay_jitter_s / k)
                for j in range(k)
            )
        else:
            body = rng.exponential(self.seed, self.name, direction, index, p.delay_jitter_s)
        if p.spike_probability and rng.uniform(
                self.seed, self.name, f"spike-{direction}", index) < p.spike_probability:
            u = rng.uniform(self.seed, self.name, f"spike-size-{direction}", index)
            body += p.spike_min_s + u * (p.spike_max_s - p.spike_min_s)
        return body


def ntp_sample(
    source_id: str,
    t1_ns: int,
    t2_ns: int,
    t3_ns: int,
    t4_ns: int,
    *,
    mono_t1_ns: int,
    mono_t4_ns: int,
    stratum: int,
    root_delay_s: float,
    root_dispersion_s: float,
    leap: LeapIndicator,
    reference_id: int,
    poll_log2: int,
) -> Sample:
    """The client's view of one exchange (RFC 5905 offset and delay), at the midpoint of t1/t4."""
    offset = ((t2_ns - t1_ns) + (t3_ns - t4_ns)) / 2 / NS_PER_S
    delay = max((t4_ns - t1_ns) - (t3_ns - t2_ns), 0) / NS_PER_S
    return Sample(
        source_id=source_id,
        kind=SourceKind.NTP,
        offset_s=offset,
        delay_s=delay,
        uncertainty_s=0.0,
        root_delay_s=root_delay_s,
        root_dispersion_s=root_dispersion_s,
        stratum=stratum,
        leap=leap,
        reference_id=reference_id,
        mono_ns=(mono_t1_ns + mono_t4_ns) // 2,
        realtime_ns=(t1_ns + t4_ns) // 2,
        poll_log2=poll_log2,
    )
