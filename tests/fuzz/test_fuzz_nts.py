"""Fuzzing in the default run: hostile bytes against the NTS-KE record parser and the NTS
extension-field parsers (bounded hypothesis runs; fuzz_nts.py is the atheris counterpart).

Valid messages are built, then broken (bytes flipped, cut, spliced, lengths rewritten):
the KE parser must return records, None (incomplete) or raise KeRecordError, and the
client and server judges must return a typed result or failure; the extension-field
parsers must return or raise PacketError (NtsError is one). Nothing else may escape.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.errors import PacketError
from ntpd_py.core.nts_cookies import KeysetError, NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    build_client_request,
    build_server_reply,
    is_nts_nak,
    open_client_request,
    open_server_reply,
    parse_client_request,
    parse_fields,
)
from ntpd_py.core.nts_ke_records import (
    KeFailure,
    KeRecordError,
    KeRequest,
    KeResponse,
    Record,
    client_request,
    encode_records,
    parse_client_response,
    parse_message,
    parse_server_request,
    server_response,
)
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request, nak_reply
from ntpd_py.core.packet import HEADER_STRUCT
from ntpd_py.core.packet import client_request as ntp_request

FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
C2S = AesSivCmac256(bytes(32))
S2C = AesSivCmac256(bytes(range(32)))
UID = bytes(range(32))
KEYSET = ServerKeySet.generate(lambda n: bytes(n), 0)
COOKIE = KEYSET.make_cookie(NtsKeys(bytes(32), bytes(range(32))), bytes(16))


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 3))
        if choice == 0 and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= draw(st.integers(1, 255))
        elif choice == 1:
            data = data[: draw(st.integers(0, len(data)))]
        elif choice == 2:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=64))
        elif len(data) >= 4:  # rewrite a 16-bit length word somewhere
            at = draw(st.integers(0, len(data) - 2))
            data[at : at + 2] = struct.pack(">H", draw(st.integers(0, 0xFFFF)))
    return bytes(data)


_records = st.lists(st.builds(Record, st.integers(0, 0x7FFF), st.binary(max_size=40),
                              st.booleans()), max_size=8).map(encode_records)
ke_inputs = st.one_of(
    mutated(client_request()),
    mutated(server_response(0, 15, [b"c" * 100] * 8, server="ntp.example", port=123)),
    _records.flatmap(lambda b: mutated(b)),
    st.binary(max_size=400),
)


@FUZZ
@given(ke_inputs)
def test_ke_record_parser(data: bytes) -> None:
    try:
        records = parse_message(data)
    except KeRecordError:
        return
    if records is None:
        return
    assert isinstance(parse_client_response(records), KeResponse | KeFailure)
    assert isinstance(parse_server_request(records), KeRequest | KeFailure)


REQUEST = build_client_request(ntp_request(1, 4), UID, COOKIE, 7, C2S, bytes(16))
REPLY = build_server_reply(HEADER_STRUCT.pack(0x24, 2, 4, -20, 0, 0, 0, 0, 1, 2, 3), UID,
                           [COOKIE] * 8, S2C, bytes(16), len(REQUEST))
ef_inputs = st.one_of(mutated(REQUEST), mutated(REPLY), st.binary(max_size=1200))


@FUZZ
@given(ef_inputs)
def test_extension_field_parsers(data: bytes) -> None:
    try:
        request = parse_client_request(data)
        if request is not None:
            keys = KEYSET.open_cookie(request.cookie)
            if keys is not None:
                open_client_request(data, request, AesSivCmac256(keys.c2s))
    except PacketError:
        pass
    with contextlib.suppress(PacketError):
        open_server_reply(data, UID, S2C)
    with contextlib.suppress(PacketError):
        parse_fields(data)
    assert isinstance(is_nts_nak(data, UID), bool)
    verdict = judge_request(data, KEYSET)  # the server's path; never raises
    if verdict.verdict is Verdict.NAK:
        assert len(nak_reply(verdict)) <= len(data)
    elif verdict.verdict is Verdict.AUTHENTICATED:
        reply = authenticated_reply(data[:48], verdict, KEYSET, bytes, len(data))
        assert len(reply) <= len(data)


@FUZZ
@given(st.one_of(mutated(COOKIE), st.binary(max_size=200)))
def test_cookie_opening(cookie: bytes) -> None:
    keys = KEYSET.open_cookie(cookie)
    assert keys is None or cookie == COOKIE


@FUZZ
@given(mutated(KEYSET.to_bytes()))
def test_keyset_loader(data: bytes) -> None:
    with contextlib.suppress(KeysetError):
        ServerKeySet.from_bytes(data)


@FUZZ
@given(st.lists(st.one_of(mutated(REQUEST), st.binary(min_size=49, max_size=1152)), min_size=1,
                max_size=6))
def test_c_engine_agrees_with_the_reference(requests: list[bytes]) -> None:
    """The C NTS engine (workers/_nts_fast.c) on hostile batches: same verdicts and reply
    bytes as core/nts_server.py, nothing read or written outside its buffers (the
    differential check of tests/workers/test_nts_fast.py)."""
    from tests.workers.test_nts_fast import check_same

    check_same(requests, KEYSET)
