"""Server-side NTS processing of one request: authenticate, fresh cookies, NAK, drop."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ntpd_py.core.nts_cookies import CookieJar, NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    build_client_request,
    is_nts_nak,
    open_server_reply,
)
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request, nak_reply
from ntpd_py.core.packet import HEADER_STRUCT, client_request, parse

DAY = 86400 * 10**9
KEYS = NtsKeys(os.urandom(32), os.urandom(32))
UID = os.urandom(32)


def header_for(request: bytes) -> bytes:
    packet = parse(request)
    return HEADER_STRUCT.pack(0x24, 2, packet.poll, -20, 0, 0, 0x7F000001, 0,
                              packet.transmit_ts, 5, 6)


def request_with(keyset: ServerKeySet, placeholders: int = 0, keys: NtsKeys = KEYS) -> bytes:
    cookie = keyset.make_cookie(keys, os.urandom(16))
    return build_client_request(client_request(42, 4), UID, cookie, placeholders,
                                AesSivCmac256(keys.c2s), os.urandom(16))


def test_authenticated_request_gets_fresh_cookies_the_client_accepts() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    jar = CookieJar()
    jar.install(KEYS, [keyset.make_cookie(KEYS, os.urandom(16)) for _ in range(8)])
    for _ in range(20):
        uid = os.urandom(32)
        cookie, placeholders = jar.take(uid)
        request = build_client_request(client_request(7, 4), uid, cookie, placeholders,
                                       AesSivCmac256(KEYS.c2s), os.urandom(16))
        verdict = judge_request(request, keyset)
        assert verdict.verdict is Verdict.AUTHENTICATED and verdict.keys == KEYS
        reply = authenticated_reply(header_for(request), verdict, keyset, os.urandom,
                                    len(request))
        assert len(reply) <= len(request)
        opened = open_server_reply(reply, uid, AesSivCmac256(KEYS.s2c))
        assert len(opened.cookies) == 1 + placeholders
        assert all(keyset.open_cookie(c) == KEYS for c in opened.cookies)
        assert jar.accept_reply(uid, opened.cookies)
        if len(jar) == 8:
            jar.take(os.urandom(32))  # a lost reply, so that placeholders get used


def test_stale_cookie_gets_a_nak_and_a_forged_authenticator_is_dropped() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0, stale_key_count=1)
    request = request_with(keyset)
    keyset.rotate_if_due(DAY, os.urandom)
    assert judge_request(request, keyset).verdict is Verdict.AUTHENTICATED  # stale, kept
    keyset.rotate_if_due(2 * DAY, os.urandom)
    verdict = judge_request(request, keyset)
    assert verdict.verdict is Verdict.NAK
    nak = nak_reply(verdict)
    assert is_nts_nak(nak, UID) and len(nak) <= len(request)
    assert parse(nak).origin_ts == 42
    other = ServerKeySet.generate(os.urandom, 0)
    assert judge_request(request_with(other), keyset).verdict is Verdict.NAK
    wrong_key = bytearray(request_with(keyset))
    wrong_key[-1] ^= 1  # the authenticator no longer verifies; the cookie still opens
    assert judge_request(bytes(wrong_key), keyset).verdict is Verdict.DROP


def test_plain_and_malformed_requests() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    assert judge_request(client_request(1, 4), keyset).verdict is Verdict.NOT_NTS
    assert judge_request(b"short", keyset).verdict is Verdict.DROP
    request = bytearray(request_with(keyset))
    request[0] = (request[0] & 0xF8) | 4  # a server-mode packet with NTS fields
    assert judge_request(bytes(request), keyset).verdict is Verdict.DROP


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1100))
def test_judge_never_raises(data: bytes) -> None:
    keyset = ServerKeySet.generate(lambda n: bytes(n), 0)
    verdict = judge_request(data, keyset)
    if verdict.verdict is Verdict.NAK:
        assert len(nak_reply(verdict)) <= len(data)


def test_no_single_bit_flip_of_a_request_authenticates() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    request = request_with(keyset, placeholders=2)
    assert judge_request(request, keyset).verdict is Verdict.AUTHENTICATED
    for index in range(len(request)):
        for bit in range(8):
            flipped = bytearray(request)
            flipped[index] ^= 1 << bit
            assert judge_request(bytes(flipped), keyset).verdict is not Verdict.AUTHENTICATED, \
                (index, bit)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
                min_size=1, max_size=6), st.integers(0, 5))
def test_cached_aeads_round_trip_for_many_and_repeated_clients(pairs: list[tuple[bytes, bytes]],
                                                               repeat: int) -> None:
    """The per-key AEAD cache must not mix clients up: each client's reply opens with its
    own S2C key (also when its keys were seen before) and a wrong C2S still drops."""
    from ntpd_py.core.nts_extensions import AesSivCmac256, build_client_request, open_server_reply
    keyset = ServerKeySet.generate(os.urandom, 0)
    for c2s, s2c in pairs + pairs[: repeat % (len(pairs) + 1)]:
        keys = NtsKeys(c2s, s2c)
        uid = os.urandom(32)
        req = build_client_request(client_request(7, 4), uid, keyset.make_cookie(keys, os.urandom(16)),
                                   0, AesSivCmac256(c2s), os.urandom(16))
        verdict = judge_request(req, keyset)
        assert verdict.verdict is Verdict.AUTHENTICATED
        reply = authenticated_reply(req[:48], verdict, keyset, os.urandom, len(req))
        assert open_server_reply(reply, uid, AesSivCmac256(s2c)).cookies
        forged = build_client_request(client_request(7, 4), uid,
                                      keyset.make_cookie(keys, os.urandom(16)), 0,
                                      AesSivCmac256(bytes(b ^ 1 for b in c2s)), os.urandom(16))
        assert judge_request(forged, keyset).verdict is Verdict.DROP


def test_the_session_cache_is_the_keysets_own_bounded_and_emptied_on_rotation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ntpd_py.core import nts_cookies

    monkeypatch.setattr(nts_cookies, "SESSION_CACHE_SIZE", 3)
    first = ServerKeySet.generate(os.urandom, 0, rotation_interval_s=10.0)
    other = ServerKeySet.generate(os.urandom, 0)
    keys = [os.urandom(32) for _ in range(5)]
    aeads = [first.session_aead(k) for k in keys]
    assert first.session_aead(keys[-1]) is aeads[-1]  # a hit
    assert first.session_aead(keys[0]) is not aeads[0]  # evicted: the bound holds
    assert len(first._sessions) == 3
    assert other.session_aead(keys[-1]) is not aeads[-1]  # nothing shared between keysets
    assert first.rotate_if_due(11 * 10**9, os.urandom)
    assert len(first._sessions) == 0 and first.session_aead(keys[-1]) is not aeads[-1]
