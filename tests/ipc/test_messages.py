"""Every message type round-trips through the framing; every malformed frame is rejected."""

from __future__ import annotations

import contextlib
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.events import LeapIndicator, Sample, SourceKind
from ntpd_py.ipc.framing import MalformedMessage, decode, encode
from ntpd_py.ipc.messages import (
    REGISTRY,
    SCHEMA_VERSION,
    ClockStateMsg,
    CtlReply,
    CtlRequest,
    DeviceReply,
    DeviceRequest,
    Heartbeat,
    LogControl,
    MsgType,
    NtsKeyset,
    PeerFailed,
    PollAdvice,
    ProcessInfo,
    ProcessTable,
    SampleMsg,
    ServerAdvice,
    ServerStats,
    SourceEntry,
    SourceSet,
    SourceStatus,
    SourceView,
    SteeringBounds,
    SystemView,
    Unreachable,
)
from pydantic import ValidationError

SAMPLE = Sample(source_id="ptp:/dev/ptp0", kind=SourceKind.PTP, offset_s=1.5e-7, delay_s=4e-7,
                uncertainty_s=1e-8, root_delay_s=0.0, root_dispersion_s=0.0, stratum=1,
                leap=LeapIndicator.NONE, reference_id=0x50484330, mono_ns=123_456_789,
                realtime_ns=1_790_000_000_123_456_789, poll_log2=0)
SYSTEM = SystemView(synchronized=True, clock_backend="simulated", offset_s=1e-9,
                    offset_uncertainty_s=2e-9, frequency_ppm=20.0, frequency_uncertainty_ppm=0.01,
                    stratum=2, reference_id=1, root_delay_s=0.0, root_dispersion_s=1e-6, leap=0,
                    precision_log2=-23, steps=1, accumulated_steps_s=0.05,
                    last_update_age_s=0.5, reference_time_ns=None)
VIEW = SourceView(source_id="ptp:/dev/ptp0", kind="ptp", name="/dev/ptp0", resolved=None,
                  state="*", worker_state="running", detail="", offset_s=1e-9,
                  uncertainty_s=1e-9, delay_s=4e-7, last_offset_s=2e-9, poll_log2=0, reach=255,
                  samples=10, last_sample_age_s=0.2, stratum=1, reference_id=5,
                  root_delay_s=0.0, root_dispersion_s=0.0, method="extended",
                  last_window_s=4e-7, counters={"samples": 10})
PROC = ProcessInfo(worker_id="clock-control", role="clock-control", pid=42, user="ntpd-py",
                   state="running", uptime_s=3.0, restarts=0, rss_bytes=1 << 24, cpu_percent=0.1)
STATE = ClockStateMsg(mono_ns=1, realtime_ns=2, system=SYSTEM, sources=[VIEW])
EXAMPLES = [
    SampleMsg.from_sample(SAMPLE),
    SourceStatus(source_id="ntp:a", kind="ntp", name="a", state="running", poll_log2=4,
                 reach=7, counters={"bad_origin": 1}),
    Unreachable(source_id="ntp:a", reason="no reply"),
    ServerStats(listen="127.0.0.1:123", counters={"received": 5}),
    PollAdvice(source_id="ntp:a", poll_log2=6),
    ServerAdvice(source_id="nts-pool:pool.example:4460#2", reason="same NTP server"),
    STATE,
    Heartbeat(worker_id="ptp:/dev/ptp0", mono_ns=5),
    Heartbeat(worker_id="clock-control", mono_ns=6, status="synchronized to /dev/ptp0"),
    ProcessTable(processes=[PROC]),
    DeviceRequest(worker_id="ptp:/dev/ptp0"),
    DeviceReply(ok=False, errno=2, message="missing"),
    CtlRequest(command="status"),
    CtlReply(ok=True, clock=STATE, processes=[PROC], ipc={"rate-limited": 3}),
    CtlReply(ok=True, processes=[PROC.model_copy(update={"role": "metrics", "cpu_seconds": 1.5,
                                                         "link_malformed": 2})],
             servers={"127.0.0.1:123": {"received": 4}}),
    LogControl(level="debug", timestamps=False),
    SourceSet(sources=[SourceEntry(source_id="ptp:/dev/ptp0", kind="ptp", name="/dev/ptp0",
                                   poll_log2=0, poll_min=0, poll_max=0)]),
    PeerFailed(worker_id="pool:p/192.0.2.1", reason="falseticker"),
    SteeringBounds(steps=1, accumulated_steps_s=0.05, startup_over=True),
    NtsKeyset(keyset=b'{"format": "ntpd-py-nts-keyset"}'),
]


def test_every_type_has_an_example() -> None:
    assert {type(m).TYPE for m in EXAMPLES} == set(MsgType) == set(REGISTRY)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message) -> None:
    assert decode(encode(message), max_size=1 << 20) == message


def test_sample_round_trip_is_exact() -> None:
    back = decode(encode(SampleMsg.from_sample(SAMPLE)))
    assert isinstance(back, SampleMsg)
    assert back.to_sample() == SAMPLE


def _frame(*parts) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


GOOD_PAYLOAD = SampleMsg.from_sample(SAMPLE).model_dump()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc1garbage", "undecodable"),
        (_frame(SCHEMA_VERSION, 1), "bad-envelope"),
        (msgpack.packb({"a": 1}), "bad-envelope"),
        (_frame(99, 1, GOOD_PAYLOAD), "wrong-version"),
        (_frame(True, 1, GOOD_PAYLOAD), "wrong-version"),
        (_frame(SCHEMA_VERSION, 999, GOOD_PAYLOAD), "unknown-type"),
        (_frame(SCHEMA_VERSION, "1", GOOD_PAYLOAD), "unknown-type"),
        (_frame(SCHEMA_VERSION, 1, [1, 2]), "bad-payload"),
        (_frame(SCHEMA_VERSION, 1, {**GOOD_PAYLOAD, "extra": 1}), "invalid"),
        (_frame(SCHEMA_VERSION, 1, {**GOOD_PAYLOAD, "offset_s": "0.1"}), "invalid"),
        (_frame(SCHEMA_VERSION, 1, {**GOOD_PAYLOAD, "offset_s": math.nan}), "invalid"),
        (_frame(SCHEMA_VERSION, 1, {**GOOD_PAYLOAD, "delay_s": -1.0}), "invalid"),
        (_frame(SCHEMA_VERSION, 1, {**GOOD_PAYLOAD, "leap": 7}), "invalid"),
        (_frame(SCHEMA_VERSION, 1, {**GOOD_PAYLOAD, "mono_ns": 1.5}), "invalid"),
        (_frame(SCHEMA_VERSION, 1, {k: v for k, v in GOOD_PAYLOAD.items() if k != "stratum"}),
         "invalid"),
        (b"\x00" * 70_000, "oversized"),
    ],
)
def test_malformed_frames_rejected(frame: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode(frame)
    assert info.value.reason == reason


def test_unexpected_type_rejected() -> None:
    with pytest.raises(MalformedMessage) as info:
        decode(encode(CtlRequest(command="status")), {MsgType.SAMPLE})
    assert info.value.reason == "unexpected-type"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape(frame: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(frame)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=5)
                    | st.binary(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c,
                                                                        max_size=4),
                    max_leaves=20), st.sampled_from(list(MsgType)))
def test_arbitrary_payloads_never_escape(payload, msg_type) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(_frame(SCHEMA_VERSION, int(msg_type), payload))


@pytest.mark.parametrize("fields", [
    {"steps": -1, "accumulated_steps_s": 0.0, "startup_over": False},
    {"steps": 0, "accumulated_steps_s": -0.5, "startup_over": False},
    {"steps": 0, "accumulated_steps_s": math.inf, "startup_over": False},
    {"steps": 0, "accumulated_steps_s": math.nan, "startup_over": False},
    {"steps": 0, "accumulated_steps_s": 1e308, "startup_over": False},
    {"steps": 2**40, "accumulated_steps_s": 0.0, "startup_over": False},
    {"steps": 0, "accumulated_steps_s": 0.0, "startup_over": 1},
])
def test_steering_bounds_rejects_absurd_values(fields: dict) -> None:
    with pytest.raises(ValidationError):
        SteeringBounds(**fields)
