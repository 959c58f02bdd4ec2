"""Sans-IO NTP client: polling, burst, reply checks, kiss codes, samples, fuzzing."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.events import LeapIndicator, SourceKind
from ntpd_py.core.ntp_client import (
    BURST_INTERVAL_NS,
    REPLY_WINDOW_NS,
    ClientAction,
    ClientSettings,
    Demobilize,
    DemobilizeReason,
    LocalTime,
    NtpClient,
    Publish,
    ReportUnreachable,
    Send,
    SetTimer,
)
from ntpd_py.core.packet import (
    KISS_DENY,
    KISS_RATE,
    KISS_RSTR,
    Mode,
    NtpPacket,
    parse,
    refid_from_text,
)
from ntpd_py.core.timestamps import s_to_short, unix_ns_to_ntp64

S = 1_000_000_000
T0_REAL = 1_700_000_000 * S  # local realtime when the test starts
T0_MONO = 5_000 * S


def seeded_bytes(seed: int = 1):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def make_client(**overrides: object) -> NtpClient:
    settings = ClientSettings(source_id="test", poll_jitter=0.0, **overrides)  # type: ignore[arg-type]
    return NtpClient(settings, random_bytes=seeded_bytes())


def only(actions: list[ClientAction], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


class Server:
    """Builds replies to a client's requests; its clock is ``offset_s`` ahead of ours."""

    def __init__(self, offset_s: float = 0.0, one_way_s: float = 0.010, stratum: int = 1,
                 **fields: object) -> None:
        self.offset_ns = int(offset_s * S)
        self.one_way_ns = int(one_way_s * S)
        self.stratum = stratum
        self.fields = fields

    def exchange(self, client: NtpClient, request: bytes, sent_real: int,
                 sent_mono: int, **override: object) -> tuple[bytes, LocalTime, LocalTime]:
        req = parse(request)
        t2 = sent_real + self.one_way_ns + self.offset_ns
        t3 = t2 + 1_000  # 1 µs in the server
        t4 = t3 - self.offset_ns + self.one_way_ns
        values: dict[str, object] = dict(
            leap=LeapIndicator.NONE, version=4, mode=Mode.SERVER, stratum=self.stratum, poll=4,
            precision=-20, root_delay=s_to_short(0.001), root_dispersion=s_to_short(0.002),
            reference_id=refid_from_text("GPS"), reference_ts=unix_ns_to_ntp64(t2 - 10 * S),
            origin_ts=req.transmit_ts, receive_ts=unix_ns_to_ntp64(t2),
            transmit_ts=unix_ns_to_ntp64(t3),
        )
        values.update(self.fields)
        values.update(override)
        reply = NtpPacket(**values)  # type: ignore[arg-type]
        sent = LocalTime(sent_real, sent_mono)
        received = LocalTime(t4, sent_mono + (t4 - sent_real))
        return reply.encode(), sent, received


def poll_once(client: NtpClient, now_mono: int) -> tuple[bytes, list[ClientAction]]:
    actions = client.handle_timer(now_mono)
    sends = only(actions, Send)
    assert len(sends) == 1
    return sends[0].data, actions


def real_at(mono: int) -> int:
    return T0_REAL + (mono - T0_MONO)


def test_first_request_leaks_no_local_time() -> None:
    client = make_client()
    data, actions = poll_once(client, T0_MONO)
    req = parse(data)
    assert (req.mode, req.version, req.poll) == (Mode.CLIENT, 4, 4)
    assert req.reference_ts == req.origin_ts == req.receive_ts == 0
    assert req.transmit_ts == int.from_bytes(random.Random(1).randbytes(8), "big")
    assert only(actions, SetTimer) == [SetTimer(T0_MONO + BURST_INTERVAL_NS)]


def test_a_good_reply_becomes_a_sample() -> None:
    client = make_client()
    server = Server(offset_s=0.25, one_way_s=0.010, stratum=1)
    data, _ = poll_once(client, T0_MONO)
    reply, sent, received = server.exchange(client, data, T0_REAL, T0_MONO)
    actions = client.handle_reply(reply, sent, received)
    [publish] = only(actions, Publish)
    s = publish.sample
    assert s.kind is SourceKind.NTP and s.source_id == "test"
    assert s.offset_s == pytest.approx(0.25, abs=1e-9)
    assert s.delay_s == pytest.approx(0.020, abs=1e-9)
    assert s.uncertainty_s == 0.0
    assert (s.stratum, s.leap, s.reference_id) == (1, LeapIndicator.NONE, refid_from_text("GPS"))
    assert s.root_delay_s == pytest.approx(0.001, abs=2e-5)
    assert s.root_dispersion_s == pytest.approx(0.002, abs=2e-5)
    assert s.mono_ns == T0_MONO + (received.mono_ns - T0_MONO) // 2
    assert s.realtime_ns == (T0_REAL + received.realtime_ns) // 2
    assert client.counters["accepted"] == 1
    assert client.status().reach == 1


def test_burst_then_regular_polling() -> None:
    client = make_client(burst_count=4, initial_poll=5, poll_min=4)
    server = Server()
    now = T0_MONO
    deadlines = []
    for _ in range(4):
        data, actions = poll_once(client, now)
        reply, sent, received = server.exchange(client, data, real_at(now), now)
        more = client.handle_reply(reply, sent, received)
        timers = only(actions + more, SetTimer)
        deadlines.append(timers[-1].deadline_mono_ns)
        now = deadlines[-1]
    assert deadlines[:3] == [T0_MONO + (i + 1) * BURST_INTERVAL_NS for i in range(3)]
    # After the fourth answer the burst is over: next poll one interval (2^5 s) later.
    assert deadlines[3] == T0_MONO + 3 * BURST_INTERVAL_NS + 32 * S


def test_unanswered_burst_stops_after_twice_its_length() -> None:
    client = make_client(burst_count=4, startup_unreachable_polls=4)
    now = T0_MONO
    unreachable = []
    for _ in range(8):
        _, actions = poll_once(client, now)
        unreachable += only(actions, ReportUnreachable)
        now = only(actions, SetTimer)[0].deadline_mono_ns
    assert now == T0_MONO + 7 * BURST_INTERVAL_NS + 16 * S
    assert unreachable == [ReportUnreachable(4)]  # reported once
    assert client.status().reach == 0


def test_unreachable_after_the_reach_register_empties_and_again_after_recovery() -> None:
    client = make_client(burst_count=0, unreachable_polls=8)
    server = Server()
    data, _ = poll_once(client, T0_MONO)
    client.handle_reply(*server.exchange(client, data, T0_REAL, T0_MONO))
    events = []
    now = T0_MONO
    for _ in range(9):
        now += 20 * S
        _, actions = poll_once(client, now)
        events += only(actions, ReportUnreachable)
    assert events == [ReportUnreachable(8)]
    assert client.status().unanswered_polls == 8


def test_timer_before_deadline_just_rearms() -> None:
    client = make_client()
    poll_once(client, T0_MONO)
    assert client.handle_timer(T0_MONO + 1) == [SetTimer(T0_MONO + BURST_INTERVAL_NS)]


def test_advise_poll_is_clamped_and_reschedules() -> None:
    client = make_client(burst_count=0, poll_min=4, poll_max=8)
    poll_once(client, T0_MONO)
    assert client.advise_poll(6, T0_MONO) == [SetTimer(T0_MONO + 64 * S)]
    assert client.poll_log2 == 6
    assert client.advise_poll(12, T0_MONO) == [SetTimer(T0_MONO + 256 * S)]
    assert client.advise_poll(1, T0_MONO) == [SetTimer(T0_MONO + 16 * S)]
    assert client.advise_poll(1, T0_MONO) == []  # no change, no timer
    # A poll advised for a deadline already past fires right away.
    assert client.advise_poll(4, T0_MONO + 100 * S) == [SetTimer(T0_MONO + 100 * S)]


def test_advice_waits_for_the_end_of_the_burst() -> None:
    client = make_client(burst_count=4)
    poll_once(client, T0_MONO)
    assert client.advise_poll(8, T0_MONO) == []
    assert client.poll_log2 == 8


# -- replies that must not be used -------------------------------------------------------


def exchange_with(client: NtpClient, **override: object) -> list[ClientAction]:
    now = client.next_deadline_ns or T0_MONO
    data, _ = poll_once(client, now)
    return client.handle_reply(*Server().exchange(client, data, real_at(now), now, **override))


@pytest.mark.parametrize(
    ("override", "outcome"),
    [
        ({"mode": Mode.CLIENT}, "wrong_mode"),
        ({"mode": Mode.BROADCAST}, "wrong_mode"),
        ({"version": 2}, "bad_version"),
        ({"origin_ts": 12345}, "bogus_origin"),
        ({"receive_ts": 0}, "zero_timestamp"),
        ({"transmit_ts": 0}, "zero_timestamp"),
        ({"leap": LeapIndicator.UNSYNCHRONIZED}, "unsynchronized"),
        ({"stratum": 16}, "unsynchronized"),
        ({"stratum": 200}, "unsynchronized"),
        ({"reference_ts": 2**64 - 1}, "bad_reftime"),
        ({"root_dispersion": s_to_short(2.0)}, "root_distance"),
        ({"root_delay": s_to_short(3.0)}, "root_distance"),
        ({"stratum": 0, "reference_id": refid_from_text("INIT")}, "kod_other"),
    ],
)
def test_bad_replies_are_counted_and_dropped(override: dict[str, object], outcome: str) -> None:
    client = make_client()
    assert exchange_with(client, **override) == []
    assert client.counters[outcome] == 1
    assert client.counters["accepted"] == 0
    assert sum(client.counters.values()) == 1


def test_malformed_bytes() -> None:
    client = make_client()
    poll_once(client, T0_MONO)
    assert client.handle_reply(b"\x24" * 20, LocalTime(T0_REAL, T0_MONO), LocalTime(T0_REAL, T0_MONO)) == []
    assert client.counters["malformed"] == 1


def test_stratum_not_below_ours_and_loops_are_refused() -> None:
    client = make_client(max_stratum=3, local_refids=frozenset({0x7F000001}))
    assert exchange_with(client, stratum=4) == []
    assert exchange_with(client, stratum=2, reference_id=0x7F000001) == []
    assert client.counters["stratum"] == 1 and client.counters["loop"] == 1
    # A stratum-1 server's refid names a clock, not an address: no loop possible.
    assert only(exchange_with(client, stratum=1, reference_id=0x7F000001), Publish)


def test_negative_delay_within_precision_is_clamped_beyond_it_refused() -> None:
    client = make_client()
    data, _ = poll_once(client, T0_MONO)
    reply, sent, received = Server(one_way_s=0.0).exchange(client, data, T0_REAL, T0_MONO)
    # Pretend the reply came 500 ns too early: within 2^-20 s + our 100 ns precision.
    early = LocalTime(received.realtime_ns - 500, received.mono_ns - 500)
    [publish] = only(client.handle_reply(reply, sent, early), Publish)
    assert publish.sample.delay_s == 0.0
    data, _ = poll_once(client, T0_MONO + 10 * S)
    reply, sent, received = Server(one_way_s=0.0).exchange(client, data, T0_REAL + 10 * S,
                                                            T0_MONO + 10 * S)
    way_early = LocalTime(received.realtime_ns - 100_000, received.mono_ns - 100_000)
    assert client.handle_reply(reply, sent, way_early) == []
    assert client.counters["bad_delay"] == 1


def test_replayed_and_duplicate_replies_do_nothing() -> None:
    client = make_client()
    data, _ = poll_once(client, T0_MONO)
    exchange = Server().exchange(client, data, T0_REAL, T0_MONO)
    assert only(client.handle_reply(*exchange), Publish)
    assert client.handle_reply(*exchange) == []  # the same datagram again
    assert client.counters["duplicate"] == 1
    # Replayed after the next request went out: its origin is no longer ours.
    poll_once(client, T0_MONO + BURST_INTERVAL_NS)
    assert client.handle_reply(*exchange) == []
    assert client.counters["bogus_origin"] == 1
    assert client.counters["accepted"] == 1


def test_a_reply_to_the_current_request_with_an_old_transmit_time_is_a_duplicate() -> None:
    client = make_client()
    data, _ = poll_once(client, T0_MONO)
    first = parse(Server().exchange(client, data, T0_REAL, T0_MONO)[0])
    client.handle_reply(*Server().exchange(client, data, T0_REAL, T0_MONO))
    data, _ = poll_once(client, T0_MONO + BURST_INTERVAL_NS)
    stale = Server().exchange(client, data, T0_REAL, T0_MONO + BURST_INTERVAL_NS,
                              transmit_ts=first.transmit_ts, receive_ts=first.receive_ts)
    assert client.handle_reply(*stale) == []
    assert client.counters["duplicate"] == 1


def test_late_reply_is_unexpected() -> None:
    client = make_client()
    data, _ = poll_once(client, T0_MONO)
    reply, sent, received = Server().exchange(client, data, T0_REAL, T0_MONO)
    late = LocalTime(received.realtime_ns + REPLY_WINDOW_NS, received.mono_ns + REPLY_WINDOW_NS)
    assert client.handle_reply(reply, sent, late) == []
    assert client.counters["unexpected"] == 1


def test_unsolicited_reply_is_unexpected() -> None:
    client = make_client()
    reply = Server().exchange(client, bytes.fromhex("23" + "00" * 47), T0_REAL, T0_MONO)
    assert client.handle_reply(*reply) == []
    assert client.counters["unexpected"] == 1


# -- kiss codes ----------------------------------------------------------------------------


def test_rate_kiss_raises_the_poll_floor_and_ends_the_burst() -> None:
    client = make_client(burst_count=4, poll_min=4, poll_max=10)
    actions = exchange_with(client, stratum=0, reference_id=KISS_RATE, poll=7)
    assert client.counters["kod_rate"] == 1
    assert not only(actions, Publish)
    assert client.poll_log2 == 7
    assert only(actions, SetTimer) == [SetTimer(T0_MONO + 128 * S)]
    assert client.status().burst_left == 0
    # The algorithm cannot advise its way under the floor.
    client.advise_poll(4, T0_MONO)
    assert client.poll_log2 == 7
    # Another RATE without a useful poll still moves one step up, within the limits.
    data, _ = poll_once(client, T0_MONO + 128 * S)
    client.handle_reply(*Server().exchange(client, data, real_at(T0_MONO + 128 * S),
                                           T0_MONO + 128 * S, stratum=0,
                                           reference_id=KISS_RATE, poll=0))
    assert client.poll_log2 == 8
    assert client.status().rate_floor_log2 == 8


def test_rate_kiss_cannot_push_past_poll_max() -> None:
    client = make_client(poll_max=6)
    exchange_with(client, stratum=0, reference_id=KISS_RATE, poll=17)
    assert client.poll_log2 == 6


@pytest.mark.parametrize(("code", "reason"), [(KISS_DENY, DemobilizeReason.DENY),
                                              (KISS_RSTR, DemobilizeReason.RSTR)])
def test_deny_and_rstr_demobilize(code: int, reason: DemobilizeReason) -> None:
    client = make_client()
    assert exchange_with(client, stratum=0, reference_id=code) == [Demobilize(reason)]


@pytest.mark.parametrize("code", [KISS_RATE, KISS_DENY, KISS_RSTR])
def test_spoofed_kisses_change_nothing(code: int) -> None:
    client = make_client()
    before = client.poll_log2
    assert exchange_with(client, stratum=0, reference_id=code, origin_ts=42, poll=12) == []
    assert client.counters["bogus_origin"] == 1
    assert client.poll_log2 == before and client.status().burst_left == 4


def test_offsets_across_the_2036_era_rollover() -> None:
    era1 = (2**32 - 2_208_988_800) * S
    client = make_client()
    data, _ = poll_once(client, T0_MONO)
    # Our send time is 1 ms before the roll-over, the server's stamps after it.
    exchange = Server(offset_s=0.5).exchange(client, data, era1 - 1_000_000, T0_MONO)
    assert parse(exchange[0]).receive_ts >> 32 == 0  # era 1
    [publish] = only(client.handle_reply(*exchange), Publish)
    assert publish.sample.offset_s == pytest.approx(0.5, abs=1e-9)


# -- fuzzing -------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_datagrams_never_raise_or_publish(data: bytes) -> None:
    client = make_client()
    poll_once(client, T0_MONO)
    before = dataclasses.replace(client.status(), counters={})
    actions = client.handle_reply(data, LocalTime(T0_REAL, T0_MONO), LocalTime(T0_REAL, T0_MONO))
    assert actions == []  # 64 random origin bits cannot be guessed
    assert dataclasses.replace(client.status(), counters={}) == before
    assert sum(client.counters.values()) == 1


@settings(max_examples=300)
@given(st.dictionaries(
    st.sampled_from(["leap", "stratum", "poll", "precision", "root_delay", "root_dispersion",
                     "reference_id", "reference_ts", "receive_ts", "transmit_ts"]),
    st.integers(0, 3), max_size=4))
def test_mutated_replies_are_handled(mutation: dict[str, int]) -> None:
    scale = {"root_delay": 2**28, "root_dispersion": 2**28, "reference_ts": 2**62,
             "receive_ts": 2**62, "transmit_ts": 2**62, "reference_id": 2**30}
    values = {k: (LeapIndicator(v) if k == "leap" else v * scale.get(k, 1))
              for k, v in mutation.items()}
    client = make_client()
    actions = exchange_with(client, **values)
    assert sum(client.counters.values()) == 1
    assert all(isinstance(a, Publish | SetTimer | Demobilize) for a in actions)


def test_jitter_stretches_intervals_by_at_most_the_configured_fraction() -> None:
    settings = ClientSettings(source_id="j", burst_count=0, poll_jitter=0.05)
    client = NtpClient(settings, random_bytes=seeded_bytes(7))
    now = T0_MONO
    for _ in itertools.repeat(None, 20):
        _, actions = poll_once(client, now)
        nxt = only(actions, SetTimer)[0].deadline_mono_ns
        assert 16 * S <= nxt - now <= int(16 * S * 1.05)
        now = nxt
