"""Sans-IO state machine of one PPS source (`[[source]] mode = "pps"`, /dev/ppsN).

A pulse marks where a second (a ``period``) starts on the reference, and the
kernel stamps it on the local CLOCK_REALTIME; which second it is the pulse does
not say. :func:`pair_pulse` supplies the whole seconds from another source the
clock algorithm has selected (typically a GPS sock source, or NTP): of the
offsets the pulse allows (``k * period - phase``) it takes the one nearest to
that source's offset estimate, and only when that source is certain enough that
the neighbouring candidate is excluded. Without such a source the PPS source
says "waiting for a source with whole seconds" and publishes nothing, as in
ntpd-rs, where a PPS source cannot vote either.

The worker drives it like the PHC source: :meth:`PpsSource.start`, then one
event per device action (core/refclock_events.py), and
:meth:`PpsSource.update_whole_seconds` whenever clock-control's view of the
sources changes (:func:`whole_seconds_from` picks the estimate from source
snapshots). Nothing here reads a clock or touches a device.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .config import PpsSourceConfig
from .events import LeapIndicator, Sample, SourceKind
from .fsm import transition
from .pps_abi import PPS_CANWAIT, PPS_CAPTUREASSERT, PPS_CAPTURECLEAR
from .refclock_events import (
    CheckDevice,
    FetchPulse,
    FetchTimedOut,
    PpsAction,
    PpsDeviceChecked,
    PpsDeviceFailed,
    PpsErrorKind,
    PpsEvent,
    Publish,
    PulseFetched,
    RefclockStatus,
    Report,
    SetTimer,
)
from .snapshots import SelectionState, SourceSnapshot
from .units import NS_PER_S

__all__ = [
    "AMBIGUITY_SIGMAS",
    "PPS_REFID",
    "PPS_TRANSITIONS",
    "Pairing",
    "PpsDrop",
    "PpsSource",
    "PpsSourceEvent",
    "PpsState",
    "WholeSeconds",
    "fetch_timeout_ns",
    "pair_pulse",
    "pps_poll_log2",
    "whole_seconds_from",
]

PPS_REFID = int.from_bytes(b"PPS\0", "big")
# The whole-seconds estimate must exclude the neighbouring candidate by this many sigmas.
AMBIGUITY_SIGMAS = 3.0
RETRY_MIN_NS = NS_PER_S
RETRY_MAX_NS = 64 * NS_PER_S
_PERMANENT = (PpsErrorKind.NOT_PPS, PpsErrorKind.CANNOT_WAIT, PpsErrorKind.NO_EDGE)


@dataclass(frozen=True, slots=True)
class WholeSeconds:
    """Another source's estimate of reference minus local (1 σ), the pulse's whole seconds."""

    offset_s: float
    uncertainty_s: float
    source_id: str


@dataclass(frozen=True, slots=True)
class Pairing:
    """A pulse paired with whole seconds: ``offset_s`` (None when refused, ``why`` says why)."""

    offset_s: float | None
    why: str = ""


def pair_pulse(pulse_ns: int, period_ns: int, estimate: WholeSeconds | None) -> Pairing:
    """The offset (reference - local) a pulse stamped at local ``pulse_ns`` means.

    The pulse sits ``phase = pulse_ns mod period`` after a local period boundary,
    so the offset is ``k * period - phase`` for some integer k; k is taken so the
    offset is nearest the estimate. Refused when the estimate, widened by
    AMBIGUITY_SIGMAS, reaches half a period away from the chosen offset: the
    neighbouring period could be the right one.
    """
    if estimate is None:
        return Pairing(None, "waiting for a source with whole seconds")
    if period_ns <= 0:
        raise ValueError("period must be positive")
    if not (math.isfinite(estimate.offset_s) and math.isfinite(estimate.uncertainty_s)):
        return Pairing(None, f"the estimate of {estimate.source_id} is not finite")
    phase_ns = pulse_ns % period_ns
    est_ns = round(estimate.offset_s * NS_PER_S)
    k = (est_ns + phase_ns + period_ns // 2) // period_ns
    offset_ns = k * period_ns - phase_ns
    residual_s = (offset_ns - est_ns) / NS_PER_S
    half_s = period_ns / 2 / NS_PER_S
    if abs(residual_s) + AMBIGUITY_SIGMAS * estimate.uncertainty_s >= half_s:
        return Pairing(None, (
            f"cannot tell which second: the pulse is {residual_s * 1e3:+.3f} ms from where "
            f"{estimate.source_id} puts it (±{estimate.uncertainty_s * 1e3:.3f} ms)"))
    return Pairing(offset_ns / NS_PER_S)


def whole_seconds_from(snapshots: Iterable[SourceSnapshot]) -> WholeSeconds | None:
    """The best selected or combined source that knows whole seconds (not a PPS source)."""
    usable = [s for s in snapshots
              if s.kind is not SourceKind.PPS
              and s.state in (SelectionState.SELECTED, SelectionState.COMBINED)
              and math.isfinite(s.offset_s) and math.isfinite(s.uncertainty_s)]
    if not usable:
        return None
    best = min(usable, key=lambda s: s.uncertainty_s)
    return WholeSeconds(best.offset_s, best.uncertainty_s, best.source_id)


def pps_poll_log2(period_s: float) -> int:
    """The poll a PPS source's samples carry: log2 of its period, within -6..17."""
    return max(-6, min(17, round(math.log2(period_s))))


def fetch_timeout_ns(period_s: float) -> int:
    """How long one PPS_FETCH waits: two periods, at least 1 s, at most 8 s."""
    return int(min(max(2.0 * period_s, 1.0), 8.0) * NS_PER_S)


class PpsState(enum.StrEnum):
    CHECKING = "checking"  # PPS_GETCAP asked
    NO_SIGNAL = "no-signal"  # no pulse yet, or none for a fetch timeout
    WAITING_FOR_SECONDS = "waiting-for-seconds"  # pulses, but no source with whole seconds
    RUNNING = "running"
    UNREACHABLE = "unreachable"  # the device fails; retried with backoff
    FAILED = "failed"  # no PPS device, or one that cannot do what we need (permanent)


class PpsSourceEvent(enum.StrEnum):
    CAPABLE = "capable"
    INCAPABLE = "incapable"
    PAIRED = "paired"
    UNPAIRED = "unpaired"
    SILENT = "silent"
    DEVICE_ERROR = "device-error"


_LIVE = (PpsState.NO_SIGNAL, PpsState.WAITING_FOR_SECONDS, PpsState.RUNNING,
         PpsState.UNREACHABLE)
PPS_TRANSITIONS: dict[tuple[PpsState, PpsSourceEvent], PpsState] = {
    (PpsState.CHECKING, PpsSourceEvent.CAPABLE): PpsState.NO_SIGNAL,
    (PpsState.CHECKING, PpsSourceEvent.INCAPABLE): PpsState.FAILED,
    (PpsState.CHECKING, PpsSourceEvent.DEVICE_ERROR): PpsState.UNREACHABLE,
    (PpsState.UNREACHABLE, PpsSourceEvent.CAPABLE): PpsState.NO_SIGNAL,
    **{(state, event): after for state in _LIVE for event, after in (
        (PpsSourceEvent.INCAPABLE, PpsState.FAILED),
        (PpsSourceEvent.PAIRED, PpsState.RUNNING),
        (PpsSourceEvent.UNPAIRED, PpsState.WAITING_FOR_SECONDS),
        (PpsSourceEvent.SILENT, PpsState.NO_SIGNAL),
        (PpsSourceEvent.DEVICE_ERROR, PpsState.UNREACHABLE))},
}


class PpsDrop(enum.StrEnum):
    """Pulses seen but not published (counted per reason)."""

    UNPAIRED = "unpaired"  # no whole seconds, or ambiguous
    MISSED = "missed"  # sequence numbers skipped: pulses the worker never saw
    STALE = "stale"  # the pulse is older than a fetch timeout when we see it
    AHEAD = "ahead"  # stamped after the clocks were read: not this clock
    NONSENSE = "nonsense"  # the kernel's answer could not be decoded


# the events that answer each device action
_ANSWERS: dict[type[CheckDevice | FetchPulse], tuple[type[PpsEvent], ...]] = {
    CheckDevice: (PpsDeviceChecked, PpsDeviceFailed),
    FetchPulse: (PulseFetched, FetchTimedOut, PpsDeviceFailed),
}


class PpsSource:
    """One PPS source. Call ``start`` once, then feed the device's events and timers."""

    def __init__(self, config: PpsSourceConfig, source_id: str) -> None:
        self.config = config
        self.source_id = source_id
        self.period_ns = round(config.period * NS_PER_S)
        self.timeout_ns = fetch_timeout_ns(config.period)
        self._poll_log2 = pps_poll_log2(config.period)
        self._state = PpsState.CHECKING
        self._message = f"checking {config.path}"
        self._whole: WholeSeconds | None = None
        self._last_seq: int | None = None
        self._awaiting: type[CheckDevice | FetchPulse] | None = None
        self._retry_ns = RETRY_MIN_NS
        self._samples = 0
        self._drops: dict[str, int] = {}
        self._last_offset_s: float | None = None
        self._deadline_ns: int | None = None

    @property
    def state(self) -> PpsState:
        return self._state

    @property
    def deadline_ns(self) -> int | None:
        return self._deadline_ns

    @property
    def status_poll_log2(self) -> int:
        """The poll its samples carry (log2 of the period)."""
        return self._poll_log2

    def status(self) -> RefclockStatus:
        return RefclockStatus(self.source_id, "pps", self.config.path, self._state.value,
                              self._message, self._samples, dict(self._drops),
                              self._last_offset_s)

    def update_whole_seconds(self, estimate: WholeSeconds | None) -> None:
        """Clock-control's current estimate from a source with whole seconds (None: none)."""
        self._whole = estimate

    def start(self, now_mono_ns: int) -> list[PpsAction]:
        del now_mono_ns
        return [self._ask(CheckDevice())]

    def handle_timer(self, now_mono_ns: int) -> list[PpsAction]:
        if self._deadline_ns is None or self._awaiting is not None:
            return []
        if now_mono_ns < self._deadline_ns:
            return [SetTimer(self._deadline_ns)]
        self._deadline_ns = None
        return [self._ask(CheckDevice())]  # after a device error: check it again

    def handle_event(self, event: PpsEvent, now_mono_ns: int) -> list[PpsAction]:
        """The answer to the last device action (ValueError if none was asked for)."""
        asked = self._awaiting
        answers = _ANSWERS[asked] if asked is not None else ()
        if not isinstance(event, answers):
            # a worker bug: refused before anything changes
            raise ValueError(f"{self.source_id}: {type(event).__name__} does not answer "
                             f"{asked.__name__ if asked else 'nothing'}")
        self._awaiting = None
        if isinstance(event, PpsDeviceChecked):
            return self._checked(event.caps)
        if isinstance(event, PulseFetched):
            return self._pulse(event)
        if isinstance(event, FetchTimedOut):
            text = (f"no pulse from {self.config.path} for {self.timeout_ns / NS_PER_S:g} s "
                    "(is the signal connected?)")
            return [*self._enter(PpsSourceEvent.SILENT, text), self._fetch()]
        return self._failed(event, now_mono_ns)

    # --- transitions ---------------------------------------------------------------------------

    def _checked(self, caps: int) -> list[PpsAction]:
        edge_bit = PPS_CAPTUREASSERT if self.config.edge == "assert" else PPS_CAPTURECLEAR
        if not caps & PPS_CANWAIT:
            return self._enter(PpsSourceEvent.INCAPABLE,
                               f"{self.config.path} cannot wait for a pulse (no PPS_CANWAIT)")
        if not caps & edge_bit:
            return self._enter(PpsSourceEvent.INCAPABLE,
                               f"{self.config.path} cannot capture the {self.config.edge} edge")
        self._retry_ns = RETRY_MIN_NS
        self._last_seq = None
        actions = self._enter(PpsSourceEvent.CAPABLE, f"waiting for a pulse on {self.config.path}")
        return [*actions, self._fetch()]

    def _pulse(self, event: PulseFetched) -> list[PpsAction]:
        fetch = event.fetch
        if self.config.edge == "assert":
            seq, pulse_ns = fetch.assert_sequence, fetch.assert_ns
        else:
            seq, pulse_ns = fetch.clear_sequence, fetch.clear_ns
        last = self._last_seq
        if seq == last:  # woken by the other edge: not our pulse
            return [self._fetch()]
        self._last_seq = seq
        if last is not None and (seq - last) % 2**32 > 1:
            self._count(PpsDrop.MISSED, (seq - last) % 2**32 - 1)
        age_ns = event.realtime_ns - pulse_ns
        if age_ns > self.timeout_ns:  # we were late (or the kernel handed an old edge)
            self._count(PpsDrop.STALE)
            return [self._fetch()]
        if age_ns < 0:
            self._count(PpsDrop.AHEAD)
            return [self._fetch()]
        pairing = pair_pulse(pulse_ns, self.period_ns, self._whole)
        if pairing.offset_s is None:
            self._count(PpsDrop.UNPAIRED)
            return [*self._enter(PpsSourceEvent.UNPAIRED, pairing.why), self._fetch()]
        assert self._whole is not None
        self._samples += 1
        self._last_offset_s = pairing.offset_s
        sample = Sample(
            source_id=self.source_id, kind=SourceKind.PPS, offset_s=pairing.offset_s,
            delay_s=0.0, uncertainty_s=self.config.precision_s, root_delay_s=0.0,
            root_dispersion_s=self.config.accuracy, stratum=0, leap=LeapIndicator.NONE,
            reference_id=PPS_REFID, mono_ns=event.mono_ns - age_ns, realtime_ns=pulse_ns,
            poll_log2=self._poll_log2)
        text = f"pulses on {self.config.path}, whole seconds from {self._whole.source_id}"
        return [*self._enter(PpsSourceEvent.PAIRED, text), Publish(sample), self._fetch()]

    def _failed(self, event: PpsDeviceFailed, now_mono_ns: int) -> list[PpsAction]:
        if event.kind in _PERMANENT:
            return self._enter(PpsSourceEvent.INCAPABLE, event.message)
        if event.kind is PpsErrorKind.NONSENSE and self._state is not PpsState.CHECKING:
            self._count(PpsDrop.NONSENSE)
            return [self._fetch()]
        delay = self._retry_ns
        self._retry_ns = min(2 * delay, RETRY_MAX_NS)
        text = f"{event.message}; retrying in {delay / NS_PER_S:g} s"
        actions = self._enter(PpsSourceEvent.DEVICE_ERROR, text)
        self._deadline_ns = now_mono_ns + delay
        return [*actions, SetTimer(self._deadline_ns)]

    # --- helpers -------------------------------------------------------------------------------

    def _ask(self, action: CheckDevice | FetchPulse) -> CheckDevice | FetchPulse:
        if self._awaiting is not None:
            raise ValueError(f"{self.source_id}: a device action is already outstanding")
        self._awaiting = type(action)
        return action

    def _fetch(self) -> FetchPulse | CheckDevice:
        return self._ask(FetchPulse(self.timeout_ns))

    def _enter(self, event: PpsSourceEvent, message: str) -> list[PpsAction]:
        state = transition(PPS_TRANSITIONS, self._state, event, self.source_id)
        changed = (state, message) != (self._state, self._message)
        self._state, self._message = state, message
        return [Report(self.status())] if changed else []

    def _count(self, reason: PpsDrop, n: int = 1) -> None:
        self._drops[str(reason)] = self._drops.get(str(reason), 0) + n
