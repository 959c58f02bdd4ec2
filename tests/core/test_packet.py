"""NTP packet codec: layout, trailers (extension fields / MACs), rejection, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.errors import PacketError
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.packet import (
    HEADER_BYTES,
    KISS_DENY,
    KISS_RATE,
    MAX_PACKET_BYTES,
    ExtensionField,
    Mode,
    NtpPacket,
    client_request,
    kiss_code,
    parse,
    refid_for_address,
    refid_from_text,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i8 = st.integers(-128, 127)

extension_fields = st.builds(
    ExtensionField,
    field_type=st.integers(0, 0xFFFF),
    value=st.integers(3, 40).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
)

packets = st.builds(
    NtpPacket,
    leap=st.sampled_from(LeapIndicator),
    version=st.sampled_from([4]),
    mode=st.sampled_from([m for m in Mode if m not in (Mode.RESERVED, Mode.CONTROL, Mode.PRIVATE)]),
    stratum=st.integers(0, 255),
    poll=i8,
    precision=i8,
    root_delay=u32,
    root_dispersion=u32,
    reference_id=u32,
    reference_ts=u64,
    origin_ts=u64,
    receive_ts=u64,
    transmit_ts=u64,
    extensions=st.lists(extension_fields, max_size=3).map(tuple),
    mac=st.one_of(st.none(), st.sampled_from([4, 20, 24]).flatmap(
        lambda n: st.binary(min_size=n, max_size=n))),
)


def _header(first: int = 0x23, **fields: int) -> bytes:
    return struct.pack(">BBbbIIIQQQQ", first, fields.get("stratum", 2), 6, -20, 1, 2, 3, 4, 5,
                       6, fields.get("transmit", 7))


def _rfc7822_unambiguous(packet: NtpPacket) -> bool:
    """RFC 7822: with fields, a MAC is 20/24 bytes and a MAC-less last field ≥ 28 bytes."""
    if not packet.extensions:
        return True
    if packet.mac is None:
        return len(packet.extensions[-1].value) + 4 >= 28
    return len(packet.mac) in (20, 24)


@given(packets.filter(_rfc7822_unambiguous))
def test_encode_parse_round_trip(packet: NtpPacket) -> None:
    wire = packet.encode()
    if len(wire) > MAX_PACKET_BYTES:
        with pytest.raises(PacketError):
            parse(wire)
        return
    assert parse(wire) == packet
    assert parse(bytearray(wire)) == packet
    assert parse(memoryview(wire)) == packet


def test_field_layout() -> None:
    p = parse(_header(first=(1 << 6) | (4 << 3) | 4, stratum=3))
    assert (p.leap, p.version, p.mode, p.stratum) == (LeapIndicator.INSERT, 4, Mode.SERVER, 3)
    assert (p.poll, p.precision, p.root_delay, p.root_dispersion, p.reference_id) == (6, -20, 1, 2, 3)
    assert (p.reference_ts, p.origin_ts, p.receive_ts, p.transmit_ts) == (4, 5, 6, 7)
    assert p.extensions == () and p.mac is None


def test_client_request_carries_nothing_but_mode_poll_and_transmit() -> None:
    wire = client_request(0x1122334455667788, poll=6)
    assert len(wire) == HEADER_BYTES
    assert wire[0] == (4 << 3) | 3 and wire[2] == 6
    assert wire[40:] == bytes.fromhex("1122334455667788")
    assert wire[1:2] + wire[3:40] == bytes(38)  # no local time, no stratum, no refid
    assert parse(client_request(1, poll=4, version=3)).version == 3


@pytest.mark.parametrize("length", [0, 1, 47])
def test_short_packets_are_rejected(length: int) -> None:
    with pytest.raises(PacketError, match="short"):
        parse(_header()[:length])


@pytest.mark.parametrize("version", [0, 5, 6, 7])
def test_unsupported_versions_are_rejected(version: int) -> None:
    with pytest.raises(PacketError, match="version"):
        parse(_header(first=(version << 3) | 3))


@pytest.mark.parametrize("mode", [0, 6, 7])
def test_modes_with_another_layout_are_rejected(mode: int) -> None:
    with pytest.raises(PacketError, match="mode"):
        parse(_header(first=(4 << 3) | mode))


@pytest.mark.parametrize(
    ("trailer", "fields", "mac"),
    [
        (bytes(4), 0, 4),  # crypto-NAK
        (bytes(20), 0, 20),  # key id + MD5
        (bytes(24), 0, 24),  # key id + SHA-1
        (struct.pack(">HH", 0x0104, 16) + bytes(12), 1, None),
        (struct.pack(">HH", 0x0104, 16) + bytes(12) + bytes(20), 1, 20),
        (struct.pack(">HH", 1, 28) + bytes(24) + struct.pack(">HH", 2, 32) + bytes(28), 2, None),
    ],
)
def test_v4_trailers(trailer: bytes, fields: int, mac: int | None) -> None:
    p = parse(_header() + trailer)
    assert len(p.extensions) == fields
    assert (None if p.mac is None else len(p.mac)) == mac


@pytest.mark.parametrize(
    "trailer",
    [
        bytes(8),  # neither a MAC nor a field
        struct.pack(">HH", 1, 12) + bytes(8),  # field shorter than 16
        struct.pack(">HH", 1, 18) + bytes(14),  # not a multiple of 4
        struct.pack(">HH", 1, 64) + bytes(12),  # longer than the packet
        struct.pack(">HH", 1, 16) + bytes(12) + bytes(12),  # junk after a field
    ],
)
def test_malformed_v4_trailers(trailer: bytes) -> None:
    with pytest.raises(PacketError):
        parse(_header() + trailer)


def test_v3_only_carries_a_mac() -> None:
    assert parse(_header(first=(3 << 3) | 3) + bytes(20)).mac == bytes(20)
    with pytest.raises(PacketError):
        parse(_header(first=(3 << 3) | 3) + bytes(18))
    with pytest.raises(PacketError):
        parse(_header(first=(3 << 3) | 3) + bytes(72))


def test_oversized_packets_are_rejected() -> None:
    big = _header() + struct.pack(">HH", 1, 1100) + bytes(1096)
    with pytest.raises(PacketError, match="oversized"):
        parse(big)


def test_kiss_codes_and_refids() -> None:
    assert refid_from_text("RATE") == KISS_RATE == 0x52415445
    assert kiss_code(KISS_DENY) == "DENY"
    assert kiss_code(refid_from_text("X")) == "X"
    assert kiss_code(0x01020304) == "????"
    with pytest.raises(ValueError):
        refid_from_text("TOOLONG")


def test_extension_field_encoding_checks_length() -> None:
    with pytest.raises(ValueError):
        ExtensionField(1, bytes(8)).encode()
    assert ExtensionField(1, bytes(12)).encode()[:4] == struct.pack(">HH", 1, 16)


# -- fuzzing: nothing but PacketError may leave the parser -------------------------------


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1300))
def test_parser_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        packet = parse(data)
    except PacketError:
        return
    assert HEADER_BYTES <= len(data) <= MAX_PACKET_BYTES
    assert packet.encode() == data  # whatever parses re-encodes to the same bytes


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 255), st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 80)),
                                     max_size=4), st.binary(max_size=80))
def test_parser_fuzz_structured_trailers(first: int, fields: list[tuple[int, int]],
                                         tail: bytes) -> None:
    data = bytearray(_header(first=first))
    for field_type, length in fields:
        data += struct.pack(">HH", field_type, length) + bytes(max(length - 4, 0))
    data += tail
    try:
        packet = parse(bytes(data))
    except PacketError:
        return
    assert packet.encode() == bytes(data)


def test_refid_for_address() -> None:
    import hashlib

    assert refid_for_address("192.0.2.1") == 0xC0000201
    assert refid_for_address("::ffff:192.0.2.1") == 0xC0000201
    digest = hashlib.md5(bytes.fromhex("20010db8" + "00" * 11 + "01")).digest()
    assert refid_for_address("2001:db8::1") == int.from_bytes(digest[:4], "big")
