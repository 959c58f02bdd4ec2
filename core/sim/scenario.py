"""Scenario files: the simulated world plus the ntpd-py settings under test, validated strictly.

A scenario is TOML::

    [scenario]            # name, duration (s), seed, measure-after (s), ...
    [local-clock]         # offset, frequency, wander, temperature-amplitude/-period
    [synchronization]     # exactly ntpd-py's [synchronization] table
    [source-defaults]     # exactly ntpd-py's [source-defaults] table
    [[source]]            # an ntpd-py source (mode = "ptp" or "server") ...
    [source.sim]          # ... and the world model behind it

Unknown keys, wrong types and out-of-range values are errors naming the
file, line and key, like the configuration's. Reading the file is the
caller's job.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import (
    PpsSourceConfig,
    PtpSourceConfig,
    ServerSourceConfig,
    SockSourceConfig,
    SourceDefaultsConfig,
    SynchronizationConfig,
)
from ..errors import ConfigError, ConfigIssue
from ..toml_lines import line_of, scan_key_lines

__all__ = [
    "LocalClockSim",
    "PhcSim",
    "PpsSim",
    "Scenario",
    "ScenarioInfo",
    "ServerSim",
    "SimPpsSource",
    "SimPtpSource",
    "SimServerSource",
    "SimSockSource",
    "SockSim",
    "load_scenario_text",
]

_NonNeg = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Pos = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Table(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, alias_generator=_kebab, populate_by_name=True
    )


class ScenarioInfo(_Table):
    """`[scenario]`: what is run and how it is measured."""

    name: str
    description: str = ""
    duration: Annotated[float, Field(gt=0.0, le=30 * 86400.0)]
    seed: Annotated[int, Field(ge=0)] = 1
    # Figures "after convergence" are taken from this time on (default: the second half).
    measure_after: _NonNeg | None = None
    metric_interval: Annotated[float, Field(ge=0.01, le=3600.0)] = 1.0
    start_time: str = "2026-01-15T00:00:00Z"
    # A source whose clock is off by more than this is a falseticker in the figures.
    falseticker_threshold: _Pos = 1e-4

    @field_validator("start_time")
    @classmethod
    def _iso(cls, value: str) -> str:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError('expected an ISO 8601 time such as "2026-01-15T00:00:00Z"') from None
        if parsed.tzinfo is None:
            raise ValueError("give a time zone, e.g. a trailing Z for UTC")
        return value

    def start_ns(self) -> int:
        parsed = dt.datetime.fromisoformat(self.start_time.replace("Z", "+00:00"))
        return int(parsed.timestamp()) * 1_000_000_000


class LocalClockSim(_Table):
    """`[local-clock]`: the simulated system clock's oscillator."""

    offset: Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)] = 0.0
    frequency: Annotated[float, Field(ge=-0.01, le=0.01)] = 0.0
    wander: Annotated[float, Field(ge=0.0, le=1e-5)] = 0.0
    temperature_amplitude: Annotated[float, Field(ge=0.0, le=1e-3)] = 0.0
    temperature_period: _Pos = 86400.0
    # sigma (s) of the phase step the kernel leaves behind each time the frequency is
    # changed (tests.vm.freq_glitch: about 20-35 ns in the QEMU TCG guest, 0 when held)
    frequency_change_noise: Annotated[float, Field(ge=0.0, le=1e-3)] = 0.0


class PhcSim(_Table):
    """`[source.sim]` of a PHC: bias to true time, reading noise, window, failures."""

    bias: _Finite = 0.0
    noise: _NonNeg = 0.0
    window: _NonNeg = 0.0
    window_jitter: _NonNeg = 0.0
    readings: Annotated[int, Field(ge=1, le=25)] = 1
    read_failure: _Probability = 0.0
    # a fault: the probability that the system time goes backwards between two readings
    # of one read (a clock stepped mid-read, a broken clocksource): the poll is rejected
    time_backwards: _Probability = 0.0
    latency: Annotated[float, Field(ge=0.0, le=1.0)] = 50e-6
    step_at: _NonNeg | None = None
    step: _Finite = 0.0
    # The reading-level models (core/sim/phc.py): "white" is the one-noise-figure model
    # above; the others build each reading from its up and down transit delays.
    method: Literal["white", "precise", "extended", "basic"] = "white"
    delay_dist: Literal["exponential", "gamma"] = "exponential"
    delay_shape: Annotated[float, Field(ge=1.0, le=64.0)] = 4.0
    delay_up: Annotated[float, Field(ge=0.0, le=0.01)] = 0.0
    delay_down: Annotated[float, Field(ge=0.0, le=0.01)] = 0.0
    spike_probability: _Probability = 0.0
    spike_min: Annotated[float, Field(ge=0.0, le=0.01)] = 10e-6
    spike_max: Annotated[float, Field(ge=0.0, le=0.01)] = 100e-6
    gap: Annotated[float, Field(ge=0.0, le=0.01)] = 0.0
    precise_noise: _NonNeg = 0.0
    common_noise: _NonNeg = 0.0  # shared by every reading of one read (core/sim/phc.py)
    granularity: Annotated[float, Field(ge=0.0, le=0.01)] = 0.0
    max_reads_per_s: _NonNeg = 0.0
    # basic only: how far (uniform, either way) the shared system stamp lands from where
    # the transits put it (core/sim/phc.py, PhcModel.stamp_jitter_ns)
    stamp_jitter: Annotated[float, Field(ge=0.0, le=0.01)] = 0.0
    # how the poll's readings become one offset: the worker's choice for the read
    # method ("default"), or one named estimator (core/phc_estimate.py)
    estimator: Literal["default", "min-window", "low-quartile-mean", "window-corrected",
                       "robust"] = "default"

    @model_validator(mode="after")
    def _spike(self) -> PhcSim:
        if self.spike_max < self.spike_min:
            raise ValueError("spike-max must not be below spike-min")
        return self


class ServerSim(_Table):
    """`[source.sim]` of an NTP server: its clock, the path, losses and kisses of death."""

    delay: Annotated[float, Field(ge=0.0, le=10.0)] = 100e-6
    delay_jitter: Annotated[float, Field(ge=0.0, le=10.0)] = 100e-6
    asymmetry: _Finite = 0.0
    loss: _Probability = 0.0
    error: _Finite = 0.0
    step_at: _NonNeg | None = None
    step: _Finite = 0.0
    kod: Literal["none", "rate", "deny"] = "none"
    kod_at: _NonNeg = 0.0
    processing: Annotated[float, Field(ge=0.0, le=1.0)] = 10e-6
    stratum: Annotated[int, Field(ge=1, le=16)] = 1
    root_delay: _NonNeg = 0.0
    root_dispersion: _NonNeg = 10e-6
    leap: Literal["none", "insert", "delete", "unsynchronized"] = "none"
    iburst: Annotated[int, Field(ge=0, le=8)] = 4  # first requests 2 s apart
    # the queueing delay's distribution and rare spikes (core/sim/ntp.py)
    delay_dist: Literal["exponential", "gamma"] = "exponential"
    delay_shape: Annotated[float, Field(ge=1.0, le=64.0)] = 4.0
    spike_probability: _Probability = 0.0
    spike_min: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-3
    spike_max: Annotated[float, Field(ge=0.0, le=1.0)] = 10e-3

    @model_validator(mode="after")
    def _path(self) -> ServerSim:
        if self.spike_max < self.spike_min:
            raise ValueError("spike-max must not be below spike-min")
        if abs(self.asymmetry) / 2 > self.delay:
            raise ValueError(
                "|asymmetry| / 2 must not exceed delay (a one-way delay would be negative)"
            )
        return self


class SockSim(_Table):
    """`[source.sim]` of a sock source: a GPS receiver's time messages as gpsd sends them.

    Each `interval` the feeder learns the time of a true second `delay` (mean, plus
    `jitter`, 1 σ) after it happened, stamps that moment on the local clock and sends
    the offset; the datagram reaches the worker `latency` later, or is lost.
    """

    delay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    jitter: _NonNeg = 500e-6
    interval: Annotated[float, Field(ge=0.05, le=64.0)] = 1.0
    latency: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-3
    loss: _Probability = 0.0


class PpsSim(_Table):
    """`[source.sim]` of a PPS source: pulses at true period boundaries.

    The kernel stamps each pulse on the local clock `bias` late (a cable, an
    interrupt latency) plus `jitter` (1 σ); the worker sees it `latency` after it.
    """

    bias: _Finite = 0.0
    jitter: _NonNeg = 1e-6
    latency: Annotated[float, Field(ge=0.0, le=0.5)] = 50e-6
    loss: _Probability = 0.0


class SimSockSource(SockSourceConfig):
    """An ntpd-py `mode = "sock"` source with its simulated feeder."""

    sim: SockSim = Field(default_factory=SockSim)


class SimPpsSource(PpsSourceConfig):
    """An ntpd-py `mode = "pps"` source with its simulated pulse."""

    sim: PpsSim = Field(default_factory=PpsSim)


class SimPtpSource(PtpSourceConfig):
    """An ntpd-py `mode = "ptp"` source with its simulated device."""

    sim: PhcSim = Field(default_factory=PhcSim)


class SimServerSource(ServerSourceConfig):
    """An ntpd-py `mode = "server"` source with its simulated server."""

    sim: ServerSim = Field(default_factory=ServerSim)


SimSource = Annotated[SimPtpSource | SimServerSource | SimSockSource | SimPpsSource,
                      Field(discriminator="mode")]


class Scenario(_Table):
    """A whole scenario file."""

    scenario: ScenarioInfo
    local_clock: LocalClockSim = Field(default_factory=LocalClockSim)
    synchronization: SynchronizationConfig = Field(default_factory=SynchronizationConfig)
    source_defaults: SourceDefaultsConfig = Field(default_factory=SourceDefaultsConfig)
    source: Annotated[list[SimSource], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> Scenario:
        seen: set[str] = set()
        for index, src in enumerate(self.source):
            key = source_id(src)
            if key in seen:
                raise ValueError(f"source[{index}]: {key!r} appears twice; each source once")
            seen.add(key)
        return self

    def measure_from_s(self, duration_s: float) -> float:
        after = self.scenario.measure_after
        return after if after is not None and after < duration_s else duration_s / 2


def source_id(src: SimPtpSource | SimServerSource | SimSockSource | SimPpsSource) -> str:
    return src.address if isinstance(src, SimServerSource) else src.path


_MODES = ("ptp", "server", "sock", "pps")


def _render(path: tuple[Any, ...]) -> str:
    """``("source", 0, "sim", "noise")`` -> ``source[0].sim.noise``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing mandatory key"
    if kind == "union_tag_invalid":
        return ('unknown mode; a scenario simulates mode = "ptp", "server", "sock" or "pps" '
                "sources")
    return str(err["msg"]).removeprefix("Value error, ")


def load_scenario_text(text: str, filename: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario; raise ConfigError listing every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(filename, "", f"not valid TOML: {exc}")]) from None
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        try:
            lines = scan_key_lines(text)
        except Exception:  # the line map only decorates messages
            lines = {}
        issues = []
        for err in exc.errors():
            path = list(err["loc"])
            if len(path) >= 3 and path[0] == "source" and path[2] in _MODES:
                del path[2]  # pydantic's union tag
            key = tuple(path)
            issues.append(
                ConfigIssue(filename, _render(key), _message(err), line_of(lines, key))
            )
        raise ConfigError(issues) from None
