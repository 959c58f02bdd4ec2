"""What flows in and out of the PHC source state machine (core/ptp_source.py).

Actions are what the worker must do (open the device, read it, publish a
sample, wake up at a deadline, report a status change); events are what it
reports back. workers/_phc.py turns each device action into exactly one event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .phc import PhcCaps, PreciseReading, Reading, ReadMethod
from .source_actions import Publish, SetTimer

__all__ = [
    "CloseDevice",
    "DeviceErrorKind",
    "DeviceFailed",
    "DeviceOpened",
    "OpenDevice",
    "PtpAction",
    "PtpEvent",
    "PtpSourceState",
    "PtpStatus",
    "Publish",
    "ReadDevice",
    "ReadingsRead",
    "Report",
    "SetTimer",
]


class DeviceErrorKind(enum.StrEnum):
    """Why a device operation failed, as the source state machine needs to know it."""

    MISSING = "missing"  # ENOENT: the path does not exist (yet)
    NOT_PTP = "not-ptp"  # ENOTTY, or not a character device: never a PHC
    PERMISSION = "permission"  # EACCES/EPERM
    VANISHED = "vanished"  # ENODEV/ENXIO: the device went away under an open fd
    UNSUPPORTED = "unsupported"  # EOPNOTSUPP (or EINVAL) for one read method
    BUSY = "busy"  # EBUSY/EAGAIN: rate limited or momentarily busy
    IO = "io"  # anything else the driver returned (EIO, ESTALE, ETIMEDOUT, ...)
    NONSENSE = "nonsense"  # the result buffer cannot be decoded (e.g. nsec >= 10^9)


class PtpSourceState(enum.StrEnum):
    """Where one PHC source is (shown by ntpctl status)."""

    STARTING = "starting"
    WAITING = "waiting"  # the path is missing; retried with backoff
    RUNNING = "running"
    REJECTING = "rejecting"  # open and read, but every recent poll was rejected (see message)
    UNREACHABLE = "unreachable"  # the device vanished or keeps failing; reopened with backoff
    FAILED = "failed"  # not a PHC (permanent) or permission denied (retried slowly)


# --- actions (source -> worker) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenDevice:
    """Open the configured path read-only and read its capabilities (PTP_CLOCK_GETCAPS)."""


@dataclass(frozen=True, slots=True)
class CloseDevice:
    """Close the device fd (before reopening it)."""


@dataclass(frozen=True, slots=True)
class ReadDevice:
    """Take ``count`` readings with ``method`` (PRECISE always takes one)."""

    method: ReadMethod
    count: int


@dataclass(frozen=True, slots=True)
class Report:
    """The status changed in a way worth one log line (``status.message``)."""

    status: PtpStatus


PtpAction = OpenDevice | CloseDevice | ReadDevice | Publish | SetTimer | Report


# --- events (worker -> source) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceOpened:
    caps: PhcCaps
    resolved_path: str  # e.g. /dev/ptp0 for /dev/ptp_kvm
    device_index: int | None  # N of /dev/ptpN when known
    clock_name: str = ""  # /sys/class/ptp/ptpN/clock_name (e.g. "ptp_kvm", "igb")


@dataclass(frozen=True, slots=True)
class DeviceFailed:
    kind: DeviceErrorKind
    message: str  # human-readable, names the path (and the user for PERMISSION)
    errno: int = 0


@dataclass(frozen=True, slots=True)
class ReadingsRead:
    """Result of ReadDevice: the readings, plus a CLOCK_MONOTONIC/CLOCK_REALTIME pair taken
    together right after the ioctl (to place the sample on the monotonic clock)."""

    method: ReadMethod
    readings: tuple[Reading, ...] | PreciseReading
    mono_ns: int
    realtime_ns: int


PtpEvent = DeviceOpened | DeviceFailed | ReadingsRead


@dataclass(frozen=True, slots=True)
class PtpStatus:
    """A copy of one PHC source's state for ntpctl status / --json and log lines."""

    source_id: str
    path: str
    state: PtpSourceState
    message: str  # why the source is in this state (human-readable)
    resolved_path: str | None
    clock_name: str
    method: ReadMethod | None
    readings_per_sample: int
    poll_log2: int  # the interval in force (may exceed the configured one: read budget)
    last_window_ns: int | None
    last_offset_ns: int | None
    polls: int
    readings: int
    samples: int
    errors: dict[str, int] = field(default_factory=dict)  # by DeviceErrorKind / rejection kind
