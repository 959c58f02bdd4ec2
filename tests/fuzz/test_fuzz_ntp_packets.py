"""Fuzzing in the default run: hostile NTP bytes against the parser, the server, the client.

The bounded hypothesis counterpart of fuzz_ntp.py (atheris, by hand): arbitrary
bytes and mutated valid packets (client requests with extension fields and MACs,
server replies to a real outstanding request) must give a parsed packet, a reply
or a counted rejection — never an exception; a reply is 48 bytes and never larger
than its request; modes other than 3 and versions other than the accepted ones
get nothing. A crash found here becomes a regression test in tests/core.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.config import FilterList, ServerConfig
from ntpd_py.core.errors import PacketError
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_client import ClientSettings, LocalTime, NtpClient
from ntpd_py.core.ntp_client_types import Send
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.packet import (
    HEADER_BYTES,
    MAX_PACKET_BYTES,
    ExtensionField,
    NtpPacket,
    client_request,
    parse,
)

NOW_NTP = 0xE8FE_6F1C_0000_0000
STATE = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.001, 0.001, 1, NOW_NTP)
LOCALHOST = b"\x7f\x00\x00\x01"
FUZZ = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# --- inputs ------------------------------------------------------------------------------------

_extension = st.builds(
    lambda t, value: ExtensionField(t, value).encode(),
    st.integers(0, 0xFFFF),
    st.integers(3, 70).map(lambda n: bytes(4 * n)),
)
_trailer = st.one_of(
    st.just(b""),
    st.lists(_extension, min_size=1, max_size=4).map(b"".join),  # RFC 7822 fields
    st.sampled_from([20, 24, 68]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),  # MAC
    st.binary(max_size=1200),  # garbage, oversized too
)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid client request, then broken a little: header byte, trailer, flips, cuts."""
    version = draw(st.integers(1, 7))
    data = bytearray(client_request(draw(st.integers(0, 2**64 - 1)), draw(st.integers(-128, 127)),
                                    version=4))
    data[0] = draw(st.one_of(  # LI / version / mode, the byte servers dispatch on
        st.just((data[0] & 0xC7) | (version << 3)), st.integers(0, 255)))
    data += draw(_trailer)
    for _ in range(draw(st.integers(0, 4))):  # byte flips anywhere
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated
    return bytes(data)


packets = st.one_of(st.binary(max_size=1300), mutated_requests())

# --- the parser --------------------------------------------------------------------------------


@FUZZ
@given(packets)
def test_parser_returns_a_packet_or_a_packet_error(data: bytes) -> None:
    try:
        packet = parse(data)
    except PacketError:
        return
    assert isinstance(packet, NtpPacket)
    assert 1 <= packet.version <= 4 and len(data) <= MAX_PACKET_BYTES
    assert len(data) >= HEADER_BYTES


# --- the server --------------------------------------------------------------------------------


def _responders() -> list[Responder]:
    plain = Responder(ServerConfig(listen="127.0.0.1:123"), state=STATE)
    guarded = Responder(ServerConfig(listen="127.0.0.1:123", rate_limiting_cache_size=16,
                                     rate_limiting_cutoff_ms=1,
                                     allowlist=FilterList(filter=["127.0.0.0/8"],
                                                          action="deny")), state=STATE)
    return [plain, guarded]


def _outcomes(r: Responder) -> int:
    return r.accepted + r.ignored + r.denied + r.rate_limited


@FUZZ
@given(st.lists(packets, min_size=1, max_size=6))
def test_server_answers_or_counts_never_raises_never_amplifies(datas: list[bytes]) -> None:
    for responder in _responders():
        for i, data in enumerate(datas):
            out = bytearray(64)
            before = (responder.received, _outcomes(responder))
            n = responder.respond(data, len(data), LOCALHOST, NOW_NTP + i, i * 10**6, out)
            assert (responder.received, _outcomes(responder)) == (before[0] + 1, before[1] + 1)
            assert n in (0, 48) and n <= len(data)
            first = data[0] if data else 0
            mode, version = first & 7, (first >> 3) & 7
            if n:
                assert mode == 3 and version in (3, 4), data[:1]
                assert len(data) >= HEADER_BYTES
                assert out[0] & 7 == 4 and (out[0] >> 3) & 7 == version
                assert out[24:32] == data[40:48]  # the client's transmit as origin
            if mode != 3 or version not in (3, 4):
                assert n == 0  # modes 6/7, broadcasts, versions 1, 2, 5+: nothing at all


@FUZZ
@given(st.lists(packets, min_size=1, max_size=8))
def test_batch_path_agrees_with_the_single_path(datas: list[bytes]) -> None:
    single, batched = (Responder(ServerConfig(listen="127.0.0.1:123"), state=STATE)
                       for _ in range(2))
    stride = max(HEADER_BYTES, *(len(d) for d in datas))
    buf = bytearray(b"".join(d.ljust(stride, b"\0") for d in datas))
    rx = [NOW_NTP + i for i in range(len(datas))]
    out = bytearray(48 * len(datas))
    answered = batched.respond_batch(buf, stride, [len(d) for d in datas], rx, None, 0, out)
    expected = []
    for i, data in enumerate(datas):
        one = bytearray(48)
        if single.respond(data, len(data), b"", rx[i], 0, one):
            expected.append((i, bytes(one)))
    assert [(i, bytes(out[48 * j : 48 * j + 48])) for j, i in enumerate(answered)] == expected
    assert single.counters() == batched.counters()


# --- the client's reply handling ---------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=1300), mutated_requests()),
       st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), max_size=4),
       st.booleans(), st.integers(0, 3))
def test_client_checks_any_reply_and_counts_it(garbage: bytes,
                                              flips: list[tuple[int, int]],
                                              use_garbage: bool, trailer_words: int) -> None:
    client = NtpClient(ClientSettings(source_id="fuzz"), random_bytes=lambda n: b"\x11" * n)
    sends = [a for a in client.handle_timer(0) if isinstance(a, Send)]
    assert len(sends) == 1
    if use_garbage:
        reply = garbage
    else:
        out = bytearray(48)
        assert Responder(ServerConfig(listen="127.0.0.1:123"), state=STATE).respond(
            sends[0].data, 48, LOCALHOST, NOW_NTP, 0, out) == 48
        mutated = bytearray(out)
        for at, value in flips:
            mutated[at] = value
        mutated += struct.pack(">HH", 0x0104, 4 + 4 * trailer_words)[: 4 * bool(trailer_words)]
        reply = bytes(mutated)
    sent = LocalTime(realtime_ns=1_700_000_000 * 10**9, mono_ns=10**12)
    received = LocalTime(realtime_ns=sent.realtime_ns + 10**6, mono_ns=sent.mono_ns + 10**6)
    total = sum(client.counters.values())
    client.handle_reply(reply, sent, received)
    assert sum(client.counters.values()) == total + 1  # exactly one outcome counted
