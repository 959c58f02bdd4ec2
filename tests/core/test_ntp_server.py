"""Sans-IO NTP responder: reply contents, policy (access lists, rate limit), batches, fuzzing."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.config import FilterList, ServerConfig
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_server import PHI, Responder, ServerClockState, stamp_transmit
from ntpd_py.core.packet import KISS_DENY, KISS_RATE, Mode, client_request, parse
from ntpd_py.core.timestamps import NTP64_ONE_SECOND, short_to_s, unix_ns_to_ntp64

S = 1_000_000_000
NOW_NTP = unix_ns_to_ntp64(1_700_000_000 * S)
V4 = ipaddress.ip_address("127.0.0.1").packed
OTHER = ipaddress.ip_address("10.1.2.3").packed
SYNCED = ServerClockState(
    synchronized=True, leap=LeapIndicator.NONE, stratum=2, precision_log2=-23,
    root_delay_s=0.010, root_dispersion_s=0.001, reference_id=0xC0000201,
    reference_time_ntp=NOW_NTP - 100 * NTP64_ONE_SECOND,
)


def responder(state: ServerClockState = SYNCED, local_stratum: int = 16, **config: object
              ) -> Responder:
    return Responder(ServerConfig(listen="127.0.0.1:123", **config),  # type: ignore[arg-type]
                     local_stratum=local_stratum, state=state)


def ask(r: Responder, request: bytes, client: bytes = V4, rx: int = NOW_NTP,
        now: int = 0) -> bytes | None:
    out = bytearray(48)
    n = r.respond(request, len(request), client, rx, now, out)
    assert n in (0, 48)
    return bytes(out) if n else None


def test_reply_fields() -> None:
    r = responder()
    request = client_request(0xDEADBEEF_00000001, poll=6)
    out = bytearray(48)
    assert r.respond(request, 48, V4, NOW_NTP, 0, out) == 48
    stamp_transmit(out, NOW_NTP + 5000)
    p = parse(bytes(out))
    assert (p.mode, p.version, p.leap, p.stratum, p.poll) == (Mode.SERVER, 4, 0, 2, 6)
    assert (p.precision, p.reference_id) == (-23, 0xC0000201)
    assert p.reference_ts == SYNCED.reference_time_ntp
    assert p.origin_ts == 0xDEADBEEF_00000001  # the client's transmit timestamp
    assert p.receive_ts == NOW_NTP and p.transmit_ts == NOW_NTP + 5000
    assert short_to_s(p.root_delay) == pytest.approx(0.010, abs=2e-5)
    # Dispersion grew at PHI for 100 s (+1 s of template lifetime), rounded up.
    grown = 0.001 + PHI * 101
    assert grown <= short_to_s(p.root_dispersion) <= grown + 2e-5
    assert r.counters()["received"] == r.counters()["accepted"] == 1


def test_reply_echoes_version_3() -> None:
    reply = ask(responder(), client_request(1, 4, version=3))
    assert reply is not None and parse(reply).version == 3


def test_unsynchronized_state_says_alarm_and_local_stratum() -> None:
    state = ServerClockState.unsynchronized(precision_log2=-20)
    reply = ask(responder(state, local_stratum=16), client_request(1, 4))
    assert reply is not None
    p = parse(reply)
    assert (p.leap, p.stratum) == (LeapIndicator.UNSYNCHRONIZED, 16)
    unsynced = ServerClockState(False, LeapIndicator.NONE, 3, -20, 0.0, 0.0, 0, 0)
    p = parse(ask(responder(unsynced, local_stratum=10), client_request(1, 4)) or b"")
    assert (p.leap, p.stratum) == (LeapIndicator.UNSYNCHRONIZED, 10)


def test_state_change_rebuilds_the_reply() -> None:
    r = responder()
    assert parse(ask(r, client_request(1, 4)) or b"").stratum == 2
    r.set_clock_state(ServerClockState(True, LeapIndicator.INSERT, 3, -20, 0.0, 0.0, 7, NOW_NTP))
    p = parse(ask(r, client_request(2, 4)) or b"")
    assert (p.stratum, p.leap, p.reference_id) == (3, LeapIndicator.INSERT, 7)


@pytest.mark.parametrize(
    ("request_bytes", "counter"),
    [
        (client_request(1, 4)[:47], "malformed"),
        (b"", "malformed"),
        (client_request(1, 4) + bytes(1200), "malformed"),  # oversized
        (client_request(1, 4) + bytes(8), "malformed"),  # bad trailer
        (bytes([(4 << 3) | 4]) + bytes(47), "wrong_mode"),  # a server reply
        (bytes([(4 << 3) | 1]) + bytes(47), "wrong_mode"),  # symmetric active
        (bytes([(2 << 3) | 6]) + bytes(47), "wrong_mode"),  # control
        (bytes([(2 << 3) | 3]) + bytes(47), "bad_version"),
        (bytes([(5 << 3) | 3]) + bytes(47), "bad_version"),
    ],
)
def test_bad_requests_are_dropped_and_counted(request_bytes: bytes, counter: str) -> None:
    r = responder()
    assert ask(r, request_bytes) is None
    c = r.counters()
    assert c[counter] == 1 and c["ignored"] == 1 and c["received"] == 1 and c["accepted"] == 0


def test_accept_ntp_versions() -> None:
    r = responder(accept_ntp_versions=[4])
    assert ask(r, client_request(1, 4, version=3)) is None
    assert r.counters()["bad_version"] == 1


def test_requests_with_extension_fields_or_mac_get_a_plain_reply() -> None:
    r = responder()
    ef = struct.pack(">HH", 0x0104, 36) + bytes(32)
    for request in (client_request(1, 4) + ef, client_request(2, 4) + bytes(20)):
        reply = ask(r, request)
        assert reply is not None and len(reply) == 48


def _kiss(reply: bytes | None) -> tuple[int, int, int, int]:
    assert reply is not None
    p = parse(reply)
    assert p.stratum == 0 and p.leap == LeapIndicator.UNSYNCHRONIZED
    return p.reference_id, p.origin_ts, p.receive_ts, p.poll


def test_denylist_deny_sends_a_deny_kiss() -> None:
    r = responder(denylist=FilterList(filter=["127.0.0.0/8"], action="deny"))
    assert _kiss(ask(r, client_request(77, 5))) == (KISS_DENY, 77, NOW_NTP, 5)
    assert ask(r, client_request(78, 5), client=OTHER) is not None
    c = r.counters()
    assert (c["denied"], c["accepted"], c["received"]) == (1, 1, 2)


def test_denylist_ignore_drops() -> None:
    r = responder(denylist=FilterList(filter=["127.0.0.1/32"], action="ignore"))
    assert ask(r, client_request(1, 4)) is None
    assert r.counters()["ignored"] == 1


def test_allowlist_and_denylist_together() -> None:
    r = responder(allowlist=FilterList(filter=["10.0.0.0/8", "2001:db8::/32"], action="deny"),
                  denylist=FilterList(filter=["10.1.0.0/16"], action="ignore"))
    assert _kiss(ask(r, client_request(1, 4), client=V4))[0] == KISS_DENY  # not allowed
    assert ask(r, client_request(1, 4), client=OTHER) is None  # allowed but denied: ignore
    assert ask(r, client_request(1, 4), client=ipaddress.ip_address("10.9.9.9").packed)
    assert ask(r, client_request(1, 4), client=ipaddress.ip_address("2001:db8::5").packed)
    mapped = ipaddress.ip_address("::ffff:10.9.9.9").packed  # IPv4 client on a dual-stack socket
    assert ask(r, client_request(1, 4), client=mapped)
    assert _kiss(ask(r, client_request(1, 4), client=ipaddress.ip_address("::1").packed))[0] \
        == KISS_DENY


def test_rate_limiting_kisses_once_per_episode() -> None:
    r = responder(rate_limiting_cache_size=64, rate_limiting_cutoff_ms=2000)
    assert ask(r, client_request(1, 4), now=0) is not None
    ref, origin, _, poll = _kiss(ask(r, client_request(2, -3), now=1 * S))
    assert (ref, origin, poll) == (KISS_RATE, 2, 1)  # cutoff 2 s = 2^1 s
    assert ask(r, client_request(3, 4), now=2 * S) is None  # still too fast: dropped
    assert ask(r, client_request(4, 4), client=OTHER, now=2 * S) is not None  # someone else
    assert ask(r, client_request(5, 4), now=4 * S + 1) is not None  # waited long enough
    assert _kiss(ask(r, client_request(6, 8), now=5 * S))[3] == 8  # kiss poll ≥ request's
    c = r.counters()
    assert (c["accepted"], c["rate_limited"], c["received"]) == (3, 3, 6)


def test_rate_limit_table_is_bounded() -> None:
    r = responder(rate_limiting_cache_size=32, rate_limiting_cutoff_ms=1000)
    for i in range(5000):
        ask(r, client_request(i, 4), client=i.to_bytes(4, "big"), now=i)
    limiter = r.rate_limiter
    assert len(limiter._keys) == len(limiter._times) == len(limiter._kissed) == limiter.size == 32
    assert r.counters()["received"] == 5000


def test_rate_limiting_off_without_cutoff() -> None:
    r = responder(rate_limiting_cache_size=64, rate_limiting_cutoff_ms=0)
    assert all(ask(r, client_request(i, 4), now=i) for i in range(10))


# -- batches: the fast path decides exactly like respond() ------------------------------------

requests = st.one_of(
    st.builds(client_request, st.integers(0, 2**64 - 1), st.integers(-128, 127),
              st.sampled_from([3, 4])),
    st.binary(min_size=40, max_size=80),
    st.builds(lambda first, rest: bytes([first]) + rest, st.integers(0, 255),
              st.binary(min_size=47, max_size=47)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(requests, st.sampled_from([V4, OTHER]),
                          st.integers(0, 3 * NTP64_ONE_SECOND)), min_size=1, max_size=20),
       st.sampled_from(["plain", "limited", "filtered"]))
def test_batch_matches_single(batch: list[tuple[bytes, bytes, int]], policy: str) -> None:
    config: dict[str, object] = {}
    if policy == "limited":
        config = {"rate_limiting_cache_size": 8, "rate_limiting_cutoff_ms": 1}
    elif policy == "filtered":
        config = {"denylist": FilterList(filter=["10.0.0.0/8"], action="deny")}
    single, batched = responder(**config), responder(**config)
    stride = 128
    data = bytearray(stride * len(batch))
    for k, (req, _, _) in enumerate(batch):
        data[k * stride : k * stride + len(req)] = req
    rx = [NOW_NTP + dt for _, _, dt in batch]
    out = bytearray(48 * len(batch))
    answered = batched.respond_batch(memoryview(data), stride, [len(q) for q, _, _ in batch],
                                     rx, [c for _, c, _ in batch], 0, out)
    expected = []
    for k, (req, client, _) in enumerate(batch):
        reply = ask(single, req, client=client, rx=rx[k])
        if reply is not None:
            expected.append((k, reply))
    assert answered == [k for k, _ in expected]
    got = [bytes(out[48 * j : 48 * j + 48]) for j in range(len(answered))]

    def without_dispersion(reply: bytes) -> bytes:
        return reply[:8] + reply[12:]

    assert [without_dispersion(g) for g in got] == [without_dispersion(e) for _, e in expected]
    # Root dispersion: both are upper bounds of the true value at that receive time (a
    # template is valid for a range of receive times), no more than a few s of PHI above it.
    for reply, (k, _) in zip(got, expected, strict=True):
        p = parse(reply)
        if p.stratum == 0:
            continue
        true = 0.001 + PHI * (rx[k] - SYNCED.reference_time_ntp) / NTP64_ONE_SECOND
        assert true <= short_to_s(p.root_dispersion) <= true + PHI * 5 + 2 / 65536
    assert batched.counters() == single.counters()


# -- fuzzing ---------------------------------------------------------------------------------


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1300), st.sampled_from([V4, OTHER, bytes(16), b""]),
       st.integers(0, 2**64 - 1), st.booleans())
def test_responder_fuzz(data: bytes, client: bytes, rx: int, strict: bool) -> None:
    config: dict[str, object] = {}
    if strict:
        config = {"rate_limiting_cache_size": 4, "rate_limiting_cutoff_ms": 10,
                  "allowlist": FilterList(filter=["127.0.0.0/8"], action="deny")}
    r = responder(**config)
    reply = ask(r, data, client=client, rx=rx)
    c = r.counters()
    assert c["received"] == 1
    assert c["accepted"] + c["denied"] + c["ignored"] + c["rate_limited"] == 1
    if reply is not None:
        assert len(reply) <= max(len(data), 48)
        assert parse(reply).mode == Mode.SERVER


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 64), st.sampled_from([3, 4]), st.integers(0, 3),
       st.lists(st.integers(0, 2**64 - 1), min_size=64, max_size=64),
       st.lists(st.integers(-128, 127), min_size=64, max_size=64))
def test_uniform_batches_match_single(n: int, version: int, leap: int, origins: list[int],
                                      polls: list[int]) -> None:
    """The bulk path for a batch of plain requests of one version answers like respond()."""
    single, batched = responder(), responder()
    stride = 64
    data = bytearray(stride * n)
    requests = []
    for k in range(n):
        req = bytearray(client_request(origins[k], polls[k], version))
        req[0] |= leap << 6
        requests.append(bytes(req))
        data[k * stride : k * stride + 48] = req
    rx = [NOW_NTP + k * 1000 for k in range(n)]
    out = bytearray(48 * n)
    assert batched.respond_batch(data, stride, [48] * n, rx, None, 0, out) == list(range(n))
    for k in range(n):
        expected = ask(single, requests[k], rx=rx[k])
        assert expected is not None
        got = out[48 * k : 48 * k + 48]
        assert got[:8] + got[12:] == expected[:8] + expected[12:]
        assert abs(int.from_bytes(got[8:12], "big") - int.from_bytes(expected[8:12], "big")) <= 1
    assert batched.counters() == single.counters()


def test_stamp_transmit_batch() -> None:
    from ntpd_py.core.ntp_server import stamp_transmit_batch

    out = bytearray(range(256)) * 2
    stamp_transmit_batch(out, 3, 0x0102030405060708)
    for j in range(3):
        assert out[48 * j + 40 : 48 * j + 48] == bytes(range(1, 9))
        assert out[48 * j : 48 * j + 40] == (bytearray(range(256)) * 2)[48 * j : 48 * j + 40]
    assert out[144:] == (bytearray(range(256)) * 2)[144:]


def test_access_decision_cache_is_bounded() -> None:
    from ntpd_py.core.ntp_server_policy import ACCESS_CACHE_MAX, ALLOW, DENY, AccessPolicy

    policy = AccessPolicy(FilterList(filter=["10.0.0.0/8"], action="deny"), None)
    for i in range(ACCESS_CACHE_MAX + 10):
        policy.decide((0x0A000000 + i).to_bytes(4, "big"))
    assert len(policy._cache) <= ACCESS_CACHE_MAX
    assert policy.decide(V4) == DENY and policy.decide(OTHER) == ALLOW
