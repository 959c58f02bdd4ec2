"""Every message that crosses a process boundary, one pydantic model per type.

Like OpenBSD ntpd's `imsg_type`, :class:`MsgType` lists all of them in one
place and :data:`REGISTRY` ties each type to its model. Models are strict
(no coercion), reject unknown fields and are frozen: a message that validates
is one the receiver can act on. Framing (msgpack, schema version, size limits)
is :mod:`ntpd_py.ipc.framing`.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, ClassVar, Literal

from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Wire forms of the core enums: plain values, converted at the boundary.
Kind = Literal["ntp", "ptp", "sock", "pps"]  # core.events.SourceKind
Leap = Literal[0, 1, 2, 3]
SourceStateName = Literal["starting", "running", "rejecting", "waiting", "unreachable", "failed"]
ClockBackendName = Literal["system", "observe", "simulated"]
LogLevelName = Literal["trace", "debug", "info", "warn", "error"]

__all__ = [
    "HEARTBEAT_INTERVAL_NS",
    "REGISTRY",
    "SCHEMA_VERSION",
    "BusSlot",
    "ClockBackendName",
    "ClockStateMsg",
    "CtlReply",
    "CtlRequest",
    "DeviceReply",
    "DeviceRequest",
    "Heartbeat",
    "LogControl",
    "LogLevelName",
    "Message",
    "MsgType",
    "PeerFailReason",
    "PeerFailed",
    "PollAdvice",
    "ProcessInfo",
    "ProcessTable",
    "SampleMsg",
    "ServerAdvice",
    "ServerStats",
    "SourceEntry",
    "SourceSet",
    "SourceStateName",
    "SourceStatus",
    "SourceView",
    "SteeringBounds",
    "SystemView",
    "Unreachable",
]

SCHEMA_VERSION = 1

Id = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=4096)]
Counters = Annotated[dict[Annotated[str, Field(max_length=64)], int], Field(max_length=64)]
# Finite but absurd values are refused here, at the boundary: no NTP or PTP path has a
# delay, dispersion or uncertainty above 16 s (NTP's MAXDISP), and poll exponents beyond
# these bounds are not intervals any configuration allows (ntpd-rs: 2^-8 s .. 2^17 s).
MAX_SECONDS = 16.0
POLL_MIN_LOG2 = -8
POLL_MAX_LOG2 = 17
Seconds = Annotated[float, Field(ge=0.0, le=MAX_SECONDS, allow_inf_nan=False)]
PollLog2 = Annotated[int, Field(ge=POLL_MIN_LOG2, le=POLL_MAX_LOG2)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class MsgType(enum.IntEnum):
    SAMPLE = 1
    SOURCE_STATUS = 2
    UNREACHABLE = 3
    SERVER_STATS = 4
    POLL_ADVICE = 5
    CLOCK_STATE = 6
    HEARTBEAT = 7
    PROCESS_TABLE = 8
    DEVICE_REQUEST = 9
    DEVICE_REPLY = 10
    CTL_REQUEST = 11
    CTL_REPLY = 12
    SOURCE_SET = 13
    PEER_FAILED = 14
    LOG_CONTROL = 15
    STEERING_BOUNDS = 16
    NTS_KEYSET = 17
    SERVER_ADVICE = 18


class Message(BaseModel):
    """Base of all messages: strict, closed, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    TYPE: ClassVar[MsgType]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


# -- source workers -> clock-control ------------------------------------------------------


class SampleMsg(Message):
    """One timestamp sample (see :class:`ntpd_py.core.events.Sample`)."""

    TYPE: ClassVar[MsgType] = MsgType.SAMPLE
    source_id: Id
    kind: Kind
    offset_s: FiniteFloat
    delay_s: Seconds
    uncertainty_s: Seconds
    root_delay_s: Seconds
    root_dispersion_s: Seconds
    stratum: Annotated[int, Field(ge=0, le=16)]
    leap: Leap
    reference_id: Annotated[int, Field(ge=0, lt=2**32)]
    mono_ns: Annotated[int, Field(ge=0, lt=2**63)]
    realtime_ns: Annotated[int, Field(gt=-(2**63), lt=2**63)]
    poll_log2: PollLog2

    _check_finite = field_validator(
        "offset_s", "delay_s", "uncertainty_s", "root_delay_s", "root_dispersion_s"
    )(_finite)

    @classmethod
    def from_sample(cls, sample: Sample) -> SampleMsg:
        fields = {name: getattr(sample, name) for name in cls.model_fields}
        fields["kind"] = sample.kind.value
        fields["leap"] = int(sample.leap)
        return cls(**fields)

    def to_sample(self) -> Sample:
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        fields["kind"] = SourceKind(self.kind)
        fields["leap"] = LeapIndicator(self.leap)
        return Sample(**fields)


class SourceStatus(Message):
    """What a source worker reports about itself, for `ntpctl status`."""

    TYPE: ClassVar[MsgType] = MsgType.SOURCE_STATUS
    source_id: Id
    kind: Kind
    name: Text  # the configured path or address
    resolved: Text | None = None  # /dev/ptp0 for a symlink, the IP for a host name
    state: SourceStateName
    detail: Text = ""
    method: Text | None = None  # PHC read method in use
    last_window_s: Seconds | None = None  # PHC reading window of the last sample
    poll_log2: PollLog2
    reach: Annotated[int, Field(ge=0, le=255)] = 0
    counters: Counters = Field(default_factory=dict)
    nts: bool = False  # an NTS source (RFC 8915)
    authenticated: Annotated[int, Field(ge=0)] = 0  # NTS replies that passed authentication
    cookies: Annotated[int, Field(ge=0)] | None = None  # NTS cookies left in the jar


class Unreachable(Message):
    TYPE: ClassVar[MsgType] = MsgType.UNREACHABLE
    source_id: Id
    reason: Text = ""


class ServerStats(Message):
    """Counters of one server worker (names as ntpd-rs's metrics)."""

    TYPE: ClassVar[MsgType] = MsgType.SERVER_STATS
    listen: Text
    counters: Counters


# -- clock-control -> workers ----------------------------------------------------------------


class PollAdvice(Message):
    TYPE: ClassVar[MsgType] = MsgType.POLL_ADVICE
    source_id: Id
    poll_log2: PollLog2


class ServerAdvice(Message):
    """To an nts-pool member: its NTP server is counted already, make a new key exchange."""

    TYPE: ClassVar[MsgType] = MsgType.SERVER_ADVICE
    source_id: Id
    reason: Text = ""


class SystemView(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    synchronized: bool
    clock_backend: ClockBackendName
    offset_s: float | None  # None until there is an estimate
    offset_uncertainty_s: float | None
    frequency_ppm: float
    frequency_uncertainty_ppm: float
    stratum: Annotated[int, Field(ge=0, le=16)]
    reference_id: Annotated[int, Field(ge=0, lt=2**32)]
    root_delay_s: float
    root_dispersion_s: float
    leap: Leap
    precision_log2: Annotated[int, Field(ge=-64, le=0)]
    steps: Annotated[int, Field(ge=0)]
    accumulated_steps_s: float
    last_update_age_s: float | None
    reference_time_ns: int | None  # local realtime of the last clock update
    steering_stopped: Text = ""  # why, after a refused step with panic-action = stop-steering


class SourceView(BaseModel):
    """The algorithm's view of a source merged with its worker's own status."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    source_id: Id
    kind: Kind
    name: Text
    resolved: Text | None
    state: Annotated[str, Field(max_length=1)]  # chrony's * + - x ~ ?
    worker_state: Text
    detail: Text
    offset_s: float | None
    uncertainty_s: float | None
    delay_s: float | None
    last_offset_s: float | None
    poll_log2: int
    reach: int
    samples: int
    last_sample_age_s: float | None
    stratum: int
    reference_id: int
    root_delay_s: float | None
    root_dispersion_s: float | None
    method: Text | None
    last_window_s: float | None
    counters: Counters
    ipc_dropped: int = 0
    nts: bool = False
    authenticated: int = 0  # NTS replies that passed authentication
    cookies: int | None = None  # NTS cookies left (None: not an NTS source)


class ClockStateMsg(Message):
    """Published by clock-control on every update (server worker, `ntpctl watch`)."""

    TYPE: ClassVar[MsgType] = MsgType.CLOCK_STATE
    mono_ns: int
    realtime_ns: int
    system: SystemView
    sources: Annotated[list[SourceView], Field(max_length=1024)]


# -- supervisor <-> children -----------------------------------------------------------------


# How often every child heartbeats the supervisor (the supervisor gives up on a child
# after several missed ones: policy.HEARTBEAT_TIMEOUT_NS).
HEARTBEAT_INTERVAL_NS = 5_000_000_000


class Heartbeat(Message):
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    worker_id: Id
    mono_ns: int
    # clock-control only: a one-line sync summary (systemd's STATUS=); "" from others.
    status: Annotated[str, Field(max_length=256)] = ""


class ProcessInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    worker_id: Id
    role: Literal["supervisor", "clock-control", "ptp", "ntp", "server", "metrics", "sock",
                  "pps", "nts-ke"]
    pid: int | None
    user: Text
    state: Text
    uptime_s: float | None
    restarts: Annotated[int, Field(ge=0)]
    rss_bytes: int | None
    cpu_percent: float | None
    last_exit: Text = ""
    cpu_seconds: float | None = None  # user + system CPU time of the running process
    link_malformed: Annotated[int, Field(ge=0)] = 0  # bad frames on its supervisor link
    link_dropped: Annotated[int, Field(ge=0)] = 0  # frames beyond its link's rate cap


class ProcessTable(Message):
    TYPE: ClassVar[MsgType] = MsgType.PROCESS_TABLE
    processes: Annotated[list[ProcessInfo], Field(max_length=1024)]


class SourceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    source_id: Id
    kind: Kind
    name: Text
    poll_log2: PollLog2
    poll_min: PollLog2
    poll_max: PollLog2


class BusSlot(BaseModel):
    """One worker's private bus endpoint: frames on it come from `worker_id`, by construction."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    worker_id: Id
    role: Literal["ptp", "ntp", "server", "sock", "pps", "nts-ke"]
    path: Text


class SourceSet(Message):
    """The configured sources, sent by the supervisor to clock-control at start and reload.

    `slots` lists every worker's bus endpoint; the listening sockets of the slots
    named in `fd_slots` come with the message (SCM_RIGHTS, in that order).
    """

    TYPE: ClassVar[MsgType] = MsgType.SOURCE_SET
    sources: Annotated[list[SourceEntry], Field(max_length=1024)]
    # The server workers that exist (`server`, or `server#1`..`server#N`) and the
    # configured `listen` values: clock-control takes ServerStats only from those.
    server_workers: Annotated[list[Id], Field(max_length=32)] = Field(default_factory=list)
    server_listens: Annotated[list[Text], Field(max_length=64)] = Field(default_factory=list)
    slots: Annotated[list[BusSlot], Field(max_length=1100)] = Field(default_factory=list)
    fd_slots: Annotated[list[Id], Field(max_length=4)] = Field(default_factory=list)


PeerFailReason = Literal["unreachable", "falseticker", "denied"]


class PeerFailed(Message):
    """A pool member should be replaced (from its NTP worker, or clock-control's verdict)."""

    TYPE: ClassVar[MsgType] = MsgType.PEER_FAILED
    worker_id: Id
    reason: PeerFailReason


class LogControl(Message):
    """Supervisor -> every child (on SIGHUP): log at `level`; the new log fd rides along.

    With an fd (SCM_RIGHTS) the child makes it its stderr (dup2 onto 2): the
    supervisor, still root, reopened `log-path` after a rotation, so children
    never need permission on the log file or its directory.
    """

    TYPE: ClassVar[MsgType] = MsgType.LOG_CONTROL
    level: LogLevelName
    timestamps: bool = True


class SteeringBounds(Message):
    """Clock-control -> supervisor, whenever they change: what limits its steps.

    The supervisor (root, trusted) keeps the latest and hands it to a restarted
    clock-control, which takes the more restrictive of it and its saved state:
    neither a restart nor a rewritten state file can reset these.
    """

    TYPE: ClassVar[MsgType] = MsgType.STEERING_BOUNDS
    steps: Annotated[int, Field(ge=0, le=1_000_000_000)]
    accumulated_steps_s: Annotated[float, Field(ge=0.0, le=1e12)]
    startup_over: bool

    _check_finite = field_validator("accumulated_steps_s")(_finite)


class DeviceRequest(Message):
    """A PTP worker asks the supervisor to (re)open its configured device."""

    TYPE: ClassVar[MsgType] = MsgType.DEVICE_REQUEST
    worker_id: Id


class DeviceReply(Message):
    """Answer to DeviceRequest; on success the fd travels alongside (SCM_RIGHTS)."""

    TYPE: ClassVar[MsgType] = MsgType.DEVICE_REPLY
    ok: bool
    errno: int = 0
    message: Text = ""
    resolved: Text | None = None


# The keyset's storage format (ServerKeySet.to_bytes) with the most keys a configuration
# allows (stale-key-count <= 1024): ~80 KiB; a frame beyond this is not a keyset.
MAX_KEYSET_BYTES = 1 << 17


class NtsKeyset(Message):
    """Supervisor -> each NTP server and NTS-KE worker, when the cookie keys rotate.

    The supervisor owns the keyset (it alone reads and writes `key-storage-path`); a
    worker gets the current one at fork and every rotation over its own link, so every
    server process opens the cookies every other one made. The bytes are
    ServerKeySet.to_bytes(), parsed strictly by the worker.
    """

    TYPE: ClassVar[MsgType] = MsgType.NTS_KEYSET
    keyset: Annotated[bytes, Field(min_length=1, max_length=MAX_KEYSET_BYTES)]


# -- ntpctl <-> clock-control ------------------------------------------------------------------


class CtlRequest(Message):
    TYPE: ClassVar[MsgType] = MsgType.CTL_REQUEST
    command: Literal["status", "sources", "workers"]


class CtlReply(Message):
    TYPE: ClassVar[MsgType] = MsgType.CTL_REPLY
    ok: bool
    error: Text = ""
    clock: ClockStateMsg | None = None
    processes: Annotated[list[ProcessInfo], Field(max_length=1024)] = Field(default_factory=list)
    ipc: Counters = Field(default_factory=dict)
    # Counters of each [[server]] listener (ServerStats.counters), keyed by listen address.
    servers: Annotated[dict[Text, Counters], Field(max_length=64)] = Field(default_factory=dict)


REGISTRY: dict[MsgType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        SampleMsg,
        SourceStatus,
        Unreachable,
        ServerStats,
        PollAdvice,
        ClockStateMsg,
        Heartbeat,
        ProcessTable,
        DeviceRequest,
        DeviceReply,
        CtlRequest,
        CtlReply,
        SourceSet,
        PeerFailed,
        LogControl,
        SteeringBounds,
        NtsKeyset,
        ServerAdvice,
    )
}
