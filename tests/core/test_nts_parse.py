"""The NTS server's one-pass request parser against the two-step version it replaced
(``packet.parse``, then a loop over the packet's fields): same result, same error class,
on valid requests and on every kind of broken one."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.errors import PacketError
from ntpd_py.core.nts_extensions import (
    UID_BYTES,
    AesSivCmac256,
    NtsClientRequest,
    NtsError,
    build_client_request,
    parse_client_request,
)
from ntpd_py.core.packet import HEADER_BYTES, HEADER_STRUCT, parse

_EF = struct.Struct(">HH")
C2S = AesSivCmac256(bytes(range(32)))
UID = bytes(range(32))


def two_step(data: bytes) -> NtsClientRequest | None:
    """The former parse_client_request: the packet codec first, then its fields."""
    packet = parse(data)
    uid = cookie = None
    sizes: set[int] = set()
    placeholders = 0
    offset = HEADER_BYTES
    last_type = last_offset = -1
    for ext in packet.extensions:
        if ext.field_type == 0x0204:
            if cookie is not None:
                raise NtsError("more than one cookie")
            cookie = ext.value
        elif ext.field_type == 0x0104:
            if uid is not None:
                raise NtsError("more than one unique identifier")
            uid = ext.value
        elif ext.field_type == 0x0304:
            placeholders += 1
            sizes.add(len(ext.value))
        last_type, last_offset = ext.field_type, offset
        offset += 4 + len(ext.value)
    if cookie is None:
        return None
    if uid is None or len(uid) < UID_BYTES:
        raise NtsError("no unique identifier of at least 32 bytes")
    if sizes - {len(cookie)}:
        raise NtsError("a placeholder differs in size from the cookie")
    if packet.mac is not None or last_type != 0x0404:
        raise NtsError("the authenticator is missing or not the last field")
    value = packet.extensions[-1].value
    nonce_len, ct_len = struct.unpack_from(">HH", value, 0) if len(value) >= 4 else (0, 0)
    if len(value) < 4 or nonce_len < 16 or ct_len < 16:
        raise NtsError("authenticator")
    ct_start = 4 + nonce_len + (-nonce_len % 4)
    if ct_start + ct_len > len(value):
        raise NtsError("authenticator")
    return NtsClientRequest(packet.version, int(packet.mode), packet.poll, packet.transmit_ts,
                            uid, cookie, placeholders, value[4 : 4 + nonce_len],
                            value[ct_start : ct_start + ct_len], last_offset)


def outcome(parser, data: bytes) -> object:  # type: ignore[no-untyped-def]
    try:
        return parser(data)
    except NtsError:
        return NtsError
    except PacketError:
        return PacketError


def request(version: int = 4, mode: int = 3, placeholders: int = 2, cookie: int = 100) -> bytes:
    header = HEADER_STRUCT.pack((version << 3) | mode, 0, -6, 0, 0, 0, 0, 0, 0, 0,
                                0x1122334455667788)
    return build_client_request(header, UID, b"k" * cookie, placeholders, C2S, bytes(16))


@st.composite
def broken(draw: st.DrawFn) -> bytes:
    data = bytearray(request(draw(st.integers(1, 7)), draw(st.integers(0, 7)),
                             draw(st.integers(0, 3)), draw(st.sampled_from([0, 12, 100]))))
    for _ in range(draw(st.integers(0, 4))):
        what = draw(st.integers(0, 4))
        if what == 0 and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif what == 1:
            data = data[: draw(st.integers(0, len(data)))]
        elif what == 2:
            data += draw(st.sampled_from([bytes(4), bytes(20), bytes(24), bytes(16),
                                          _EF.pack(0x0204, 16) + bytes(12),
                                          _EF.pack(0x0104, 36) + bytes(32)]))
        elif what == 3 and len(data) > HEADER_BYTES + 4:
            at = draw(st.integers(HEADER_BYTES, len(data) - 4))
            _EF.pack_into(data, at, draw(st.sampled_from([0x0104, 0x0204, 0x0304, 0x0404])),
                          draw(st.integers(0, 200)))
        else:
            data += draw(st.binary(max_size=40))
    return bytes(data)


def test_a_valid_request_parses_the_same() -> None:
    for placeholders in range(4):
        data = request(placeholders=placeholders)
        fast = parse_client_request(data)
        assert fast is not None and fast == two_step(data)
        assert (fast.poll, fast.transmit_ts, fast.placeholders) == (-6, 0x1122334455667788,
                                                                    placeholders)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(broken(), st.binary(max_size=700)))
def test_both_parsers_agree_on_anything(data: bytes) -> None:
    assert outcome(parse_client_request, data) == outcome(two_step, data)
