"""Bounded property fuzzing in the default run: the IPC decoder and the clock controller.

The decoder, given any bytes (or msgpack of any nested value), returns a message or
raises MalformedMessage, nothing else. The controller, fed samples that pass the
schema (so: what a compromised worker can send) in any order with unreachable,
remove and re-add events, never raises and never asks for a non-finite correction.
"""

from __future__ import annotations

import math
import os

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.actions import SetErrorEstimate, SetFrequency, Step
from ntpd_py.core.config import SynchronizationConfig
from ntpd_py.core.controller import ClockController
from ntpd_py.core.events import SourceKind
from ntpd_py.ipc.framing import MalformedMessage, decode, encode
from ntpd_py.ipc.messages import MAX_SECONDS, POLL_MAX_LOG2, POLL_MIN_LOG2, Message, SampleMsg

# Bounded for the default run; NTPD_FUZZ_EXAMPLES=5000 digs deeper by hand.
FUZZ = settings(max_examples=int(os.environ.get("NTPD_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- the decoder ---------------------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30)
_field_names = st.sampled_from(sorted({name for cls in (SampleMsg,) for name in cls.model_fields}
                                      | {"listen", "counters", "state", "command", "poll_log2"}))


def _decodes_or_malformed(frame: bytes) -> None:
    try:
        message = decode(frame)
    except MalformedMessage as exc:
        assert exc.reason  # a short tag the receiver counts under
        return
    assert isinstance(message, Message)
    assert decode(encode(message)) == message  # what validated survives a round trip


@FUZZ
@given(st.binary(max_size=512))
def test_decode_arbitrary_bytes(frame: bytes) -> None:
    _decodes_or_malformed(frame)


@FUZZ
@given(st.integers(0, 20), st.dictionaries(_field_names | st.text(max_size=8), _values,
                                           max_size=14))
def test_decode_msgpack_of_nested_values(type_code: int, payload: dict[str, object]) -> None:
    for version in (1, 2):
        frame = msgpack.packb([version, type_code, payload], use_bin_type=True)
        _decodes_or_malformed(frame)


@FUZZ
@given(_values)
def test_decode_any_envelope(value: object) -> None:
    _decodes_or_malformed(msgpack.packb(value, use_bin_type=True))


# -- the controller --------------------------------------------------------------------------

_offsets = st.sampled_from([0.0, 1e-12, -1e-12, 1e-3, -0.5, 0.5, 128.0, -1e6, 1e6, 1e12,
                            -1e300, 1e300, 5e-324]) | st.floats(-1e9, 1e9)
_seconds = st.sampled_from([0.0, 5e-324, 1e-12, 1e-3, 1.0, MAX_SECONDS]) | st.floats(0.0, MAX_SECONDS)
_SOURCES = [("ptp:/dev/ptp0", SourceKind.PTP), ("ptp:/dev/ptp1", SourceKind.PTP),
            ("ntp:a", SourceKind.NTP), ("ntp:b", SourceKind.NTP), ("ntp:c", SourceKind.NTP)]


@st.composite
def _events(draw: st.DrawFn) -> list[tuple[str, int, dict[str, object]]]:
    events = []
    for _ in range(draw(st.integers(1, 40))):
        op = draw(st.sampled_from(["sample"] * 6 + ["unreachable", "remove", "add", "timer"]))
        index = draw(st.integers(0, len(_SOURCES) - 1))
        gap_ns = draw(st.sampled_from([0, 1, 1_000_000, 1_000_000_000, 16_000_000_000,
                                       3600 * 10**9]))
        fields = {
            "offset_s": draw(_offsets), "delay_s": draw(_seconds),
            "uncertainty_s": draw(_seconds), "root_delay_s": draw(_seconds),
            "root_dispersion_s": draw(_seconds), "stratum": draw(st.integers(0, 16)),
            "leap": draw(st.integers(0, 3)), "poll_log2": draw(st.integers(POLL_MIN_LOG2,
                                                                          POLL_MAX_LOG2)),
            "age_ns": draw(st.sampled_from([0, 0, 1, 10**9])),
        }
        events.append((op, index, fields | {"gap_ns": gap_ns}))
    return events


def _check(actions: list[object]) -> None:
    for action in actions:
        if isinstance(action, SetFrequency):
            assert math.isfinite(action.freq), action
        elif isinstance(action, Step):
            assert isinstance(action.offset_ns, int), action
        elif isinstance(action, SetErrorEstimate):
            assert math.isfinite(action.max_error_s) and math.isfinite(action.est_error_s), action


@FUZZ
@given(_events(), st.sampled_from([1, 2, 3]))
def test_controller_with_extreme_schema_valid_samples(
    events: list[tuple[str, int, dict[str, object]]], agreeing: int
) -> None:
    mono, real = 10**12, 1_700_000_000 * 10**9
    sync = SynchronizationConfig(minimum_agreeing_sources=agreeing)
    controller = ClockController(sync, now_mono_ns=mono, now_real_ns=real)
    for source_id, kind in _SOURCES:
        controller.add_source(source_id, kind, poll_log2=0 if kind is SourceKind.PTP else 4,
                              poll_limits=(0, 0) if kind is SourceKind.PTP else (4, 10))
    last_sample: dict[str, int] = {}
    for op, index, fields in events:
        source_id, kind = _SOURCES[index]
        gap = int(fields.pop("gap_ns"))  # type: ignore[call-overload]
        age = int(fields.pop("age_ns"))  # type: ignore[call-overload]
        mono += gap
        real += gap
        if op == "sample":
            # What admission lets through: not in the future, not older than the last one.
            taken = max(mono - age, last_sample.get(source_id, 0))
            last_sample[source_id] = taken
            msg = SampleMsg(source_id=source_id, kind=kind.value, mono_ns=taken,
                            realtime_ns=real - (mono - taken), reference_id=1,
                            **fields)  # type: ignore[arg-type]
            actions = controller.handle_sample(msg.to_sample(), now_mono_ns=mono,
                                               now_real_ns=real)
        elif op == "unreachable":
            actions = controller.handle_unreachable(source_id, now_mono_ns=mono,
                                                    now_real_ns=real)
        elif op == "remove":
            controller.remove_source(source_id)
            last_sample.pop(source_id, None)
            actions = []
        elif op == "add":
            controller.remove_source(source_id)
            controller.add_source(source_id, kind, poll_log2=4, poll_limits=(4, 10))
            actions = []
        else:
            actions = controller.handle_timer(now_mono_ns=mono, now_real_ns=real)
        _check(actions)
        controller.take_messages()
        controller.system_snapshot(now_mono_ns=mono)
        controller.source_snapshots(now_mono_ns=mono)
    controller.export_state()


# -- clock-control's admission: any bus input from any sender ------------------------------

_senders = st.sampled_from(["ptp:/dev/ptp0", "ntp:a", "server", "server#5", "stranger"])


@st.composite
def _bus_frames(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    frames = []
    for _ in range(draw(st.integers(1, 30))):
        sender = draw(_senders)
        kind = draw(st.sampled_from(["sample", "status", "server", "unreachable", "raw"]))
        source_id = draw(st.sampled_from([sender, "ptp:/dev/ptp0", "ntp:a"]))
        if kind == "raw":
            frame = msgpack.packb([1, draw(st.integers(0, 16)),
                                   draw(st.dictionaries(_field_names, _values, max_size=8))],
                                  use_bin_type=True)
        elif kind == "sample":
            frame = msgpack.packb([1, 1, {
                "source_id": source_id, "kind": draw(st.sampled_from(["ptp", "ntp"])),
                "offset_s": draw(_offsets), "delay_s": draw(_seconds),
                "uncertainty_s": draw(_seconds), "root_delay_s": draw(_seconds),
                "root_dispersion_s": draw(_seconds), "stratum": draw(st.integers(0, 16)),
                "leap": draw(st.integers(0, 3)), "reference_id": 1,
                "mono_ns": draw(st.integers(0, 2**63 - 1)),
                "realtime_ns": draw(st.integers(-(2**63) + 1, 2**63 - 1)),
                "poll_log2": draw(st.integers(POLL_MIN_LOG2, POLL_MAX_LOG2))}])
        elif kind == "status":
            frame = msgpack.packb([1, 2, {
                "source_id": source_id, "kind": draw(st.sampled_from(["ptp", "ntp"])),
                "name": "x", "state": "running",
                "poll_log2": draw(st.integers(POLL_MIN_LOG2, POLL_MAX_LOG2))}])
        elif kind == "server":
            frame = msgpack.packb([1, 4, {"listen": draw(st.sampled_from(["127.0.0.1:123",
                                                                         "[::1]:123", "x"])),
                                          "counters": {"received": draw(st.integers(0, 9))}}])
        else:
            frame = msgpack.packb([1, 3, {"source_id": source_id}])
        frames.append((sender, frame))
    return frames


@FUZZ
@given(_bus_frames())
def test_clock_control_contains_any_bus_input(frames: list[tuple[str, bytes]]) -> None:
    import logging
    import time

    from ntpd_py.ipc.channels import MemoryHub
    from ntpd_py.ipc.messages import SourceEntry
    from ntpd_py.plumbing.scheduler import Now
    from ntpd_py.workers.clock_backends import ObserveClock
    from ntpd_py.workers.clock_control import ClockControlTask

    hub = MemoryHub()
    now = Now(time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.time_ns())
    task = ClockControlTask(
        controller=ClockController(SynchronizationConfig(minimum_agreeing_sources=1),
                                   now_mono_ns=now.mono_ns, now_real_ns=now.real_ns),
        backend=ObserveClock(), bus=hub.router("bus"), pub=hub.pub("state"),
        control=hub.router("control"), link=None, store=None, log=logging.getLogger("fuzz"))
    task.set_sources([
        SourceEntry(source_id="ptp:/dev/ptp0", kind="ptp", name="/dev/ptp0", poll_log2=0,
                    poll_min=0, poll_max=0),
        SourceEntry(source_id="ntp:a", kind="ntp", name="a", poll_log2=4, poll_min=4,
                    poll_max=10)], now, ["server"], ["127.0.0.1:123"])
    dealers = {}
    for sender, frame in frames:
        dealer = dealers.setdefault(sender, hub.dealer("bus", sender.encode()))
        assert dealer.send(frame)
    task.step(now)  # must not raise, whatever came in
    stats = task.guard.stats
    handled = sum(s.accepted + s.dropped_total for s in stats.values())
    assert handled == len(frames)  # every frame accepted or dropped with a reason
    assert not any(r.startswith("error:") for s in stats.values() for r in s.dropped), stats
    assert set(task.server_totals()) <= {"127.0.0.1:123"}
