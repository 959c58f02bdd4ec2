"""Sans-IO state machine of one PHC source (`[[source]] mode = "ptp"`).

Driven like ntpd-rs's ntp-proto sources: ``start``, ``handle_timer`` and
``handle_event`` take the current CLOCK_MONOTONIC time and return actions
(core/ptp_events.py) for the worker to carry out; each device action comes back
as one event. Nothing here reads a clock or touches a device.

Behaviour:
- Read method chosen once from the capabilities, best first (PRECISE when the
  driver cross-timestamps, then EXTENDED, BASIC, clock_gettime on the dynamic
  clock id); EOPNOTSUPP moves to the next one at once; any reopen re-probes.
- Polls on an absolute grid ``epoch + k * 2^interval`` (no drift; missed slots
  are skipped, never bunched).
- Readings per sample fit the device's read budget (the AWS ENA PHC fails reads
  beyond 125/s): ``min(25, budget * 2^interval)``; when even one reading per
  poll is over budget the interval is lengthened and the status says so.
  EBUSY/EAGAIN halve the readings and back off exponentially; successes add
  one reading back per poll.
- Missing path: WAITING, retried with backoff. Not a PHC, or no read method
  the driver supports: FAILED for good.
  Permission denied: FAILED, retried slowly. ENODEV at run time, or three I/O
  errors in a row: UNREACHABLE, closed and reopened with backoff.
- Polls that are read but rejected (the system clock went backwards between
  readings, the PHC went backwards, nonsense fields): after
  REJECTIONS_BEFORE_REPORT in a row the source is REJECTING, and its message
  says why and how many polls in a row; the next accepted poll makes it RUNNING
  again. It keeps polling at the normal rate meanwhile: nothing is wrong with the
  device, only with what it (or the system clock) returned.
"""

from __future__ import annotations

from enum import StrEnum

from .config import PtpSourceConfig
from .fsm import transition
from .phc import PTP_MAX_SAMPLES, PhcCaps, PhcReadingRejected, PreciseReading, ReadMethod
from .phc_estimate import Estimator, WindowSlope, build_sample, default_estimator, estimate
from .ptp_events import (
    CloseDevice,
    DeviceErrorKind,
    DeviceFailed,
    DeviceOpened,
    OpenDevice,
    PtpAction,
    PtpEvent,
    PtpSourceState,
    PtpStatus,
    Publish,
    ReadDevice,
    ReadingsRead,
    Report,
    SetTimer,
)
from .units import NS_PER_S

__all__ = [
    "AWAITING_TRANSITIONS",
    "DEFAULT_READ_BUDGET_PER_S",
    "ENA_READ_BUDGET_PER_S",
    "REJECTIONS_BEFORE_REPORT",
    "Awaiting",
    "DeviceAnswer",
    "PtpSource",
    "method_order",
    "read_budget_for",
    "readings_per_poll",
]


class Awaiting(StrEnum):
    """Which answer from the device the source waits for (one request at a time)."""

    NOTHING = "nothing"
    OPEN = "open"
    READ = "read"


class DeviceAnswer(StrEnum):
    """What moves `Awaiting`: a request the source sends, or the worker's answer to it."""

    ASKED_OPEN = "asked-open"
    ASKED_READ = "asked-read"
    OPENED = "opened"
    READ = "read"
    FAILED = "failed"


# (awaiting, what happened) -> awaiting. An answer nobody asked for, or a second request
# before the first is answered, is a worker bug: transition() raises and changes nothing.
AWAITING_TRANSITIONS: dict[tuple[Awaiting, DeviceAnswer], Awaiting] = {
    (Awaiting.NOTHING, DeviceAnswer.ASKED_OPEN): Awaiting.OPEN,
    (Awaiting.NOTHING, DeviceAnswer.ASKED_READ): Awaiting.READ,
    (Awaiting.OPEN, DeviceAnswer.OPENED): Awaiting.NOTHING,
    (Awaiting.OPEN, DeviceAnswer.FAILED): Awaiting.NOTHING,
    (Awaiting.READ, DeviceAnswer.READ): Awaiting.NOTHING,
    (Awaiting.READ, DeviceAnswer.FAILED): Awaiting.NOTHING,
}

# Device reads per second we allow ourselves. The ENA PHC refuses beyond 125/s and
# then blocks for a while: stay at 80 % of that. Other PHCs have no documented
# limit; 2000/s keeps 25 readings per sample down to 64 Hz polling.
ENA_READ_BUDGET_PER_S = 100
DEFAULT_READ_BUDGET_PER_S = 2000
REOPEN_BACKOFF_MIN_NS = NS_PER_S
# After the device opens, the first samples (as many as the filter needs to start) come
# every 2^BURST_POLL_LOG2 s instead of every poll, as chrony's iburst does for NTP.
STARTUP_BURST_SAMPLES = 3
BURST_POLL_LOG2 = -2
REOPEN_BACKOFF_MAX_NS = 64 * NS_PER_S
BUSY_BACKOFF_MAX_NS = 16 * NS_PER_S
IO_ERRORS_BEFORE_REOPEN = 3
# Rejected polls in a row before the source says so: one can be a step of the system
# clock during the read; three in a row is a device or a clock that keeps doing it.
REJECTIONS_BEFORE_REPORT = 3


def method_order(caps: PhcCaps) -> list[ReadMethod]:
    """Read methods to try, best first (PRECISE only when the driver cross-timestamps)."""
    rest = [ReadMethod.EXTENDED, ReadMethod.BASIC, ReadMethod.CLOCK_GETTIME]
    return [ReadMethod.PRECISE, *rest] if caps.cross_timestamping else rest


def read_budget_for(clock_name: str) -> int:
    """Reads per second allowed for a PHC, by its driver's clock name."""
    if clock_name.lower().startswith("ena"):
        return ENA_READ_BUDGET_PER_S
    return DEFAULT_READ_BUDGET_PER_S


def readings_per_poll(interval_log2: int, budget_per_s: int) -> tuple[int, int]:
    """(poll interval log2 in force, readings per poll) within ``budget_per_s`` reads/s."""
    poll_log2 = interval_log2
    while budget_per_s * 2.0**poll_log2 < 1.0:
        poll_log2 += 1
    return poll_log2, max(1, min(PTP_MAX_SAMPLES, int(budget_per_s * 2.0**poll_log2)))


class PtpSource:
    """One PHC source. Call ``start`` once, then feed timers and device events."""

    def __init__(self, config: PtpSourceConfig, source_id: str, *,
                 estimator: Estimator | None = None,
                 read_budget_per_s: int | None = None,
                 method: ReadMethod | None = None) -> None:
        self.config = config
        self.source_id = source_id
        self.estimator = estimator  # None: the read method's default (phc.default_estimator)
        self._budget_override = read_budget_per_s
        self._forced_method = method  # only this method, no fallback (probes and tests)
        self._state = PtpSourceState.STARTING
        self._message = f"opening {config.path}"
        self._awaiting = Awaiting.NOTHING
        self._deadline_ns: int | None = None
        self._opened: DeviceOpened | None = None
        self._methods: list[ReadMethod] = []
        self._poll_log2 = config.interval
        self._max_readings = PTP_MAX_SAMPLES
        self._readings_now = PTP_MAX_SAMPLES
        self._epoch_ns = 0
        self._budget_per_s = PTP_MAX_SAMPLES
        self._burst_left = 0
        self._reopen_backoff_ns = REOPEN_BACKOFF_MIN_NS
        self._busy_level = 0
        self._io_errors = 0
        self._rejected_in_a_row = 0
        self._last_window_ns: int | None = None
        self._last_offset_ns: int | None = None
        self._counts = {"polls": 0, "readings": 0, "samples": 0}
        self._errors: dict[str, int] = {}
        self._slope = WindowSlope()  # per device and method: reset on reopen and fallback

    # --- public surface ------------------------------------------------------------------------

    @property
    def state(self) -> PtpSourceState:
        return self._state

    @property
    def method(self) -> ReadMethod | None:
        return self._methods[0] if self._methods else None

    @property
    def deadline_ns(self) -> int | None:
        """When ``handle_timer`` is due next (None: nothing scheduled)."""
        return self._deadline_ns

    def status(self) -> PtpStatus:
        opened = self._opened
        return PtpStatus(
            source_id=self.source_id, path=self.config.path, state=self._state,
            message=self._message, resolved_path=opened.resolved_path if opened else None,
            clock_name=opened.clock_name if opened else "", method=self.method,
            readings_per_sample=1 if self.method is ReadMethod.PRECISE else self._readings_now,
            poll_log2=self._poll_log2, last_window_ns=self._last_window_ns,
            last_offset_ns=self._last_offset_ns, polls=self._counts["polls"],
            readings=self._counts["readings"], samples=self._counts["samples"],
            errors=dict(self._errors))

    def start(self, now_ns: int) -> list[PtpAction]:
        del now_ns
        return [self._open()]

    def handle_timer(self, now_ns: int) -> list[PtpAction]:
        if self._deadline_ns is None or self._awaiting is not Awaiting.NOTHING:
            return []
        if now_ns < self._deadline_ns:  # early wake-up: keep waiting
            return [SetTimer(self._deadline_ns)]
        self._deadline_ns = None
        if self._state in (PtpSourceState.RUNNING, PtpSourceState.REJECTING):
            return [self._read()]
        return [self._open()]

    def handle_event(self, event: PtpEvent, now_ns: int) -> list[PtpAction]:
        """Feed back the result of the last device action (an illegal event raises
        ValueError and changes nothing)."""
        awaiting = self._awaiting
        kind = (DeviceAnswer.OPENED if isinstance(event, DeviceOpened)
                else DeviceAnswer.READ if isinstance(event, ReadingsRead)
                else DeviceAnswer.FAILED)
        self._awaiting = transition(AWAITING_TRANSITIONS, awaiting, kind, self.source_id)
        if isinstance(event, DeviceOpened):
            return self._opened_ok(event, now_ns)
        if isinstance(event, ReadingsRead):
            return self._readings(event, now_ns)
        if awaiting is Awaiting.OPEN:
            return self._open_failed(event, now_ns)
        return self._read_failed(event, now_ns)

    # --- transitions ---------------------------------------------------------------------------

    def _opened_ok(self, event: DeviceOpened, now_ns: int) -> list[PtpAction]:
        recovered = self._state is PtpSourceState.UNREACHABLE
        self._opened = event
        forced = self._forced_method
        self._methods = [forced] if forced is not None else method_order(event.caps)
        budget = self._budget_override or read_budget_for(event.clock_name)
        self._poll_log2, self._max_readings = readings_per_poll(self.config.interval, budget)
        self._readings_now = self._max_readings
        self._budget_per_s = budget
        # the filter's start-up samples come a quarter second apart, not a poll apart
        self._burst_left = STARTUP_BURST_SAMPLES if self._poll_log2 > BURST_POLL_LOG2 else 0
        self._reopen_backoff_ns = REOPEN_BACKOFF_MIN_NS
        self._busy_level = self._io_errors = self._rejected_in_a_row = 0
        self._epoch_ns = now_ns
        self._slope = WindowSlope()
        text = f"{'recovered: ' if recovered else ''}reading {self._describe_device()}"
        if self._poll_log2 != self.config.interval:
            text += (f"; interval {self.config.interval} is over the device's read budget of "
                     f"{budget}/s, polling every 2^{self._poll_log2} s")
        actions: list[PtpAction] = self._enter(PtpSourceState.RUNNING, text)
        return [*actions, self._read()]

    def _readings(self, event: ReadingsRead, now_ns: int) -> list[PtpAction]:
        self._counts["polls"] += 1
        self._busy_level = self._io_errors = 0
        self._readings_now = min(self._max_readings, self._readings_now + 1)
        raw = event.readings
        readings = (raw.as_reading(),) if isinstance(raw, PreciseReading) else raw
        self._counts["readings"] += len(readings)
        actions: list[PtpAction] = []
        try:
            est = estimate(readings, self.estimator or default_estimator(event.method),
                           self._slope)
            sample = build_sample(est, self.config, source_id=self.source_id,
                                  device_index=self._opened.device_index if self._opened else None,
                                  mono_ns=event.mono_ns, realtime_ns=event.realtime_ns,
                                  poll_log2=self._poll_log2)
        except PhcReadingRejected as exc:
            self._count(exc.kind)
            actions += self._rejected(str(exc))
        else:
            self._slope.update(readings)  # after use: a poll never corrects itself
            self._counts["samples"] += 1
            self._burst_left = max(0, self._burst_left - 1)
            self._last_window_ns, self._last_offset_ns = est.window_ns, est.offset_ns
            actions += self._accepted()
            actions.append(Publish(sample))
        return [*actions, self._schedule(self._next_slot(now_ns, self._poll_ns()))]

    def _rejected(self, reason: str) -> list[PtpAction]:
        """One more poll dropped; REJECTING (reported once, on entry) after a few in a row."""
        self._rejected_in_a_row += 1
        n = self._rejected_in_a_row
        if n < REJECTIONS_BEFORE_REPORT:
            return []
        # "...; poll dropped" says what happened to one poll; the state speaks of all of them
        reason = reason.removesuffix("; poll dropped")
        text = f"{reason} ({n} polls in a row)"
        if self._state is PtpSourceState.REJECTING:
            self._message = text  # status() shows the count; no new Report for each poll
            return []
        return self._enter(PtpSourceState.REJECTING, text)

    def _accepted(self) -> list[PtpAction]:
        self._rejected_in_a_row = 0
        if self._state is not PtpSourceState.REJECTING:
            return []
        text = f"recovered: reading {self._describe_device()}"
        return self._enter(PtpSourceState.RUNNING, text)

    def _open_failed(self, event: DeviceFailed, now_ns: int) -> list[PtpAction]:
        self._count(event.kind)
        if event.kind is DeviceErrorKind.NOT_PTP:
            self._deadline_ns = None
            return self._enter(PtpSourceState.FAILED, f"not a PTP clock: {event.message}")
        delay = self._reopen_backoff_ns
        self._reopen_backoff_ns = min(2 * delay, REOPEN_BACKOFF_MAX_NS)
        retry = f"; retrying in {delay / NS_PER_S:g} s"
        if event.kind is DeviceErrorKind.PERMISSION:
            state, text = PtpSourceState.FAILED, event.message + retry
        elif self._state in (PtpSourceState.STARTING, PtpSourceState.WAITING) and (
                event.kind is DeviceErrorKind.MISSING):
            state = PtpSourceState.WAITING
            text = (f"waiting for {self.config.path} to appear (e.g. `modprobe ptp_kvm`)"
                    + retry)
        else:
            state, text = PtpSourceState.UNREACHABLE, event.message + retry
        return [*self._enter(state, text), self._schedule(now_ns + delay)]

    def _read_failed(self, event: DeviceFailed, now_ns: int) -> list[PtpAction]:
        self._count(event.kind)
        kind = event.kind
        if kind is DeviceErrorKind.UNSUPPORTED and len(self._methods) > 1:
            dropped = self._methods.pop(0)
            self._slope = WindowSlope()
            text = f"{dropped} unsupported ({event.message}); reading {self._describe_device()}"
            return [*self._enter(PtpSourceState.RUNNING, text), self._read()]
        if kind is DeviceErrorKind.UNSUPPORTED:  # no method left: re-probing cannot help
            self._deadline_ns = None
            text = f"no read method works: {event.message}"
            return [CloseDevice(), *self._enter(PtpSourceState.FAILED, text)]
        if kind is DeviceErrorKind.BUSY:
            self._busy_level += 1
            self._readings_now = max(1, self._readings_now // 2)
            # skip 2^level - 1 poll slots, at most BUSY_BACKOFF_MAX_NS worth of them
            poll = self._poll_ns()
            skip = min((1 << self._busy_level) - 1, BUSY_BACKOFF_MAX_NS // poll)
            return [self._schedule(self._next_slot(now_ns, poll) + skip * poll)]
        if kind is DeviceErrorKind.NOT_PTP:
            self._deadline_ns = None
            return [CloseDevice(), *self._enter(PtpSourceState.FAILED,
                                                f"not a PTP clock: {event.message}")]
        if kind is DeviceErrorKind.NONSENSE:  # the device answered, with garbage
            return [*self._rejected(event.message),
                    self._schedule(self._next_slot(now_ns, self._poll_ns()))]
        if kind is DeviceErrorKind.IO:
            self._io_errors += 1
            if self._io_errors < IO_ERRORS_BEFORE_REOPEN:
                return [self._schedule(self._next_slot(now_ns, self._poll_ns()))]
        delay = self._reopen_backoff_ns
        self._reopen_backoff_ns = min(2 * delay, REOPEN_BACKOFF_MAX_NS)
        state = (PtpSourceState.FAILED if kind is DeviceErrorKind.PERMISSION
                 else PtpSourceState.UNREACHABLE)
        text = f"{event.message}; reopening in {delay / NS_PER_S:g} s"
        return [CloseDevice(), *self._enter(state, text), self._schedule(now_ns + delay)]

    # --- helpers -------------------------------------------------------------------------------

    def _open(self) -> OpenDevice:
        self._awaiting = transition(AWAITING_TRANSITIONS, self._awaiting, DeviceAnswer.ASKED_OPEN,
                                    self.source_id)
        return OpenDevice()

    def _read(self) -> ReadDevice:
        self._awaiting = transition(AWAITING_TRANSITIONS, self._awaiting, DeviceAnswer.ASKED_READ,
                                    self.source_id)
        method = self._methods[0]
        count = self._readings_now
        if self._burst_left:  # four polls a second: within the device's read budget
            count = max(1, min(count, self._budget_per_s >> -BURST_POLL_LOG2))
        return ReadDevice(method, 1 if method is ReadMethod.PRECISE else count)

    def _enter(self, state: PtpSourceState, message: str) -> list[PtpAction]:
        changed = (state, message) != (self._state, self._message)
        self._state, self._message = state, message
        return [Report(self.status())] if changed else []

    def _schedule(self, deadline_ns: int) -> SetTimer:
        self._deadline_ns = deadline_ns
        return SetTimer(deadline_ns)

    def _poll_ns(self) -> int:
        log2 = BURST_POLL_LOG2 if self._burst_left else self._poll_log2
        return NS_PER_S << log2 if log2 >= 0 else NS_PER_S >> -log2

    def _next_slot(self, now_ns: int, poll_ns: int) -> int:
        """The first grid instant epoch + k * poll strictly after ``now_ns``."""
        return self._epoch_ns + ((now_ns - self._epoch_ns) // poll_ns + 1) * poll_ns

    def _count(self, kind: str) -> None:
        key = str(kind)  # plain strings: the status is serialised for ntpctl --json
        self._errors[key] = self._errors.get(key, 0) + 1

    def _describe_device(self) -> str:
        opened = self._opened
        path = self.config.path
        if opened is not None and opened.resolved_path != path:
            path = f"{path} ({opened.resolved_path})"
        name = f" [{opened.clock_name}]" if opened is not None and opened.clock_name else ""
        count = "1 cross-timestamp" if self.method is ReadMethod.PRECISE else (
            f"{self._readings_now} readings")
        return f"{path}{name} with {self.method}, {count} per sample"
