"""NTS core: KE records, NTS extension fields, the client's cookie jar, the server's keyset."""

from __future__ import annotations

import contextlib
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.errors import PacketError
from ntpd_py.core.nts_cookies import CookieJar, JarState, KeysetError, NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    FieldType,
    NtsError,
    build_client_request,
    build_server_reply,
    encode_field,
    is_nts_nak,
    max_placeholders,
    nts_nak,
    open_client_request,
    open_server_reply,
    parse_client_request,
    parse_fields,
    request_size,
)
from ntpd_py.core.nts_ke_records import (
    MAX_MESSAGE_BYTES,
    FailureKind,
    KeErrorCode,
    KeFailure,
    KeRecordError,
    KeRequest,
    KeResponse,
    Record,
    RecordType,
    client_request,
    encode_records,
    error_response,
    exporter_context,
    parse_client_response,
    parse_message,
    parse_server_request,
    server_response,
)
from ntpd_py.core.packet import HEADER_STRUCT, parse
from ntpd_py.core.packet import client_request as ntp_request

END = Record(RecordType.END_OF_MESSAGE, b"", True)
PROTO = Record(RecordType.NEXT_PROTOCOL, b"\0\0", True)
AEAD = Record(RecordType.AEAD_ALGORITHM, struct.pack(">H", 15), True)


def cookie_rec(body: bytes = b"c" * 100) -> Record:
    return Record(RecordType.NEW_COOKIE, body)


def parse_response(records: list[Record]) -> KeResponse | KeFailure:
    parsed = parse_message(encode_records([*records, END]))
    assert parsed is not None
    return parse_client_response(parsed)


# --- KE records -------------------------------------------------------------------------------


def test_client_request_is_what_servers_expect() -> None:
    records = parse_message(client_request())
    assert records == (PROTO, AEAD)
    assert parse_server_request(records) == KeRequest(0, 15, None, None, (15,))


def test_response_roundtrip_with_negotiation() -> None:
    cookies = [bytes([i]) * 100 for i in range(8)]
    data = server_response(0, 15, cookies, server="ntp.example", port=11123)
    records = parse_message(data)
    assert records is not None
    result = parse_client_response(records)
    assert result == KeResponse(0, 15, tuple(cookies), "ntp.example", 11123)


def test_incomplete_message_waits_for_more() -> None:
    data = server_response(0, 15, [b"x" * 100])
    for cut in range(len(data)):
        assert parse_message(data[:cut]) is None
    assert parse_message(data) is not None


@pytest.mark.parametrize(("record", "fragment"), [
    (Record(RecordType.END_OF_MESSAGE, b"", False), "without the critical bit"),
    (Record(RecordType.NEXT_PROTOCOL, b"\0\0", False), "without the critical bit"),
    (Record(RecordType.NEW_COOKIE, b"c" * 8, True), "with the critical bit"),
    (Record(RecordType.ERROR, b"\0", True), "expected 2"),
    (Record(RecordType.NTPV4_PORT, b"\0\0\0", True), "expected 2"),
    (Record(RecordType.AEAD_ALGORITHM, b"\0\x0f\0", True), "u16"),
    (Record(RecordType.NEW_COOKIE, b"c" * 257), "cookie of 257"),
    (Record(RecordType.NTPV4_SERVER, b"bad host", True), "printable"),
])
def test_malformed_records_are_refused(record: Record, fragment: str) -> None:
    with pytest.raises(KeRecordError, match=fragment):
        parse_message(encode_records([record, END]))


def test_bytes_after_end_and_oversized_messages_are_refused() -> None:
    with pytest.raises(KeRecordError, match="after End"):
        parse_message(client_request() + b"\0")
    with pytest.raises(KeRecordError, match="longer than"):
        parse_message(bytes(MAX_MESSAGE_BYTES + 1))
    with pytest.raises(KeRecordError, match="End of Message with a body"):
        parse_message(encode_records([Record(RecordType.END_OF_MESSAGE, b"x", True)]))


def test_client_response_failures_are_typed() -> None:
    error = parse_response([Record(RecordType.ERROR, b"\0\x01", True)])
    assert isinstance(error, KeFailure) and error.kind is FailureKind.SERVER_ERROR
    assert error.error_code == KeErrorCode.BAD_REQUEST
    warning = parse_response([PROTO, AEAD, Record(RecordType.WARNING, b"\0\x07", True),
                              cookie_rec()])
    assert isinstance(warning, KeFailure) and warning.kind is FailureKind.SERVER_WARNING
    unknown = parse_response([PROTO, AEAD, Record(0x1234, b"zz", True), cookie_rec()])
    assert isinstance(unknown, KeFailure) and unknown.kind is FailureKind.UNKNOWN_CRITICAL
    ignored = parse_response([PROTO, AEAD, Record(0x1234, b"zz", False), cookie_rec()])
    assert isinstance(ignored, KeResponse)
    no_cookie = parse_response([PROTO, AEAD])
    assert isinstance(no_cookie, KeFailure) and no_cookie.kind is FailureKind.NO_COOKIES
    other_aead = parse_response([PROTO, Record(RecordType.AEAD_ALGORITHM, b"\0\x1e", True),
                                 cookie_rec()])
    assert isinstance(other_aead, KeFailure) and other_aead.kind is FailureKind.NEGOTIATION
    two = parse_response([PROTO, PROTO, AEAD, cookie_rec()])
    assert isinstance(two, KeFailure) and two.kind is FailureKind.MALFORMED
    no_proto = parse_response([AEAD, cookie_rec()])
    assert isinstance(no_proto, KeFailure) and no_proto.kind is FailureKind.MALFORMED
    too_many = parse_response([PROTO, AEAD, *[cookie_rec()] * 17])
    assert isinstance(too_many, KeFailure) and too_many.kind is FailureKind.MALFORMED


def test_server_request_failures_carry_the_error_to_send() -> None:
    unknown = parse_server_request((PROTO, AEAD, Record(0x4321, b"", True)))
    assert isinstance(unknown, KeFailure)
    assert unknown.error_code == KeErrorCode.UNRECOGNIZED_CRITICAL_RECORD
    missing = parse_server_request((PROTO,))
    assert isinstance(missing, KeFailure) and missing.error_code == KeErrorCode.BAD_REQUEST
    no_common = parse_server_request((PROTO, Record(RecordType.AEAD_ALGORITHM, b"\0\x1e", True)))
    assert isinstance(no_common, KeFailure) and no_common.error_code == KeErrorCode.BAD_REQUEST
    picks = parse_server_request((Record(RecordType.NEXT_PROTOCOL, b"\x80\x01\0\0", True),
                                  Record(RecordType.AEAD_ALGORITHM, b"\0\x1e\0\x0f", True)))
    assert isinstance(picks, KeRequest) and (picks.protocol, picks.aead) == (0, 15)
    assert parse_message(error_response(1)) == (Record(RecordType.ERROR, b"\0\x01", True),)


def test_exporter_context() -> None:
    assert exporter_context(0, 15, False) == b"\x00\x00\x00\x0f\x00"
    assert exporter_context(0, 15, True) == b"\x00\x00\x00\x0f\x01"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_ke_parsers_never_raise_anything_else(data: bytes) -> None:
    try:
        records = parse_message(data)
    except KeRecordError:
        return
    if records is not None:
        assert isinstance(parse_client_response(records), KeResponse | KeFailure)
        assert isinstance(parse_server_request(records), KeRequest | KeFailure)


@given(st.lists(st.binary(min_size=1, max_size=256), min_size=1, max_size=16),
       st.integers(1, 65535))
def test_response_roundtrip_property(cookies: list[bytes], port: int) -> None:
    records = parse_message(server_response(0, 15, cookies, port=port))
    assert records is not None
    assert parse_client_response(records) == KeResponse(0, 15, tuple(cookies), None, port)


# --- extension fields -------------------------------------------------------------------------

C2S = AesSivCmac256(bytes(range(32)))
S2C = AesSivCmac256(bytes(range(32, 64)))
UID = bytes(range(100, 132))
HEADER = ntp_request(0x1122334455667788, 4)


def reply_header(origin: int = 0x1122334455667788, stratum: int = 2, refid: int = 0) -> bytes:
    return HEADER_STRUCT.pack(0x24, stratum, 4, -20, 0, 0, refid, 0, origin, 5, 6)


def test_request_reply_roundtrip() -> None:
    request = build_client_request(HEADER, UID, b"k" * 100, 7, C2S, b"n" * 16)
    assert len(request) == request_size(100, 7)
    parsed = parse_client_request(request)
    assert parsed is not None
    assert (parsed.uid, parsed.cookie, parsed.placeholders) == (UID, b"k" * 100, 7)
    assert open_client_request(request, parsed, C2S) == b""
    new = [bytes([i]) * 100 for i in range(8)]
    reply = build_server_reply(reply_header(), UID, new, S2C, b"m" * 16, len(request))
    assert len(reply) <= len(request)
    opened = open_server_reply(reply, UID, S2C)
    assert opened.cookies == tuple(new)
    assert opened.packet.origin_ts == 0x1122334455667788


def test_reply_never_larger_than_request() -> None:
    request = build_client_request(HEADER, UID, b"k" * 100, 0, C2S, b"n" * 16)
    new = [b"a" * 100, b"b" * 100, b"c" * 100]
    reply = build_server_reply(reply_header(), UID, new, S2C, b"m" * 16, len(request))
    assert len(reply) <= len(request)
    assert open_server_reply(reply, UID, S2C).cookies == (b"a" * 100,)


def test_request_with_wrong_key_does_not_verify() -> None:
    request = build_client_request(HEADER, UID, b"k" * 100, 1, C2S, b"n" * 16)
    parsed = parse_client_request(request)
    assert parsed is not None
    with pytest.raises(NtsError):
        open_client_request(request, parsed, S2C)


def make_reply() -> bytes:
    return build_server_reply(reply_header(), UID, [b"z" * 100], S2C, b"m" * 16, 2000)


def test_tampered_replies_are_rejected() -> None:
    reply = make_reply()
    for index in range(len(reply)):
        flipped = bytearray(reply)
        flipped[index] ^= 0x01
        with pytest.raises(PacketError):
            open_server_reply(bytes(flipped), UID, S2C)
    with pytest.raises(NtsError, match="unique identifier"):
        open_server_reply(reply, bytes(32), S2C)
    with pytest.raises(NtsError, match="does not verify"):
        open_server_reply(reply, UID, C2S)
    trailing = reply + encode_field(0x2000, b"x" * 12)
    with pytest.raises(NtsError, match="last field"):
        open_server_reply(trailing, UID, S2C)


def test_replayed_reply_is_rejected_by_the_jar() -> None:
    jar = CookieJar()
    jar.install(NtsKeys(b"c" * 32, b"s" * 32), [b"k" * 100] * 8)
    cookie, placeholders = jar.take(UID)
    assert (cookie, placeholders) == (b"k" * 100, 0)
    opened = open_server_reply(make_reply(), UID, S2C)
    assert jar.accept_reply(UID, opened.cookies)
    assert len(jar) == 8
    assert not jar.accept_reply(UID, opened.cookies)  # the same reply again
    assert len(jar) == 8


def test_nak_is_recognised_only_with_our_uid() -> None:
    nak = nts_nak(reply_header(stratum=0, refid=0x4E54534E), UID)
    assert is_nts_nak(nak, UID)
    assert not is_nts_nak(nak, bytes(32))
    assert not is_nts_nak(make_reply(), UID)
    assert not is_nts_nak(b"garbage", UID)


def test_plain_request_has_no_nts_parts_and_broken_ones_are_refused() -> None:
    assert parse_client_request(HEADER) is None
    two_cookies = HEADER + encode_field(FieldType.UNIQUE_IDENTIFIER, UID) + \
        encode_field(FieldType.NTS_COOKIE, b"a" * 100) * 2
    with pytest.raises(NtsError, match="more than one cookie"):
        parse_client_request(two_cookies)
    no_auth = HEADER + encode_field(FieldType.UNIQUE_IDENTIFIER, UID) + \
        encode_field(FieldType.NTS_COOKIE, b"a" * 100)
    with pytest.raises(NtsError, match="authenticator"):
        parse_client_request(no_auth)
    short_uid = HEADER + encode_field(FieldType.UNIQUE_IDENTIFIER, b"u" * 16) + \
        encode_field(FieldType.NTS_COOKIE, b"a" * 100)
    with pytest.raises(NtsError, match="unique identifier"):
        parse_client_request(short_uid)


def test_placeholders_fit_the_packet_budget() -> None:
    assert max_placeholders(100) == 7
    assert max_placeholders(256) < 7
    assert request_size(256, max_placeholders(256)) <= 48 + 1024


def test_parse_fields_bounds() -> None:
    assert parse_fields(encode_field(5, b"abc")) == [(5, 0, b"abc" + bytes(9))]
    for bad in (b"\0" * 8, struct.pack(">HH", 1, 12) + bytes(8), struct.pack(">HH", 1, 64) + bytes(12)):
        with pytest.raises(NtsError):
            parse_fields(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_extension_parsers_never_raise_anything_else(data: bytes) -> None:
    for call in (lambda: parse_client_request(data), lambda: open_server_reply(data, UID, S2C),
                 lambda: parse_fields(data)):
        with contextlib.suppress(PacketError):
            call()
    assert isinstance(is_nts_nak(data, UID), bool)


# --- cookie jar ------------------------------------------------------------------------------


def test_jar_uses_each_cookie_once_and_asks_for_refills() -> None:
    jar = CookieJar()
    assert jar.state is JarState.NEEDS_KEY_EXCHANGE
    cookies = [bytes([i]) * 100 for i in range(8)]
    jar.install(NtsKeys(b"c" * 32, b"s" * 32), cookies)
    seen = []
    for i in range(8):  # every reply lost
        cookie, placeholders = jar.take(bytes([i]) * 32)
        seen.append(cookie)
        assert placeholders == i
    assert seen == cookies
    assert jar.state is JarState.NEEDS_KEY_EXCHANGE
    with pytest.raises(RuntimeError):
        jar.take(UID)


def test_jar_nak_and_unauthenticated_kod() -> None:
    jar = CookieJar()
    jar.install(NtsKeys(b"c" * 32, b"s" * 32), [b"k" * 100] * 8)
    jar.take(UID)
    jar.unauthenticated_kod()
    assert jar.state is JarState.READY and len(jar) == 7 and jar.ignored_kods == 1
    assert not jar.nak(bytes(32))  # not the outstanding request: ignored
    assert jar.state is JarState.READY
    assert jar.nak(UID)
    assert jar.state is JarState.NEEDS_KEY_EXCHANGE and jar.keys is None and jar.naks == 1


@given(st.lists(st.sampled_from(["take", "reply", "lost", "replay"]), max_size=60))
def test_jar_never_exceeds_capacity_nor_reuses(ops: list[str]) -> None:
    jar = CookieJar()
    counter = 0

    def fresh(n: int) -> tuple[bytes, ...]:
        nonlocal counter
        out = tuple(counter.to_bytes(4, "big") + bytes(i) for i in range(n))
        counter += n
        return out

    jar.install(NtsKeys(b"c" * 32, b"s" * 32), fresh(8))
    used: set[bytes] = set()
    last: tuple[bytes, int] | None = None
    for step, op in enumerate(ops):
        if jar.state is JarState.NEEDS_KEY_EXCHANGE:
            jar.install(NtsKeys(b"c" * 32, b"s" * 32), fresh(8))
            last = None  # a new key exchange gives up the request in flight
        uid = step.to_bytes(32, "big")
        if op in ("take", "lost"):
            cookie, placeholders = jar.take(uid)
            assert cookie not in used
            used.add(cookie)
            last = (uid, placeholders)
        elif op == "reply" and last is not None:
            assert jar.accept_reply(last[0], fresh(last[1] + 1))
            last = None
        elif op == "replay":
            assert not jar.accept_reply(uid, fresh(1))
        assert len(jar) <= 8


# --- server keyset ----------------------------------------------------------------------------

DAY = 86400 * 1_000_000_000


def test_cookie_roundtrip_and_rotation() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0, stale_key_count=2)
    keys = NtsKeys(os.urandom(32), os.urandom(32))
    cookie = keyset.make_cookie(keys, os.urandom(16))
    assert len(cookie) == 100
    assert keyset.open_cookie(cookie) == keys
    assert keyset.open_cookie(cookie, aead=30) is None  # bound to its algorithm
    assert not keyset.rotate_if_due(DAY - 1, os.urandom)
    for day in (1, 2):
        assert keyset.rotate_if_due(day * DAY, os.urandom)
        assert keyset.open_cookie(cookie) == keys  # stale but kept
    assert keyset.rotate_if_due(3 * DAY, os.urandom)
    assert keyset.open_cookie(cookie) is None  # beyond stale-key-count
    assert len(keyset.keys) == 3


def test_forged_and_garbage_cookies_open_to_nothing() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    cookie = bytearray(keyset.make_cookie(NtsKeys(bytes(32), bytes(32)), bytes(16)))
    cookie[-1] ^= 1
    assert keyset.open_cookie(bytes(cookie)) is None
    assert keyset.open_cookie(b"") is None
    assert keyset.open_cookie(bytes(100)) is None


def test_clock_going_back_does_not_rotate_or_freeze() -> None:
    keyset = ServerKeySet.generate(os.urandom, 10 * DAY)
    assert not keyset.rotate_if_due(5 * DAY, os.urandom)
    assert keyset.rotated_at_ns == 5 * DAY
    assert keyset.rotate_if_due(6 * DAY, os.urandom)


def test_keyset_storage_roundtrip_and_corruption() -> None:
    keyset = ServerKeySet.generate(os.urandom, 123)
    keyset.rotate_if_due(DAY + 123, os.urandom)
    cookie = keyset.make_cookie(NtsKeys(b"a" * 32, b"b" * 32), bytes(16))
    loaded = ServerKeySet.from_bytes(keyset.to_bytes())
    assert loaded.keys == keyset.keys and loaded.rotated_at_ns == DAY + 123
    assert loaded.open_cookie(cookie) == NtsKeys(b"a" * 32, b"b" * 32)
    good = keyset.to_bytes()
    for bad in (b"", b"{}", b"[]", good[: len(good) // 2], good.replace(b'"version": 1', b'"version": 9'),
                good.replace(b'"keys": [', b'"keys": [{"id": -1, "key": "00"},')):
        with pytest.raises(KeysetError):
            ServerKeySet.from_bytes(bad)


@given(st.binary(max_size=300))
def test_keyset_loader_only_raises_keyset_error(data: bytes) -> None:
    with contextlib.suppress(KeysetError):
        ServerKeySet.from_bytes(data)


def test_reply_parses_as_ntp() -> None:
    assert parse(make_reply()).stratum == 2
