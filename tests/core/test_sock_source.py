"""core/sock_source.py: a sock source fed with datagrams (time passed in)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.config import SockSourceConfig
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.refclock_events import Publish, Report, SetTimer
from ntpd_py.core.refclock_sock import encode_sock_sample
from ntpd_py.core.sock_source import (
    REJECTIONS_BEFORE_REPORT,
    SILENCE_NS,
    SOCK_TRANSITIONS,
    SockEvent,
    SockSource,
    SockState,
)

from tests.fsm_walk import walk_table

NS = 1_000_000_000
REAL0 = 1_795_000_000 * NS
MONO0 = 5_000 * NS


def source(precision: float = 1e-3, accuracy: float | None = None) -> SockSource:
    table: dict[str, object] = {"mode": "sock", "path": "/run/chrony.ttyS0.sock",
                                "precision": precision}
    if accuracy is not None:
        table["accuracy"] = accuracy
    return SockSource(SockSourceConfig.model_validate(table), "sock:/run/chrony.ttyS0.sock")


def published(actions: list[object]) -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish)]


def test_transition_table_walk() -> None:
    illegal = walk_table(SOCK_TRANSITIONS, SockState, SockEvent)
    assert (SockState.WAITING, SockEvent.QUIET) in illegal


def test_good_samples_are_published_with_precision_and_the_feeders_instant() -> None:
    src = source(precision=2e-3, accuracy=5e-3)
    assert src.start(MONO0) == [SetTimer(MONO0 + SILENCE_NS)]
    offsets = []
    for i in range(5):
        stamp = REAL0 + i * NS + 123_000
        # received 80 ms after the stamp
        actions = src.handle_datagram(encode_sock_sample(stamp, 0.0123 + i * 1e-4),
                                      MONO0 + i * NS + 80_000_000 + 123_000, stamp + 80_000_000)
        (pub,) = published(actions)
        s = pub.sample
        assert s.kind is SourceKind.SOCK and s.uncertainty_s == 2e-3
        assert s.root_dispersion_s == 5e-3
        assert s.realtime_ns == stamp and s.mono_ns == MONO0 + i * NS + 123_000
        assert s.leap is LeapIndicator.NONE and s.stratum == 0
        offsets.append(s.offset_s)
        if i == 0:
            assert any(isinstance(a, Report) for a in actions)
            assert src.state is SockState.RUNNING
    assert offsets == pytest.approx([0.0123 + i * 1e-4 for i in range(5)])
    assert s.poll_log2 == 0
    assert src.status().samples == 5 and src.status().drops == {}


def test_measurement_noise_estimate_is_the_square_of_precision() -> None:
    cfg = SockSourceConfig.model_validate({"mode": "sock", "path": "/s",
                                           "measurement_noise_estimate": 1e-6})
    src = SockSource(cfg, "s")
    (pub,) = published(src.handle_datagram(encode_sock_sample(REAL0, 0.0), MONO0, REAL0))
    assert math.isclose(pub.sample.uncertainty_s, 1e-3)


@pytest.mark.parametrize(("data_kwargs", "recv_delta_ns", "reason"), [
    ({"magic": 1}, 0, "wrong-magic"),
    ({"offset_s": math.nan}, 0, "offset-not-finite"),
    ({"offset_s": 1e12}, 0, "offset-absurd"),
    ({"pulse": True}, 0, "pulse"),
    ({"leap": 3}, 0, "unsynchronized"),
    ({}, 5 * NS, "stale"),
    ({}, -NS, "ahead"),
])
def test_bad_datagrams_are_dropped_and_counted(data_kwargs: dict[str, object],
                                               recv_delta_ns: int, reason: str) -> None:
    src = source()
    kwargs: dict[str, object] = {"offset_s": 0.001, **data_kwargs}
    offset = kwargs.pop("offset_s")
    data = encode_sock_sample(REAL0, offset, **kwargs)  # type: ignore[arg-type]
    assert published(src.handle_datagram(data, MONO0, REAL0 + recv_delta_ns)) == []
    assert src.status().drops == {reason: 1}
    assert src.state is SockState.WAITING


def test_wrong_size_and_replay_and_flood() -> None:
    src = source()
    assert src.handle_datagram(b"\0" * 39, MONO0, REAL0) == []
    good = encode_sock_sample(REAL0, 0.001)
    assert published(src.handle_datagram(good, MONO0, REAL0))
    assert src.handle_datagram(good, MONO0 + NS, REAL0 + 10_000_000) == []  # same stamp again
    newer = encode_sock_sample(REAL0 + 1_000_000, 0.001)
    assert src.handle_datagram(newer, MONO0 + 1_000_000, REAL0 + 1_000_000) == []  # 1 ms later
    assert src.status().drops == {"wrong-size": 1, "not-newer": 1, "flood": 1}
    assert src.state is SockState.RUNNING


def test_rejecting_after_drops_in_a_row_then_recovers() -> None:
    src = source()
    reports = []
    for i in range(REJECTIONS_BEFORE_REPORT + 2):
        actions = src.handle_datagram(b"junk", MONO0 + i, REAL0 + i)
        reports += [a for a in actions if isinstance(a, Report)]
    assert src.state is SockState.REJECTING
    assert len(reports) == 1 and "5 datagrams in a row" in src.status().message
    actions = src.handle_datagram(encode_sock_sample(REAL0, 0.0), MONO0, REAL0)
    assert published(actions) and src.state is SockState.RUNNING


def test_silence_is_reported_and_a_new_sample_recovers() -> None:
    src = source()
    src.start(MONO0)
    assert src.handle_timer(MONO0 + SILENCE_NS) == [SetTimer(MONO0 + 2 * SILENCE_NS)]
    assert src.state is SockState.WAITING  # never had a sample: still waiting
    src.handle_datagram(encode_sock_sample(REAL0, 0.0), MONO0 + SILENCE_NS + 1, REAL0)
    assert src.handle_timer(MONO0 + 2 * SILENCE_NS) == [SetTimer(MONO0 + 2 * SILENCE_NS + 1)]
    actions = src.handle_timer(MONO0 + 2 * SILENCE_NS + 1)
    assert src.state is SockState.SILENT and any(isinstance(a, Report) for a in actions)
    assert "no sample" in src.status().message
    src.handle_datagram(encode_sock_sample(REAL0 + 20 * NS, 0.0), MONO0 + 40 * NS, REAL0 + 20 * NS)
    assert src.state is SockState.RUNNING


@given(st.lists(st.binary(max_size=48), max_size=30))
def test_arbitrary_bytes_never_raise_and_every_datagram_is_accounted(blobs: list[bytes]) -> None:
    src = source()
    for i, blob in enumerate(blobs):
        src.handle_datagram(blob, MONO0 + i * NS, REAL0 + i * NS)
    status = src.status()
    assert status.samples + sum(status.drops.values()) == len(blobs)


@given(st.lists(st.floats(-10.0, 10.0, allow_nan=False), min_size=1, max_size=20),
       st.integers(100_000_000, 3 * NS))
def test_offsets_pass_through_unchanged(offsets: list[float], gap_ns: int) -> None:
    src = source()
    got = []
    for i, off in enumerate(offsets):
        stamp = REAL0 + i * gap_ns
        got += [p.sample.offset_s for p in published(
            src.handle_datagram(encode_sock_sample(stamp, off), MONO0 + i * gap_ns, stamp))]
    assert got == offsets


def test_good_samples_read_in_one_wakeup_are_all_accepted() -> None:
    """A slow wake-up finds several samples queued; they share its receive instant."""
    src = source()
    recv_real = REAL0 + 3 * NS
    got = []
    for i in range(3):
        got += published(src.handle_datagram(encode_sock_sample(REAL0 + i * NS, 0.001 * i),
                                             MONO0, recv_real))
    assert [p.sample.offset_s for p in got] == [0.0, 0.001, 0.002]
    assert [p.sample.mono_ns for p in got] == [MONO0 - 3 * NS, MONO0 - 2 * NS, MONO0 - NS]
