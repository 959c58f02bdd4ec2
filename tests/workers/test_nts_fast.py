"""The C NTS batch engine (workers/_nts_fast.c) against the Python reference
(core/nts_server.py): same verdict and, with the same nonces and transmit time, the
same reply bytes, for valid, tampered, stale, mixed and random requests."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.nts_cookies import CookieKey, NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    FieldType,
    build_client_request,
    encode_field,
    open_server_reply,
)
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request, nak_reply
from ntpd_py.core.packet import HEADER_STRUCT, MAX_PACKET_BYTES, client_request

# Not importorskip: the README's setup builds the module, and a test run without it
# must fail rather than pass with the engine untested.
from ntpd_py.workers import _nts_fast as fast

STRIDE = 1152  # workers/_mmsg.py _DATA
RX = 0xE9A1_2345_6789_ABCD
TX = 0xE9A1_2345_7000_0001
KEYS = NtsKeys(bytes(range(32)), bytes(range(32, 64)))
UID = bytes(range(100, 132))


def templates(versions: tuple[int, ...] = (3, 4)) -> bytes:
    """What Responder's templates look like: one 48-byte header per accepted version."""
    out = bytearray(8 * 48)
    for v in versions:
        out[v * 48 : (v + 1) * 48] = HEADER_STRUCT.pack(
            (v << 3) | 4, 2, 0, -20, 17, 33, 0x7F000001, 0xE9A1_0000_0000_0000, 0, 0, 0)
    return bytes(out)


class Stream:
    """Deterministic 'random' bytes, consumed in order (as the engine consumes its buffer)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def __call__(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        assert len(chunk) == n
        self.at += n
        return chunk


def reference(request: bytes, keyset: ServerKeySet, tmpl: bytes,
              random: Callable[[int], bytes]) -> tuple[Verdict, bytes | None]:
    verdict = judge_request(request, keyset)
    if verdict.verdict is Verdict.NAK:
        return verdict.verdict, nak_reply(verdict)
    if verdict.verdict is not Verdict.AUTHENTICATED:
        return verdict.verdict, None
    version = (request[0] >> 3) & 7
    header = bytearray(tmpl[version * 48 : (version + 1) * 48])
    header[2] = request[2]
    header[24:32] = request[40:48]
    struct.pack_into(">QQ", header, 32, RX, TX)
    return verdict.verdict, authenticated_reply(bytes(header), verdict, keyset, random,
                                                len(request))


def serve(engine: object, requests: list[bytes], tmpl: bytes, random: bytes
          ) -> tuple[list[int], list[bytes | None], int]:
    n = len(requests)
    data = bytearray(STRIDE * n)
    for k, r in enumerate(requests):
        data[k * STRIDE : k * STRIDE + len(r)] = r
    lengths = struct.pack(f"={n}i", *(len(r) for r in requests))
    rx = struct.pack(f"={n}Q", *([RX] * n))
    out = bytearray(STRIDE * n)
    verdicts = bytearray(n)
    names = bytearray(32 * n)
    iov, hdr = bytearray(16 * n), bytearray(64 * n)
    slots, used = engine.serve(data, STRIDE, lengths, rx, tmpl, out, STRIDE, random, TX,  # type: ignore[attr-defined]
                               verdicts, names, 32, 16, iov, hdr)
    replies: list[bytes | None] = [None] * n
    for j, k in enumerate(slots):
        length = struct.unpack_from("=Q", iov, j * 16 + 8)[0]
        replies[k] = bytes(out[k * STRIDE : k * STRIDE + length])
    return list(verdicts), replies, used


def engine_for(keyset: ServerKeySet) -> object:
    return fast.Engine([(k.key_id, k.key) for k in keyset.keys])


def request_with(keyset: ServerKeySet, placeholders: int = 0, keys: NtsKeys = KEYS,
                 uid: bytes = UID, version: int = 4, cookie: bytes | None = None) -> bytes:
    cookie = cookie if cookie is not None else keyset.make_cookie(keys, os.urandom(16))
    header = bytearray(client_request(0x1122_3344_5566_7788, 6, version))
    header[2] = 6
    return build_client_request(bytes(header), uid, cookie, placeholders,
                                AesSivCmac256(keys.c2s), os.urandom(16))


def check_same(requests: list[bytes], keyset: ServerKeySet, tmpl: bytes | None = None) -> list[int]:
    """Run both; assert they agree; return the engine's verdicts."""
    tmpl = tmpl or templates()
    random = os.urandom(fast.RANDOM_PER_REQUEST * len(requests))
    verdicts, replies, used = serve(engine_for(keyset), requests, tmpl, random)
    stream = Stream(random)
    for request, v, reply in zip(requests, verdicts, replies, strict=True):
        if v in (fast.SKIP, fast.PY):
            # handed back: only for what the Python path must decide (plain NTP, NTPv3,
            # oversized, a version the server refuses)
            if v == fast.SKIP:
                assert len(request) <= 48
            else:
                expected = judge_request(request, keyset).verdict
                version = (request[0] >> 3) & 7
                assert (expected is Verdict.NOT_NTS or version < 4
                        or len(request) > MAX_PACKET_BYTES or not tmpl[version * 48])
            assert reply is None
            continue
        expected_verdict, expected_reply = reference(request, keyset, tmpl, stream)
        assert {fast.AUTHENTICATED: Verdict.AUTHENTICATED, fast.NAK: Verdict.NAK,
                fast.DROP: Verdict.DROP}[v] is expected_verdict
        assert reply == expected_reply
    assert used == stream.at
    return verdicts


@pytest.mark.parametrize("placeholders", range(9))
def test_authenticated_replies_are_the_reference_bytes(placeholders: int) -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    request = request_with(keyset, placeholders)
    assert check_same([request], keyset) == [fast.AUTHENTICATED]
    # and the client's side accepts them: fresh cookies that open to its keys
    _, replies, _ = serve(engine_for(keyset), [request], templates(), os.urandom(200))
    assert replies[0] is not None and len(replies[0]) <= len(request)
    opened = open_server_reply(replies[0], UID, AesSivCmac256(KEYS.s2c))
    assert len(opened.cookies) == 1 + placeholders
    assert all(keyset.open_cookie(c) == KEYS for c in opened.cookies)


def test_nak_for_retired_and_unknown_keys_drop_for_a_forged_authenticator() -> None:
    old = ServerKeySet.generate(os.urandom, 0)
    stale = request_with(old)
    new = ServerKeySet([*old.keys, CookieKey(old.primary.key_id + 1, os.urandom(32))], 0)
    retired = ServerKeySet([CookieKey(old.primary.key_id + 1, new.primary.key)], 0)
    forged = bytearray(request_with(new))
    forged[-1] ^= 1
    short_cookie = request_with(new, cookie=os.urandom(40))
    assert check_same([stale, bytes(forged), short_cookie], new) == [
        fast.AUTHENTICATED, fast.DROP, fast.NAK]
    assert check_same([stale], retired) == [fast.NAK]


def test_every_single_bit_flip_agrees_with_the_reference() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    request = request_with(keyset, 1)
    flipped = []
    for bit in range(len(request) * 8):
        r = bytearray(request)
        r[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(r))
    for start in range(0, len(flipped), 64):
        verdicts = check_same(flipped[start : start + 64], keyset)
        # no flip outside the header's unauthenticated... none: everything is covered
        assert fast.AUTHENTICATED not in verdicts


def test_mixed_batch_hands_back_what_python_decides() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    plain = client_request(5, 6)
    with_mac = plain + bytes(20)
    v3 = request_with(keyset, version=3)
    uid_field = encode_field(FieldType.UNIQUE_IDENTIFIER, UID)
    no_cookie = plain + uid_field  # an extension field, no cookie: plain NTP
    requests = [plain, request_with(keyset), with_mac, v3, no_cookie, request_with(keyset, 2)]
    verdicts = check_same(requests, keyset)
    assert verdicts == [fast.SKIP, fast.AUTHENTICATED, fast.PY, fast.PY, fast.PY,
                        fast.AUTHENTICATED]
    # a version the server refuses is Python's to count
    assert check_same([request_with(keyset)], keyset, templates((3,))) == [fast.PY]


def test_running_out_of_random_hands_the_rest_back() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    requests = [request_with(keyset), request_with(keyset, 3)]
    verdicts, replies, used = serve(engine_for(keyset), requests, templates(), os.urandom(40))
    assert verdicts == [fast.AUTHENTICATED, fast.PY] and used == 32
    assert replies[1] is None


def test_bad_arguments_raise_instead_of_reading_past_a_buffer() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    engine = engine_for(keyset)
    lengths = struct.pack("=2i", 100, 100)
    with pytest.raises(ValueError, match="data"):
        engine.serve(bytearray(STRIDE), STRIDE, lengths, bytes(16), templates(),  # type: ignore[attr-defined]
                     bytearray(2 * STRIDE), STRIDE, b"", 0, bytearray(2), bytearray(64), 32,
                     16, bytearray(32), bytearray(128))
    with pytest.raises(ValueError, match="key"):
        fast.Engine([(1, bytes(31))])
    with pytest.raises(ValueError):
        fast.Engine([])


def _mutations(keyset: ServerKeySet) -> st.SearchStrategy[bytes]:
    base = request_with(keyset, 1)

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        r = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(r) - 1))
            r[at] = draw(st.integers(0, 255))
        cut = draw(st.integers(49, len(r)))
        return bytes(r[:cut])

    return mutate()


_KEYSET = ServerKeySet.generate(os.urandom, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(min_size=49, max_size=1152), _mutations(_KEYSET)),
                min_size=1, max_size=8))
def test_random_and_mutated_requests_agree_with_the_reference(requests: list[bytes]) -> None:
    check_same([r[:STRIDE] for r in requests], _KEYSET)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300), st.binary(min_size=16, max_size=40),
       st.binary(max_size=300))
def test_aes_siv_is_cryptographys_aessiv(key: bytes, ad: bytes, nonce: bytes, plaintext: bytes) -> None:
    """The module's own AES-SIV (OpenSSL's AES, RFC 5297's construction) against
    `cryptography`'s, empty plaintexts and block-boundary lengths included."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    expected = AESSIV(key).encrypt(plaintext, [ad, nonce])
    assert fast.siv_seal(key, ad, nonce, plaintext) == expected
    assert fast.siv_open(key, ad, nonce, expected) == plaintext
    tampered = bytearray(expected)
    tampered[len(tampered) // 2] ^= 0x40
    assert fast.siv_open(key, ad, nonce, bytes(tampered)) is None
    assert fast.siv_open(key, ad + b"x", nonce, expected) is None


def test_aes_siv_lengths_around_block_boundaries() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    key = bytes(range(32))
    for n in (0, 1, 15, 16, 17, 31, 32, 33, 64, 100, 1000):
        for m in (0, 1, 16, 17, 132):
            pt, ad = bytes(range(n % 256)) * (n // 256 + 1), bytes(m)
            pt = pt[:n]
            assert fast.siv_seal(key, ad, bytes(16), pt) == AESSIV(key).encrypt(pt, [ad, bytes(16)])
