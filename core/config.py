"""Configuration model: the ntpd-rs `ntp.toml` keys plus ntpd-py's own `[daemon]` table.

Every table rejects unknown keys and every value is checked for type and range,
so a typo is an error rather than a silently ignored setting. Keys are
kebab-case as in ntpd-rs; the Python attribute names are the snake_case forms.
Parsing text into this model (with file/line in the errors) is
:mod:`ntpd_py.core.config_load`.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from .config_paths import DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR, control_socket_path

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AlgorithmConfig",
    "Config",
    "DaemonConfig",
    "FilterList",
    "KeysetConfig",
    "NtsKeServerConfig",
    "NtsPoolSourceConfig",
    "NtsSourceConfig",
    "ObservabilityConfig",
    "PartialPollIntervalLimits",
    "PollIntervalLimits",
    "PoolSourceConfig",
    "PpsSourceConfig",
    "PtpSourceConfig",
    "ServerConfig",
    "ServerSourceConfig",
    "SimulationConfig",
    "SockSourceConfig",
    "SourceConfig",
    "SourceDefaultsConfig",
    "StepThreshold",
    "SynchronizationConfig",
    "check_host",
    "parse_host_port",
    "parse_socket_addr",
]

NTP_PORT = 123
NTS_KE_PORT = 4460
# chrony accepts minpoll down to -6 (LAN use); RFC 5905's MAXPOLL is 17.
POLL_LOG2_MIN = -6
POLL_LOG2_MAX = 17
_PollLog2 = Annotated[int, Field(ge=POLL_LOG2_MIN, le=POLL_LOG2_MAX)]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Table(BaseModel):
    """A TOML table: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=_kebab,
        populate_by_name=True,
    )


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]``, ``[v6]:port`` or a bare IPv6 literal.

    Raises ``ValueError`` with a message meant for users.
    """
    text = text.strip()
    if not text:
        raise ValueError("an address must not be empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("missing ']' after an IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError("the host part is empty")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def check_host(host: str) -> None:
    """Refuse a host that is neither an IP address nor a DNS name (ValueError).

    A colon outside brackets can only belong to an IPv6 literal, so
    `":invalid:ipv6:123"` is refused here rather than looked up as a name.
    """
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if ":" in host:
        raise ValueError(f"{host!r} is not a valid IPv6 address (write [v6-address]:port)")
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{host!r} is neither an IP address nor a valid host name")


def parse_socket_addr(text: str) -> tuple[str, int]:
    """Parse a socket address with a literal IP and an explicit port."""
    host, port = parse_host_port(text, default_port=-1)
    if port < 0:
        raise ValueError("expected an IP address and a port, e.g. '0.0.0.0:123' or '[::]:123'")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address (host names are not allowed here)"
        ) from None
    return host, port


# -- durations that may be unlimited -------------------------------------------------


def _threshold_part(value: Any, what: str) -> float | None:
    if value is None or value == "inf":  # None: built in Python, TOML has no null
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{what}: expected a number of seconds or "inf", got {value!r}')
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{what}: expected a non-negative finite number of seconds or "inf"')
    return float(value)


class StepThreshold(BaseModel):
    """A panic threshold per direction in seconds; ``None`` means unlimited.

    Written in TOML as a number (both directions), ``"inf"``, or a table
    ``{ forward = …, backward = … }`` whose parts are numbers or ``"inf"``; a
    part left out of the table is unlimited (ntpd-rs does the same).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    forward: float | None
    backward: float | None

    @model_validator(mode="before")
    @classmethod
    def _from_toml(cls, value: Any) -> Any:
        if isinstance(value, StepThreshold):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"forward", "backward"}
            if unknown:
                raise ValueError(f"unknown key(s) {sorted(unknown)}; expected forward and backward")
            # As in ntpd-rs, a direction left out of the table is unlimited.
            return {
                "forward": _threshold_part(value.get("forward"), "forward"),
                "backward": _threshold_part(value.get("backward"), "backward"),
            }
        both = _threshold_part(value, "threshold")
        return {"forward": both, "backward": both}

    @staticmethod
    def unlimited() -> StepThreshold:
        return StepThreshold(forward=None, backward=None)

    def allows(self, step_s: float) -> bool:
        """Whether a step of ``step_s`` seconds (positive = forward) is within limits."""
        limit = self.forward if step_s >= 0 else self.backward
        return limit is None or abs(step_s) <= limit


def _default_startup_threshold() -> StepThreshold:
    return StepThreshold(forward=None, backward=86400.0)


def _default_single_threshold() -> StepThreshold:
    return StepThreshold(forward=1000.0, backward=1000.0)


# -- sources ----------------------------------------------------------------------------


class PollIntervalLimits(_Table):
    """Bounds of the poll interval, as log2 seconds (4 = 16 s)."""

    min: _PollLog2 = Field(description="shortest poll interval, log2 seconds (4 = 16 s)")
    max: _PollLog2 = Field(description="longest poll interval, log2 seconds (10 = 1024 s)")

    @model_validator(mode="after")
    def _ordered(self) -> PollIntervalLimits:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be greater than max ({self.max})")
        return self


class PartialPollIntervalLimits(_Table):
    """A source's own poll bounds: either side may be left to `[source-defaults]`."""

    min: _PollLog2 | None = Field(
        None, description="shortest poll interval, log2 seconds (default: [source-defaults])")
    max: _PollLog2 | None = Field(
        None, description="longest poll interval, log2 seconds (default: [source-defaults])")

    def over(self, defaults: PollIntervalLimits) -> PollIntervalLimits:
        """These bounds, the missing side taken from `defaults` (ValueError if crossed)."""
        low = defaults.min if self.min is None else self.min
        high = defaults.max if self.max is None else self.max
        return PollIntervalLimits(min=low, max=high)


def _default_poll_limits() -> PollIntervalLimits:
    return PollIntervalLimits(min=4, max=10)


class SourceDefaultsConfig(_Table):
    """`[source-defaults]`: poll settings inherited by NTP sources.

    As in ntpd-rs, an initial poll interval outside the limits is not an
    error: it is clamped into them when a source starts, so
    `poll-interval-limits = { min = 6, max = 10 }` alone starts at 6.
    """

    poll_interval_limits: PollIntervalLimits = Field(default_factory=_default_poll_limits,
        description="poll interval bounds of every NTP source that sets none of its own")
    initial_poll_interval: _PollLog2 = Field(4, description=(
        "poll interval at start, log2 seconds; clamped into poll-interval-limits"))


class _NtpSourceBase(_Table):
    address: str = Field(
        description="host[:port], [IPv6]:port or an IPv6 literal; port 123 if none is given")
    ntp_version: Literal[4, "auto"] = Field(
        4, description=("NTP version of the requests; \"auto\" is accepted and behaves as 4 "
                        "(NTPv5 is not supported yet; validate warns)"))
    poll_interval_limits: PartialPollIntervalLimits | None = Field(
        None, description=("this source's poll interval bounds, log2 seconds; a side left out "
                           "comes from [source-defaults]"))
    initial_poll_interval: _PollLog2 | None = Field(
        None, description=("this source's poll interval at start, log2 seconds (default: "
                           "[source-defaults])"))

    @field_validator("address")
    @classmethod
    def _address_parses(cls, value: str) -> str:
        host, _ = parse_host_port(value, NTP_PORT)
        check_host(host)
        return value

    @field_validator("ntp_version", mode="before")
    @classmethod
    def _version_supported(cls, value: Any) -> Any:
        if value == 5:
            raise ValueError('NTPv5 (draft) is not supported yet by ntpd-py; use 4 or "auto"')
        return value

    def host_port(self) -> tuple[str, int]:
        return parse_host_port(self.address, NTP_PORT)

    def poll_limits(self, defaults: SourceDefaultsConfig) -> PollIntervalLimits:
        if self.poll_interval_limits is None:
            return defaults.poll_interval_limits
        try:
            return self.poll_interval_limits.over(defaults.poll_interval_limits)
        except ValidationError:
            # Crossed with the defaults' side: Config refuses this at load time.
            return defaults.poll_interval_limits

    def initial_poll(self, defaults: SourceDefaultsConfig) -> int:
        lim = self.poll_limits(defaults)
        initial = self.initial_poll_interval
        if initial is None:
            initial = defaults.initial_poll_interval
        return min(max(initial, lim.min), lim.max)


class ServerSourceConfig(_NtpSourceBase):
    """`mode = "server"`: one NTP server."""

    mode: Literal["server"] = Field(description="one NTP server")


class PoolSourceConfig(_NtpSourceBase):
    """`mode = "pool"`: up to `count` servers resolved from one name."""

    mode: Literal["pool"] = Field(description="several NTP servers resolved from one name")
    # No upper bound, as in ntpd-rs: a pool name rarely resolves to more than a
    # few addresses, and Config.warnings() says what a large count costs here.
    count: Annotated[int, Field(ge=1,
        description="how many servers of the pool to use at most")] = 4
    ignore: list[str] = Field(default_factory=list,
        description="IP addresses of the pool never to use")

    @field_validator("ignore")
    @classmethod
    def _ignore_are_ips(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address") from None
        return value


class PtpSourceConfig(_Table):
    """`mode = "ptp"`: a local PTP hardware clock (PHC) such as `/dev/ptp0`.

    The device's noise cannot be measured from the device itself, so the
    configured `precision` (1 σ, seconds) is its uncertainty.
    """

    mode: Literal["ptp"] = Field(description="a PTP hardware clock (PHC)")
    path: str = Field(
        description=("the PHC device, an absolute path such as /dev/ptp0 (a symlink is fine); "
                     "each PHC may appear once"))
    delay: Annotated[float, Field(ge=0.0, lt=16.0,
        description="root delay reported for this source, seconds (0 <= delay < 16)")] = 0.0
    interval: Annotated[int, Field(ge=-7, le=17,
        description="poll every 2^interval seconds (-7 to 17; 0 = 1 s, -2 = 0.25 s)")] = 0
    precision: Annotated[float, Field(gt=0.0, allow_inf_nan=False,
        description=("1-sigma noise of one reading, seconds: the PHC's uncertainty, which "
                     "cannot be measured from the device"))] = 1e-9
    stratum: Annotated[int, Field(ge=0, le=15,
        description="stratum of this source (0 to 15); ntpd-py serves one more")] = 0

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('expected an absolute path to a PTP device, e.g. "/dev/ptp0"')
        return value

    @property
    def interval_s(self) -> float:
        return 2.0**self.interval


class _RefclockSourceBase(_Table):
    """Keys shared by the reference-clock sources (sock, pps).

    ntpd-rs reads these two tables with hand-written deserializers whose keys are
    snake_case (`measurement_noise_estimate`), unlike the rest of the file; the
    same spelling is accepted here, so an ntpd-rs file loads unchanged.
    """

    model_config = ConfigDict(alias_generator=None)

    path: str = Field(description="an absolute path")
    precision: Annotated[float | None, Field(gt=0.0, allow_inf_nan=False,
        description=("1-sigma noise of one sample, seconds (required, or its square as "
                     "measurement_noise_estimate)"))] = None
    measurement_noise_estimate: Annotated[float | None, Field(gt=0.0, allow_inf_nan=False,
        description=("deprecated by ntpd-rs: the variance of one sample, seconds squared; "
                     "precision is its square root"))] = None
    accuracy: Annotated[float, Field(gt=0.0, allow_inf_nan=False,
        description=("a constant error this source may have, seconds (0: none); ntpd-rs uses it "
                     "to rank sources with a static offset lower"))] = 0.0

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute path")
        return value

    @model_validator(mode="after")
    def _one_noise_key(self) -> _RefclockSourceBase:
        if self.precision is None and self.measurement_noise_estimate is None:
            raise ValueError("missing key 'precision' (the 1-sigma noise of one sample, seconds)")
        if self.precision is not None and self.measurement_noise_estimate is not None:
            raise ValueError("set precision or measurement_noise_estimate (its deprecated "
                             "square), not both")
        return self

    @property
    def precision_s(self) -> float:
        """The 1-sigma noise of one sample (measurement_noise_estimate is its square)."""
        if self.precision is not None:
            return self.precision
        assert self.measurement_noise_estimate is not None  # _one_noise_key
        return math.sqrt(self.measurement_noise_estimate)


class SockSourceConfig(_RefclockSourceBase):
    """`mode = "sock"`: samples a feeder such as gpsd writes to a Unix datagram socket.

    ntpd-py creates the socket at `path` (gpsd writes to /run/chrony.<device>.sock);
    each datagram is the SOCK sample chrony defined (core/refclock_sock.py).
    """

    mode: Literal["sock"] = Field(description="samples from gpsd (or another feeder) over a socket")
    path: str = Field(description=("the Unix datagram socket ntpd-py creates for the feeder, "
                                   "e.g. /run/chrony.ttyS0.sock for gpsd on /dev/ttyS0"))


class PpsSourceConfig(_RefclockSourceBase):
    """`mode = "pps"`: a kernel PPS device (/dev/ppsN).

    A pulse marks the start of a second (of a period) only: the whole seconds come
    from the other sources, so PPS alone cannot set the clock and does not count
    towards minimum-agreeing-sources (as in ntpd-rs).
    """

    mode: Literal["pps"] = Field(description="a kernel PPS device; whole seconds come from "
                                             "the other sources")
    path: str = Field(description="the PPS device, e.g. /dev/pps0 (must support PPS_CANWAIT)")
    period: Annotated[float, Field(gt=0.0, le=3600.0, allow_inf_nan=False,
        description="seconds between pulses (1.0; 0.1 for a 10 Hz signal)")] = 1.0
    # ntpd-py only: ntpd-rs always uses the assert edge.
    edge: Literal["assert", "clear"] = Field(
        "assert", description=("which edge of the signal marks the second: assert or clear "
                               "(ntpd-py only; ntpd-rs uses assert)"))


class _UnsupportedSource(BaseModel):
    """A source mode ntpd-rs knows that ntpd-py does not implement yet."""

    model_config = ConfigDict(extra="allow", frozen=True)
    mode: str

    @model_validator(mode="after")
    def _refuse(self) -> _UnsupportedSource:
        hint = {
            "csptp": 'client-server PTP over the network; use a local PHC (mode = "ptp") '
                     'or an NTP source',
        }[self.mode]
        raise ValueError(f'mode = "{self.mode}" is not supported yet by ntpd-py ({hint})')


class _NtsSourceBase(_NtpSourceBase):
    address: str = Field(
        description=("the NTS-KE server: host[:port], [IPv6]:port or an IPv6 literal; port "
                     "4460 if none is given"))
    certificate_authority: str | None = Field(
        None, description=("a PEM file of CA certificates trusted beside the system store "
                           "for this source's NTS-KE server"))
    enable_srv_resolution: bool = Field(
        False, description="ntpd-rs's experimental SRV lookup of the NTS-KE server")

    def host_port(self) -> tuple[str, int]:
        return parse_host_port(self.address, NTS_KE_PORT)


class NtsSourceConfig(_NtsSourceBase):
    """`mode = "nts"`: one NTP server authenticated with NTS (RFC 8915)."""

    mode: Literal["nts"] = Field(
        description="one NTS-authenticated NTP server, reached through its NTS-KE server")


class NtsPoolSourceConfig(_NtsSourceBase):
    """`mode = "nts-pool"`: up to `count` NTS servers from one NTS-KE pool name."""

    mode: Literal["nts-pool"] = Field(
        description="several NTS-authenticated servers from one NTS-KE pool")
    count: Annotated[int, Field(ge=1,
        description="how many servers of the pool to use at most")] = 4


class _CsptpSourceConfig(_UnsupportedSource):
    mode: Literal["csptp"]


SourceConfig = Annotated[
    ServerSourceConfig
    | PoolSourceConfig
    | PtpSourceConfig
    | NtsSourceConfig
    | NtsPoolSourceConfig
    | SockSourceConfig
    | PpsSourceConfig
    | _CsptpSourceConfig,
    Field(discriminator="mode"),
]
SUPPORTED_MODES = ("server", "pool", "ptp", "nts", "nts-pool", "sock", "pps")
# ntpd-rs modes refused as "not supported yet" rather than as unknown.
UNSUPPORTED_MODES = ("csptp",)
# Modes whose keys are checked but which no worker runs yet: the whole file is refused
# with "not supported yet" on the mode (issue #21; emptied when the roles are wired).
UNWIRED_MODES: tuple[str, ...] = ()


# -- synchronization --------------------------------------------------------------------

_Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Probability = Annotated[float, Field(ge=0.0, le=1.0)]


# ntpd-rs keys of [synchronization.algorithm] that ntpd-py accepts but does not act on.
_UNUSED_ALGORITHM_KEYS = frozenset({
    "precision_low_probability", "precision_high_probability", "precision_hysteresis",
    "precision_minimum_weight", "steer_offset_threshold", "steer_offset_leftover",
    "steer_frequency_threshold", "steer_frequency_leftover",
})


class AlgorithmConfig(_Table):
    """`[synchronization.algorithm]`: tuning of the clock algorithm (ntpd-rs names)."""

    precision_low_probability: _Probability = Field(
        1.0 / 3.0, description="ntpd-rs's precision estimate: accepted, ignored (validate warns)")
    precision_high_probability: _Probability = Field(
        2.0 / 3.0, description="ntpd-rs's precision estimate: accepted, ignored (validate warns)")
    precision_hysteresis: Annotated[int, Field(ge=1,
        description="ntpd-rs's precision estimate: accepted, ignored (validate warns)")] = 16
    precision_minimum_weight: _Probability = Field(
        0.1, description="ntpd-rs's precision estimate: accepted, ignored (validate warns)")
    poll_interval_low_weight: _Probability = Field(
        0.4, description=("a sample weighing less than this in a source's filter counts toward "
                          "a longer poll interval"))
    poll_interval_high_weight: _Probability = Field(
        0.6, description=("a sample weighing more than this counts toward a shorter poll "
                          "interval"))
    poll_interval_hysteresis: Annotated[int, Field(ge=1,
        description="net count of such samples that changes the poll interval by one step")] = 16
    poll_interval_step_threshold: _Positive = Field(
        1e-6, description=("a sample this improbable (probability) sends the poll interval "
                           "back to its minimum"))
    delay_outlier_threshold: _Positive = Field(
        5.0, description=("a sample whose delay exceeds this many standard deviations of the "
                          "delay is an outlier"))
    initial_wander: _Positive = Field(
        1e-8, description="initial estimate of the frequency wander of clock and source")
    initial_frequency_uncertainty: _Positive = Field(
        100e-6, description="initial frequency uncertainty of a new source, s/s")
    maximum_source_uncertainty: _Positive = Field(
        0.25, description="a source whose uncertainty is above this (s) is not used")
    range_statistical_weight: _NonNegative = Field(
        2.0, description="standard deviations of a source's offset in its selection interval")
    # delay/2 bounds the error any path asymmetry can cause (RFC 5905 root distance);
    # ntpd-rs uses 0.25, which lets one asymmetric NTP path disagree with a PHC.
    range_delay_weight: _NonNegative = Field(
        0.5, description=("part of a source's round-trip delay in its selection interval "
                          "(ntpd-rs uses 0.25; delay/2 bounds any path asymmetry)"))
    steer_offset_threshold: _NonNegative = Field(
        2.0, description="ntpd-rs's steering rule: accepted, ignored (validate warns)")
    steer_offset_leftover: _NonNegative = Field(
        1.0, description="ntpd-rs's steering rule: accepted, ignored (validate warns)")
    steer_frequency_threshold: _NonNegative = Field(
        0.0, description="ntpd-rs's steering rule: accepted, ignored (validate warns)")
    steer_frequency_leftover: _NonNegative = Field(
        0.0, description="ntpd-rs's steering rule: accepted, ignored (validate warns)")
    step_threshold: _Positive = Field(
        0.010, description=("an offset above this (s) is stepped rather than slewed (chrony's "
                            "makestep)"))
    slew_maximum_frequency_offset: Annotated[float, Field(gt=0.0, le=500e-6,
        description="largest frequency offset (s/s) used to slew an offset away")] = 200e-6
    slew_minimum_duration: _Positive = Field(
        8.0, description="shortest duration of a slew, seconds")
    maximum_frequency_steer: Annotated[float, Field(gt=0.0, le=500e-6,
        description="largest frequency correction (s/s) ever applied")] = 495e-6
    ignore_server_dispersion: bool = Field(
        False, description="leave the root dispersion servers report out of their uncertainty")
    meddling_threshold: _Positive = Field(
        5.0, description=("a clock change by someone else larger than this (s) resets the "
                          "algorithm's state"))

    @model_validator(mode="after")
    def _ordered(self) -> AlgorithmConfig:
        if self.precision_low_probability > self.precision_high_probability:
            raise ValueError("precision-low-probability must not exceed precision-high-probability")
        if self.poll_interval_low_weight > self.poll_interval_high_weight:
            raise ValueError("poll-interval-low-weight must not exceed poll-interval-high-weight")
        return self


class SynchronizationConfig(_Table):
    """`[synchronization]`: when sources agree and how far the clock may be moved."""

    minimum_agreeing_sources: Annotated[int, Field(ge=1,
        description=("sources that must agree before the clock is steered (a host with one PHC"
                     " needs 1)"))] = 3
    single_step_panic_threshold: StepThreshold = Field(default_factory=_default_single_threshold,
        description=("largest step allowed at once after start-up: seconds, \"inf\", or { "
                     "forward, backward }; beyond it, [daemon] panic-action"))
    startup_step_panic_threshold: StepThreshold = Field(default_factory=_default_startup_threshold,
        description=("largest step allowed during start-up: seconds, \"inf\", or { forward, "
                     "backward }"))
    # None (or 0 in the file) disables the accumulated limit, as in ntpd-rs.
    accumulated_step_panic_threshold: float | None = Field(
        None, description="largest total of all steps, seconds; unset or 0: no limit")
    local_stratum: Annotated[int, Field(ge=1, le=16,
        description="stratum served while not synchronized (16: unsynchronized)")] = 16
    reference_id: str = Field(
        "XNON", description=("reference id served while not synchronized (1 to 4 ASCII "
                             "characters)"))
    warn_on_jump: bool = Field(
        True, description="log a step of the clock as a warning (true) or as information")
    # 200 ppm: a 10 ms offset (the largest not stepped by default) is gone in 50 s, and
    # it is within what the kernel's frequency alone can do (500 ppm; chrony's 83333 ppm
    # needs the tick, which we do not touch).
    max_slew_rate_ppm: Annotated[float, Field(gt=0.0, le=500.0, allow_inf_nan=False,
        description=("fastest rate at which an offset is slewed away, ppm (like chrony's "
                     "maxslewrate); [synchronization.algorithm] "
                     "slew-maximum-frequency-offset bounds it too, the smaller holds"))] = 200.0
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig,
        description="tuning of the clock algorithm")

    @field_validator("accumulated_step_panic_threshold", mode="before")
    @classmethod
    def _accumulated(cls, value: Any) -> Any:
        if value is None:
            return None
        part = _threshold_part(value, "accumulated-step-panic-threshold")
        return None if part == 0.0 else part

    @field_validator("reference_id")
    @classmethod
    def _refid(cls, value: str) -> str:
        if not 1 <= len(value) <= 4 or not value.isascii() or not value.isprintable():
            raise ValueError('expected 1 to 4 printable ASCII characters, e.g. "GPS"')
        return value


# -- server ---------------------------------------------------------------------------


class FilterList(_Table):
    """An allow or deny list: CIDR networks and what to do with matching clients."""

    # Both keys are mandatory, as in ntpd-rs (`filter = []` is a valid empty list).
    filter: list[str] = Field(
        description="client networks in CIDR notation, e.g. \"192.168.0.0/16\"")
    action: Literal["deny", "ignore"] = Field(
        description="deny: answer with a DENY kiss; ignore: do not answer")

    @field_validator("filter")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            # ntpd-rs wants the prefix length: a bare address would silently mean /32
            # or /128 here, which is seldom what a migrant from chrony's `allow` meant.
            if "/" not in item:
                raise ValueError(
                    f'{item!r} has no prefix length; write "{item}/'
                    f'{128 if ":" in item else 32}" for one address or e.g. "10.0.0.0/8"'
                )
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f'{item!r} is not an IP network such as "10.0.0.0/8"') from None
        return value

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.filter]


def _require_nts(value: object) -> bool | str:
    # One message for the one key (a plain union would report one error per member).
    if isinstance(value, bool) or value in ("deny", "ignore"):
        return value
    raise ValueError('expected true, false, "deny" or "ignore"')


RequireNts = Annotated[bool | Literal["deny", "ignore"], PlainValidator(_require_nts)]


def _default_versions() -> list[Literal[3, 4]]:
    return [3, 4]


class ServerConfig(_Table):
    """`[[server]]`: serve NTP on one address."""

    listen: str = Field(
        description="IP address and port to serve NTP on, e.g. \"0.0.0.0:123\" or \"[::]:123\"")
    rate_limiting_cache_size: Annotated[int, Field(ge=0, le=10_000_000,
        description="clients remembered for rate limiting (0: no rate limiting)")] = 0
    rate_limiting_cutoff_ms: Annotated[int, Field(ge=0,
        description="a client asking again within this many milliseconds is rate limited")] = 0
    allowlist: FilterList | None = Field(
        None, description="only clients in these networks are served; the others get action")
    denylist: FilterList | None = Field(None, description="clients in these networks get action")
    require_nts: RequireNts | None = Field(
        None, description=("NTS-authenticated requests only: true or \"ignore\" drops the "
                           "others, \"deny\" answers them with a DENY kiss (default false)"))
    accept_ntp_versions: list[Literal[3, 4]] = Field(default_factory=_default_versions,
        description="NTP versions answered (NTPv5 is not supported yet)")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_socket_addr(value)
        return value

    @field_validator("accept_ntp_versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        if isinstance(value, list) and 5 in value:
            raise ValueError("NTPv5 (draft) is not supported yet by ntpd-py; use [3, 4]")
        return value

    def socket_addr(self) -> tuple[str, int]:
        return parse_socket_addr(self.listen)


def _default_ke_versions() -> list[Literal[4]]:
    return [4]


class NtsKeServerConfig(_Table):
    """`[[nts-ke-server]]`: serve NTS key exchange (TLS, RFC 8915) on one address."""

    listen: str = Field(
        description="IP address and TCP port to serve NTS-KE on, e.g. \"0.0.0.0:4460\"")
    certificate_chain_path: str = Field(
        description="PEM file: the server certificate, then the intermediates")
    private_key_path: str = Field(
        description="PEM file: the private key of the certificate (read by the supervisor)")
    key_exchange_timeout_ms: Annotated[int, Field(ge=1, le=3_600_000,
        description="a key exchange not finished within this many milliseconds is dropped")] = 1000
    concurrent_connections: Annotated[int, Field(ge=1, le=1_000_000,
        description="key exchanges served at the same time; further clients wait")] = 512
    longlived_connections: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, description=("ntpd-rs's share of connections kept for slow clients (default: "
                           "concurrent-connections / 10)"))
    ntp_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="NTP port named to clients (NTPv4 Port Negotiation; default: 123)")
    ntp_server: str | None = Field(
        None, description=("NTP server named to clients (NTPv4 Server Negotiation; default: "
                           "this one)"))
    accept_ntp_versions: list[Literal[4]] = Field(default_factory=_default_ke_versions,
        description="NTP versions offered in key exchanges (NTPv5 is not supported yet)")
    accepted_pool_authentication_tokens: list[str] = Field(default_factory=list,
        description="ntpd-rs's NTS pool authentication tokens accepted from pool servers")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_socket_addr(value)
        return value

    @field_validator("ntp_server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is not None:
            check_host(value)
        return value

    @field_validator("accept_ntp_versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        if isinstance(value, list) and 5 in value:
            raise ValueError("NTPv5 (draft) is not supported yet by ntpd-py; use [4]")
        return value

    def socket_addr(self) -> tuple[str, int]:
        return parse_socket_addr(self.listen)


class KeysetConfig(_Table):
    """`[keyset]`: the keys that seal NTS cookies, shared by the NTP and NTS-KE servers."""

    stale_key_count: Annotated[int, Field(ge=0, le=1024,
        description="old keys kept to open cookies made before a rotation")] = 7
    key_rotation_interval: Annotated[int, Field(ge=1, le=2**31,
        description="seconds between two new cookie keys")] = 86400
    key_storage_path: str | None = Field(
        None, description=("file keeping the keys across restarts (written atomically; "
                           "created, its directory is not)"))

    @field_validator("key_storage_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("expected an absolute path")
        return value


# -- observability and daemon ------------------------------------------------------------


class ObservabilityConfig(_Table):
    """`[observability]`: logging, the control/observation socket and metrics."""

    log_level: Literal["trace", "debug", "info", "warn", "error"] = Field(
        "info", description=("least severe level logged: trace, debug, info, warn or error "
                             "(ntpd-py run -l overrides it)"))
    log_path: str | None = Field(
        None, description="log to this file instead of stderr (reopened on SIGHUP)")
    log_path_metrics_exporter: str | None = Field(
        None, description=("ntpd-rs's exporter log file; the exporter is built in, its lines "
                           "go to log-path"))
    ansi_colors: bool | None = Field(
        None, description="ntpd-rs's colored log output; ntpd-py logs without colors")
    # Unset: the socket lives at `<runtime-dir>/observe`.
    observation_path: str | None = Field(
        None, description="the control socket ntpctl talks to (unset: <runtime-dir>/observe)")
    # ntpd-rs defaults to 0o666; ntpd-py keeps its control socket to the ntpd-py
    # group unless told otherwise.
    observation_permissions: Annotated[int, Field(ge=0, le=0o777,
        description="mode of the control socket (ntpd-rs: 0o666; ntpd-py: its group only)")] = 0o660
    # Unset: no metrics exporter. ntpd-rs runs its exporter as a separate service
    # that is off unless enabled; ntpd-py starts its `metrics` worker only when this
    # key is set (ntpd-rs's usual value is "127.0.0.1:9975").
    metrics_exporter_listen: str | None = Field(
        None, description=("serve Prometheus/OpenMetrics at http://ADDRESS/metrics, e.g. "
                           "\"127.0.0.1:9975\" (unset: no exporter)"))

    @field_validator("metrics_exporter_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_socket_addr(value)
        return value


class SimulationConfig(_Table):
    """`[daemon.simulation]`: the world `clock = "simulated"` runs in (ntpd-py only).

    True time is this machine's clock at start; the simulated local clock
    starts `initial-offset` seconds ahead of it and runs `initial-frequency-ppm`
    fast; every PTP source reads a simulated PHC that keeps true time plus its
    bias and white noise. NTP sources stay real (loopback servers in tests).
    """

    seed: int = Field(1, description="random seed of the simulated world")
    initial_offset: Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False,
        description="the simulated clock's error at start, seconds (local minus true)")] = 0.05
    initial_frequency_ppm: Annotated[float, Field(ge=-500.0, le=500.0,
        description="the simulated clock's frequency error, ppm")] = 20.0
    phc_noise: Annotated[float, Field(ge=0.0, le=1.0,
        description="white noise of each simulated PHC reading, 1 sigma, seconds")] = 50e-9
    phc_bias: dict[str, Annotated[float, Field(ge=-1e3, le=1e3)]] = Field(default_factory=dict,
        description="a constant error per simulated PHC: device path = seconds")
    phc_read_failure_rate: _Probability = Field(
        0.0, description="probability that a simulated PHC reading fails")
    # A scenario file of `ntpd-py simulate` (deploy/scenarios/): its local clock
    # and its PHCs (matched by path) replace the settings above, so the process
    # tree runs in the same world as the simulator.
    scenario: str | None = Field(
        None, description=("a scenario file of ntpd-py simulate: its local clock and PHCs "
                           "replace the settings above"))


def _seccomp_mode(value: object) -> bool | str:
    # One message for the one key (a plain union would report one error per member).
    if isinstance(value, bool) or value == "log":
        return value
    raise ValueError('expected true, false or "log"')


SeccompMode = Annotated[bool | Literal["log"], PlainValidator(_seccomp_mode)]


class DaemonConfig(_Table):
    """`[daemon]`: settings only ntpd-py has (ntpd-rs does not know this table)."""

    user: str = Field("ntpd-py", description="user clock-control runs as when started as root")
    group: str = Field("ntpd-py", description="group of clock-control and of the control socket")
    runtime_dir: str = Field(
        DEFAULT_RUNTIME_DIR, description=("runtime directory: sockets, the saved state, the "
                                     "simulated clock"))
    state_dir: str = Field("/var/lib/ntpd-py", description="state directory: the drift file")
    # system: steer CLOCK_REALTIME; observe: compute and report, steer nothing;
    # simulated: steer a simulated clock (tests, demos).
    clock: Literal["system", "observe", "simulated"] = Field(
        "system", description=("system: steer the system clock; observe: compute and report, "
                               "never steer (chronyd -x); simulated: steer a simulated clock"))
    simulation: SimulationConfig = Field(default_factory=SimulationConfig,
        description="the simulated world of clock = \"simulated\"")
    # NTP server processes sharing each [[server]] address through SO_REUSEPORT.
    server_processes: Annotated[int, Field(ge=1, le=32,
        description="server processes sharing each [[server]] address (SO_REUSEPORT)")] = 1
    # A step beyond a panic threshold: "exit" with status 70 (as ntpd-rs), or
    # "stop-steering": keep running and reporting, leave the clock alone.
    panic_action: Literal["exit", "stop-steering"] = Field(
        "exit", description=("a step beyond a panic threshold: exit (status 70, as ntpd-rs) or"
                             " stop-steering (keep running and reporting, leave the clock "
                             "alone)"))
    # Each child installs its role's system-call allow-list (plumbing/seccomp_profiles.py):
    # true kills a process that makes any other call; "log" only logs it (the kernel's
    # audit log), to find a missing call without killing; false installs nothing.
    seccomp: SeccompMode = Field(
        True, description=("each child's system-call allow-list: true kills a process making "
                           "any other call; \"log\" only logs it; false installs none"))

    # When the supervisor runs as root, every worker but clock-control runs as its
    # own uid from this range (as systemd's DynamicUser), so that no worker can
    # signal, ptrace or impersonate another. Only uids without a passwd entry are used.
    worker_uid_range: tuple[int, int] = Field(
        (61184, 65519), description=("[first, last]: uids for the workers other than "
                                     "clock-control, one each, when started as root (only uids"
                                     " without a passwd entry are used)"))

    @field_validator("worker_uid_range", mode="before")
    @classmethod
    def _uid_pair(cls, value: Any) -> Any:
        # TOML has arrays, not tuples; the element types are still checked strictly.
        return tuple(value) if isinstance(value, list) else value

    @field_validator("worker_uid_range")
    @classmethod
    def _uid_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if first > last:
            raise ValueError(f"expected [first, last] with first <= last, got [{first}, {last}]")
        if first < 1000:
            raise ValueError(f"the first uid must be at least 1000 (system accounts and root "
                             f"are below), got {first}")
        if last > 4294967294:
            raise ValueError(f"uids end at 4294967294, got {last}")
        return value

    @field_validator("runtime_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute path")
        return value


class Config(_Table):
    """The whole `ntp.toml`."""

    source: list[SourceConfig] = Field(default_factory=list,
        description="time sources")
    source_defaults: SourceDefaultsConfig = Field(default_factory=SourceDefaultsConfig,
        description="defaults of NTP sources")
    synchronization: SynchronizationConfig = Field(default_factory=SynchronizationConfig,
        description="when sources agree and how far the clock may move")
    server: list[ServerConfig] = Field(default_factory=list,
        description="serve NTP")
    nts_ke_server: list[NtsKeServerConfig] = Field(default_factory=list,
        description="serve NTS key exchange")
    keyset: KeysetConfig | None = Field(None,
        description="the NTS cookie keys of the servers")
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig,
        description="logging, the control socket, metrics")
    daemon: DaemonConfig = Field(default_factory=DaemonConfig,
        description="ntpd-py's own settings")

    @model_validator(mode="after")
    def _unique_phc_paths(self) -> Config:
        seen: dict[str, int] = {}
        for index, source in enumerate(self.source):
            if isinstance(source, PtpSourceConfig):
                key = posixpath.normpath(source.path)
                if key in seen:
                    raise ValueError(
                        f"source[{index}].path: duplicate PHC path {source.path!r} "
                        f"(already used by source[{seen[key]}]); each PHC may appear once"
                    )
                seen[key] = index
        return self

    @model_validator(mode="after")
    def _unique_refclock_paths(self) -> Config:
        seen: dict[str, int] = {}
        for index, source in enumerate(self.source):
            if isinstance(source, SockSourceConfig | PpsSourceConfig):
                key = posixpath.normpath(source.path)
                if key in seen:
                    raise ValueError(
                        f"source[{index}].path: {source.path!r} is already used by "
                        f"source[{seen[key]}]; each socket or PPS device may appear once")
                seen[key] = index
        return self

    @model_validator(mode="after")
    def _unwired_modes(self) -> Config:
        for index, source in enumerate(self.source):
            if source.mode in UNWIRED_MODES:
                raise ValueError(
                    f'source[{index}].mode: mode = "{source.mode}" is not supported yet by '
                    "ntpd-py (its keys are valid; the source itself is not implemented yet)")
        return self

    @model_validator(mode="after")
    def _source_poll_limits(self) -> Config:
        defaults = self.source_defaults.poll_interval_limits
        for index, source in enumerate(self.source):
            own = getattr(source, "poll_interval_limits", None)
            if not isinstance(own, PartialPollIntervalLimits):
                continue
            low = defaults.min if own.min is None else own.min
            high = defaults.max if own.max is None else own.max
            if low > high:
                raise ValueError(
                    f"source[{index}].poll-interval-limits: min ({low}) must not be greater "
                    f"than max ({high}); a side left out comes from [source-defaults]"
                )
        return self

    def ptp_sources(self) -> list[PtpSourceConfig]:
        return [s for s in self.source if isinstance(s, PtpSourceConfig)]

    def potential_source_count(self) -> int:
        """How many sources could take part in the vote (a pool counts `count`)."""
        total = 0
        for source in self.source:
            if isinstance(source, PpsSourceConfig):
                continue  # a pulse has no whole seconds: it cannot vote (as in ntpd-rs)
            if isinstance(source, PoolSourceConfig | NtsPoolSourceConfig):
                total += source.count
            else:
                total += 1
        return total

    def control_socket_path(self) -> str:
        return control_socket_path(self.observability.observation_path, self.daemon.runtime_dir)

    def ignored_keys(self) -> list[str]:
        """ntpd-rs keys that are set here and that ntpd-py accepts but does not act on."""
        notes: list[str] = []
        obs = self.observability
        if obs.ansi_colors:
            notes.append("[observability] ansi-colors = true is ignored: ntpd-py never "
                         "colors its log lines")
        if obs.log_path_metrics_exporter is not None:
            notes.append(
                f'[observability] log-path-metrics-exporter = "{obs.log_path_metrics_exporter}" '
                "is ignored: the metrics exporter is a process of ntpd-py and logs with the "
                "others (to log-path, or stderr)"
            )
        algorithm = self.synchronization.algorithm
        for name in sorted(algorithm.model_fields_set & _UNUSED_ALGORITHM_KEYS):
            key = name.replace("_", "-")
            notes.append(
                f"[synchronization.algorithm] {key} = {getattr(algorithm, name)!r} is ignored: "
                "ntpd-rs's precision estimate and steering rule have no counterpart in "
                "ntpd-py's clock algorithm"
            )
        for index, source in enumerate(self.source):
            if isinstance(source, ServerSourceConfig | PoolSourceConfig) and (
                source.ntp_version == "auto"
            ):
                notes.append(
                    f'source[{index}].ntp-version = "auto" is partly ignored: ntpd-py speaks '
                    "NTPv4 only and never offers the NTPv5 draft upgrade, so the source uses "
                    "NTPv4 (as ntpd-rs's auto does with a server that does not upgrade)"
                )
            if isinstance(source, _NtsSourceBase) and source.enable_srv_resolution:
                notes.append(
                    f"source[{index}].enable-srv-resolution = true is ignored: ntpd-py looks "
                    f"up no SRV records; the key exchange goes to {source.address!r} as given"
                )
        return notes

    def warnings(self) -> list[str]:
        """Problems that do not stop the daemon but that a user should know about."""
        notes: list[str] = self.ignored_keys()
        for index, source in enumerate(self.source):
            if isinstance(source, PoolSourceConfig) and source.count > 64:
                notes.append(
                    f"source[{index}].count = {source.count}: each pool server is one "
                    "worker process; more than 64 costs memory for little gain"
                )
        needed = self.synchronization.minimum_agreeing_sources
        phcs = len(self.ptp_sources())
        if not self.source:
            notes.append("no [[source]] is configured: the clock will not be steered")
        elif phcs == len(self.source) and needed > phcs:
            notes.append(
                f"PTP-only configuration with {phcs} PHC(s) but [synchronization] "
                f"minimum-agreeing-sources = {needed}: the clock will never be steered; "
                f"set minimum-agreeing-sources = {phcs} (or add NTP sources)"
            )
        elif self.potential_source_count() < needed:
            notes.append(
                f"only {self.potential_source_count()} potential source(s) but [synchronization] "
                f"minimum-agreeing-sources = {needed}: the clock will never be steered; "
                "lower minimum-agreeing-sources or add sources"
            )
        return notes
