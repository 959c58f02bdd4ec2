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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from .config_paths import DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR, control_socket_path

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AlgorithmConfig",
    "Config",
    "DaemonConfig",
    "FilterList",
    "NtsPoolSourceConfig",
    "NtsSourceConfig",
    "ObservabilityConfig",
    "PollIntervalLimits",
    "PoolSourceConfig",
    "PtpSourceConfig",
    "ServerConfig",
    "ServerSourceConfig",
    "SimulationConfig",
    "SourceConfig",
    "SourceDefaultsConfig",
    "StepThreshold",
    "SynchronizationConfig",
    "parse_host_port",
    "parse_socket_addr",
]

NTP_PORT = 123
NTS_KE_PORT = 4460
# chrony accepts minpoll down to -6 (LAN use); RFC 5905's MAXPOLL is 17.
POLL_LOG2_MIN = -6
POLL_LOG2_MAX = 17


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
    ``{ forward = …, backward = … }`` whose parts are numbers or ``"inf"``.
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
            missing = {"forward", "backward"} - set(value)
            if missing:
                raise ValueError(f"missing {sorted(missing)}; give both forward and backward")
            return {
                "forward": _threshold_part(value["forward"], "forward"),
                "backward": _threshold_part(value["backward"], "backward"),
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

    min: Annotated[int, Field(ge=POLL_LOG2_MIN, le=POLL_LOG2_MAX)]
    max: Annotated[int, Field(ge=POLL_LOG2_MIN, le=POLL_LOG2_MAX)]

    @model_validator(mode="after")
    def _ordered(self) -> PollIntervalLimits:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be greater than max ({self.max})")
        return self


def _default_poll_limits() -> PollIntervalLimits:
    return PollIntervalLimits(min=4, max=10)


class SourceDefaultsConfig(_Table):
    """`[source-defaults]`: poll settings inherited by NTP sources."""

    poll_interval_limits: PollIntervalLimits = Field(default_factory=_default_poll_limits)
    initial_poll_interval: Annotated[int, Field(ge=POLL_LOG2_MIN, le=POLL_LOG2_MAX)] = 4

    @model_validator(mode="after")
    def _initial_within_limits(self) -> SourceDefaultsConfig:
        lim = self.poll_interval_limits
        if not lim.min <= self.initial_poll_interval <= lim.max:
            raise ValueError(
                f"initial-poll-interval {self.initial_poll_interval} is outside "
                f"poll-interval-limits {lim.min}..{lim.max}"
            )
        return self


class _NtpSourceBase(_Table):
    address: str
    ntp_version: Literal[4, "auto"] = 4
    poll_interval_limits: PollIntervalLimits | None = None
    initial_poll_interval: Annotated[int, Field(ge=POLL_LOG2_MIN, le=POLL_LOG2_MAX)] | None = None

    @field_validator("address")
    @classmethod
    def _address_parses(cls, value: str) -> str:
        parse_host_port(value, NTP_PORT)
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
        return self.poll_interval_limits or defaults.poll_interval_limits

    def initial_poll(self, defaults: SourceDefaultsConfig) -> int:
        lim = self.poll_limits(defaults)
        initial = self.initial_poll_interval
        if initial is None:
            initial = defaults.initial_poll_interval
        return min(max(initial, lim.min), lim.max)


class ServerSourceConfig(_NtpSourceBase):
    """`mode = "server"`: one NTP server."""

    mode: Literal["server"]


class PoolSourceConfig(_NtpSourceBase):
    """`mode = "pool"`: up to `count` servers resolved from one name."""

    mode: Literal["pool"]
    count: Annotated[int, Field(ge=1, le=64)] = 4
    ignore: list[str] = Field(default_factory=list)

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

    mode: Literal["ptp"]
    path: str
    delay: Annotated[float, Field(ge=0.0, lt=16.0)] = 0.0
    interval: Annotated[int, Field(ge=-7, le=17)] = 0
    precision: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-9
    stratum: Annotated[int, Field(ge=0, le=15)] = 0

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('expected an absolute path to a PTP device, e.g. "/dev/ptp0"')
        return value

    @property
    def interval_s(self) -> float:
        return 2.0**self.interval


class _UnsupportedSource(BaseModel):
    """A source mode ntpd-rs knows that ntpd-py does not implement yet."""

    model_config = ConfigDict(extra="allow", frozen=True)
    mode: str

    @model_validator(mode="after")
    def _refuse(self) -> _UnsupportedSource:
        hint = {
            "nts": 'NTS lands in a later release; use mode = "server" meanwhile',
            "nts-pool": 'NTS lands in a later release; use mode = "pool" meanwhile',
            "sock": 'use a PHC (mode = "ptp") or an NTP source',
            "pps": 'use a PHC (mode = "ptp") or an NTP source',
        }[self.mode]
        raise ValueError(f'mode = "{self.mode}" is not supported yet by ntpd-py ({hint})')


class NtsSourceConfig(_UnsupportedSource):
    mode: Literal["nts"]


class NtsPoolSourceConfig(_UnsupportedSource):
    mode: Literal["nts-pool"]


class _SockSourceConfig(_UnsupportedSource):
    mode: Literal["sock"]


class _PpsSourceConfig(_UnsupportedSource):
    mode: Literal["pps"]


SourceConfig = Annotated[
    ServerSourceConfig
    | PoolSourceConfig
    | PtpSourceConfig
    | NtsSourceConfig
    | NtsPoolSourceConfig
    | _SockSourceConfig
    | _PpsSourceConfig,
    Field(discriminator="mode"),
]
SUPPORTED_MODES = ("server", "pool", "ptp")


# -- synchronization --------------------------------------------------------------------

_Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class AlgorithmConfig(_Table):
    """`[synchronization.algorithm]`: tuning of the clock algorithm (ntpd-rs names)."""

    precision_low_probability: _Probability = 1.0 / 3.0
    precision_high_probability: _Probability = 2.0 / 3.0
    precision_hysteresis: Annotated[int, Field(ge=1)] = 16
    precision_minimum_weight: _Probability = 0.1
    poll_interval_low_weight: _Probability = 0.4
    poll_interval_high_weight: _Probability = 0.6
    poll_interval_hysteresis: Annotated[int, Field(ge=1)] = 16
    poll_interval_step_threshold: _Positive = 1e-6
    delay_outlier_threshold: _Positive = 5.0
    initial_wander: _Positive = 1e-8
    initial_frequency_uncertainty: _Positive = 100e-6
    maximum_source_uncertainty: _Positive = 0.25
    range_statistical_weight: _NonNegative = 2.0
    # delay/2 bounds the error any path asymmetry can cause (RFC 5905 root distance);
    # ntpd-rs uses 0.25, which lets one asymmetric NTP path disagree with a PHC.
    range_delay_weight: _NonNegative = 0.5
    steer_offset_threshold: _NonNegative = 2.0
    steer_offset_leftover: _NonNegative = 1.0
    steer_frequency_threshold: _NonNegative = 0.0
    steer_frequency_leftover: _NonNegative = 0.0
    step_threshold: _Positive = 0.010
    slew_maximum_frequency_offset: Annotated[float, Field(gt=0.0, le=500e-6)] = 200e-6
    slew_minimum_duration: _Positive = 8.0
    maximum_frequency_steer: Annotated[float, Field(gt=0.0, le=500e-6)] = 495e-6
    ignore_server_dispersion: bool = False
    meddling_threshold: _Positive = 5.0

    @model_validator(mode="after")
    def _ordered(self) -> AlgorithmConfig:
        if self.precision_low_probability > self.precision_high_probability:
            raise ValueError("precision-low-probability must not exceed precision-high-probability")
        if self.poll_interval_low_weight > self.poll_interval_high_weight:
            raise ValueError("poll-interval-low-weight must not exceed poll-interval-high-weight")
        return self


class SynchronizationConfig(_Table):
    """`[synchronization]`: when sources agree and how far the clock may be moved."""

    minimum_agreeing_sources: Annotated[int, Field(ge=1)] = 3
    single_step_panic_threshold: StepThreshold = Field(default_factory=_default_single_threshold)
    startup_step_panic_threshold: StepThreshold = Field(default_factory=_default_startup_threshold)
    # None (or 0 in the file) disables the accumulated limit, as in ntpd-rs.
    accumulated_step_panic_threshold: float | None = None
    local_stratum: Annotated[int, Field(ge=1, le=16)] = 16
    reference_id: str = "XNON"
    warn_on_jump: bool = True
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)

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

    filter: list[str] = Field(default_factory=list)
    action: Literal["deny", "ignore"]

    @field_validator("filter")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f'{item!r} is not an IP network such as "10.0.0.0/8"') from None
        return value

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.filter]


def _default_versions() -> list[Literal[3, 4]]:
    return [3, 4]


class ServerConfig(_Table):
    """`[[server]]`: serve NTP on one address."""

    listen: str
    rate_limiting_cache_size: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    rate_limiting_cutoff_ms: Annotated[int, Field(ge=0)] = 0
    allowlist: FilterList | None = None
    denylist: FilterList | None = None
    require_nts: Literal[False] | None = None
    accept_ntp_versions: list[Literal[3, 4]] = Field(default_factory=_default_versions)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_socket_addr(value)
        return value

    @field_validator("require_nts", mode="before")
    @classmethod
    def _nts(cls, value: Any) -> Any:
        if value not in (False, None):
            raise ValueError("NTS is not supported yet by ntpd-py; remove require-nts")
        return value

    @field_validator("accept_ntp_versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        if isinstance(value, list) and 5 in value:
            raise ValueError("NTPv5 (draft) is not supported yet by ntpd-py; use [3, 4]")
        return value

    def socket_addr(self) -> tuple[str, int]:
        return parse_socket_addr(self.listen)


# -- observability and daemon ------------------------------------------------------------


class ObservabilityConfig(_Table):
    """`[observability]`: logging, the control/observation socket and metrics."""

    log_level: Literal["trace", "debug", "info", "warn", "error"] = "info"
    log_path: str | None = None
    log_path_metrics_exporter: str | None = None
    ansi_colors: bool | None = None
    # Unset: the socket lives at `<runtime-dir>/observe`.
    observation_path: str | None = None
    # ntpd-rs defaults to 0o666; ntpd-py keeps its control socket to the ntpd-py
    # group unless told otherwise.
    observation_permissions: Annotated[int, Field(ge=0, le=0o777)] = 0o660
    # Unset: no metrics exporter. ntpd-rs runs its exporter as a separate service
    # that is off unless enabled; ntpd-py starts its `metrics` worker only when this
    # key is set (ntpd-rs's usual value is "127.0.0.1:9975").
    metrics_exporter_listen: str | None = None

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

    seed: int = 1
    initial_offset: Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)] = 0.05
    initial_frequency_ppm: Annotated[float, Field(ge=-500.0, le=500.0)] = 20.0
    phc_noise: Annotated[float, Field(ge=0.0, le=1.0)] = 50e-9
    phc_bias: dict[str, Annotated[float, Field(ge=-1e3, le=1e3)]] = Field(default_factory=dict)
    phc_read_failure_rate: _Probability = 0.0
    # A scenario file of `ntpd-py simulate` (deploy/scenarios/): its local clock
    # and its PHCs (matched by path) replace the settings above, so the process
    # tree runs in the same world as the simulator.
    scenario: str | None = None


def _seccomp_mode(value: object) -> bool | str:
    # One message for the one key (a plain union would report one error per member).
    if isinstance(value, bool) or value == "log":
        return value
    raise ValueError('expected true, false or "log"')


SeccompMode = Annotated[bool | Literal["log"], PlainValidator(_seccomp_mode)]


class DaemonConfig(_Table):
    """`[daemon]`: settings only ntpd-py has (ntpd-rs does not know this table)."""

    user: str = "ntpd-py"
    group: str = "ntpd-py"
    runtime_dir: str = DEFAULT_RUNTIME_DIR
    state_dir: str = "/var/lib/ntpd-py"
    # system: steer CLOCK_REALTIME; observe: compute and report, steer nothing;
    # simulated: steer a simulated clock (tests, demos).
    clock: Literal["system", "observe", "simulated"] = "system"
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    # NTP server processes sharing each [[server]] address through SO_REUSEPORT.
    server_processes: Annotated[int, Field(ge=1, le=32)] = 1
    # A step beyond a panic threshold: "exit" with status 70 (as ntpd-rs), or
    # "stop-steering": keep running and reporting, leave the clock alone.
    panic_action: Literal["exit", "stop-steering"] = "exit"
    # Each child installs its role's system-call allow-list (workers/seccomp_profiles.py):
    # true kills a process that makes any other call; "log" only logs it (the kernel's
    # audit log), to find a missing call without killing; false installs nothing.
    seccomp: SeccompMode = True

    # When the supervisor runs as root, every worker but clock-control runs as its
    # own uid from this range (as systemd's DynamicUser), so that no worker can
    # signal, ptrace or impersonate another. Only uids without a passwd entry are used.
    worker_uid_range: tuple[int, int] = (61184, 65519)

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

    source: list[SourceConfig] = Field(default_factory=list)
    source_defaults: SourceDefaultsConfig = Field(default_factory=SourceDefaultsConfig)
    synchronization: SynchronizationConfig = Field(default_factory=SynchronizationConfig)
    server: list[ServerConfig] = Field(default_factory=list)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)

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

    def ptp_sources(self) -> list[PtpSourceConfig]:
        return [s for s in self.source if isinstance(s, PtpSourceConfig)]

    def potential_source_count(self) -> int:
        """How many sources could take part in the vote (a pool counts `count`)."""
        total = 0
        for source in self.source:
            total += source.count if isinstance(source, PoolSourceConfig) else 1
        return total

    def control_socket_path(self) -> str:
        return control_socket_path(self.observability.observation_path, self.daemon.runtime_dir)

    def warnings(self) -> list[str]:
        """Problems that do not stop the daemon but that a user should know about."""
        notes: list[str] = []
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
