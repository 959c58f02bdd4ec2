"""NTS on a server socket (core/nts_server.NtsResponder) beside the plain responder:
authenticated replies, NAK, drops, require-nts, and the plain access rules applied to NTS."""

from __future__ import annotations

import os

from ntpd_py.core.config import ServerConfig
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import AesSivCmac256, is_nts_nak, open_server_reply
from ntpd_py.core.nts_server import NtsResponder
from ntpd_py.core.packet import KISS_DENY, KISS_RATE, client_request, parse

from tests.core.test_nts_server import UID, request_with

KEYS = NtsKeys(os.urandom(32), os.urandom(32))
RX = (3_900_000_000 << 32) | 7
TX = (3_900_000_000 << 32) | 99
CLIENT = bytes([127, 0, 0, 1])
STATE = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.0, 0.0, 0x7F000001, RX - (1 << 32))


def _responder(**server: object) -> tuple[NtsResponder, ServerKeySet]:
    keyset = ServerKeySet.generate(os.urandom, 0)
    plain = Responder(ServerConfig.model_validate({"listen": "127.0.0.1:123", **server}),
                      state=STATE)
    return NtsResponder(plain, keyset, os.urandom), keyset


def test_an_authenticated_request_gets_a_sealed_time_reply_with_fresh_cookies() -> None:
    nts, keyset = _responder()
    request = request_with(keyset, placeholders=3, keys=KEYS)
    reply = nts.respond(request, CLIENT, RX, 0, lambda: TX)
    assert reply is not None and len(reply) <= len(request)
    opened = open_server_reply(reply, UID, AesSivCmac256(KEYS.s2c))
    assert len(opened.cookies) == 4 and all(keyset.open_cookie(c) == KEYS
                                            for c in opened.cookies)
    packet = parse(reply)
    assert packet.stratum == 2 and packet.receive_ts == RX and packet.transmit_ts == TX
    assert packet.origin_ts == parse(request).transmit_ts
    assert nts.counters()["nts_accepted"] == 1 and nts.counters()["nts_received"] == 1
    assert nts.plain.counters()["accepted"] == 1
    # stateless: the same request again is answered again (the client refuses a second
    # reply to one identifier; rate limiting is the server's defence against floods)
    assert nts.respond(request, CLIENT, RX, 0, lambda: TX) is not None


def test_unknown_cookie_gets_a_nak_and_a_bad_authenticator_is_dropped() -> None:
    nts, keyset = _responder()
    stranger = ServerKeySet.generate(os.urandom, 0)
    nak = nts.respond(request_with(stranger, keys=KEYS), CLIENT, RX, 0, lambda: TX)
    assert nak is not None and is_nts_nak(nak, UID)
    forged = bytearray(request_with(keyset, keys=KEYS))
    forged[-1] ^= 1  # one bit of the authenticator
    assert nts.respond(bytes(forged), CLIENT, RX, 0, lambda: TX) is None
    garbage = bytearray(request_with(keyset, keys=KEYS))
    garbage[100:140] = os.urandom(40)  # inside the cookie: no key opens it
    cookie_garbage = nts.respond(bytes(garbage), CLIENT, RX, 0, lambda: TX)
    assert cookie_garbage is not None and is_nts_nak(cookie_garbage, UID)
    truncated = request_with(keyset, keys=KEYS)[:-7]  # extension field lengths broken
    assert nts.respond(truncated, CLIENT, RX, 0, lambda: TX) is None
    counts = nts.counters()
    assert counts["nts_nak"] == 2 and counts["nts_dropped"] == 2
    assert nts.plain.counters()["malformed"] == 2


def test_require_nts_drops_or_denies_plain_requests_and_lets_nts_through() -> None:
    plain_request = client_request(11, 4)
    for setting, kiss in ((True, None), ("ignore", None), ("deny", KISS_DENY)):
        nts, keyset = _responder(**{"require-nts": setting})
        out = bytearray(48)
        size = nts.plain.respond(plain_request, 48, CLIENT, RX, 0, out)
        if kiss is None:
            assert size == 0 and nts.plain.ignored == 1
        else:
            assert size == 48 and parse(bytes(out)).reference_id == kiss
        # the batch path too (its fast path must not bypass the rule)
        data = bytearray(plain_request.ljust(1024, b"\0"))
        answered = nts.plain.respond_batch(data, 1024, [48], [RX], [CLIENT], 0, bytearray(48))
        assert len(answered) == (0 if kiss is None else 1)
        reply = nts.respond(request_with(keyset, keys=KEYS), CLIENT, RX, 0, lambda: TX)
        assert reply is not None and open_server_reply(reply, UID, AesSivCmac256(KEYS.s2c))


def test_rate_limits_and_deny_lists_apply_to_nts_requests() -> None:
    nts, keyset = _responder(**{"rate-limiting-cache-size": 64, "rate-limiting-cutoff-ms": 1000})
    first = nts.respond(request_with(keyset, keys=KEYS), CLIENT, RX, 0, lambda: TX)
    assert first is not None and len(first) > 48
    kiss = nts.respond(request_with(keyset, keys=KEYS), CLIENT, RX, 10_000_000, lambda: TX)
    assert kiss is not None and len(kiss) == 48 and parse(kiss).reference_id == KISS_RATE
    assert nts.counters()["nts_rate_limited"] == 1
    nts, keyset = _responder(denylist={"filter": ["127.0.0.0/8"], "action": "deny"})
    denied = nts.respond(request_with(keyset, keys=KEYS), CLIENT, RX, 0, lambda: TX)
    assert denied is not None and parse(denied).reference_id == KISS_DENY
    assert nts.counters()["nts_denied"] == 1


def test_a_request_without_nts_fields_is_answered_as_plain_ntp() -> None:
    nts, _ = _responder()
    request = client_request(5, 4) + bytes(20)  # a 20-byte legacy MAC trailer
    reply = nts.respond(request, CLIENT, RX, 0, lambda: TX)
    assert reply is not None and len(reply) == 48
    assert nts.counters()["nts_received"] == 0 and nts.plain.counters()["accepted"] == 1
