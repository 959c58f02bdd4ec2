"""NtsSession (client) against the core server functions, in process."""

from __future__ import annotations

import os

import pytest
from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request, nak_reply
from ntpd_py.core.nts_session import NtsSession, ReplyKind
from ntpd_py.core.packet import HEADER_STRUCT, client_request, parse

DAY = 86400 * 10**9


def serve(data: bytes, keyset: ServerKeySet, stratum: int = 2) -> bytes | None:
    verdict = judge_request(data, keyset)
    if verdict.verdict is Verdict.NAK:
        return nak_reply(verdict)
    if verdict.verdict is not Verdict.AUTHENTICATED:
        return None
    request = parse(data)
    header = HEADER_STRUCT.pack(0x24, stratum, 4, -20, 0, 0, 1, 0, request.transmit_ts, 5, 6)
    return authenticated_reply(header, verdict, keyset, os.urandom, len(data))


def session_with(keyset: ServerKeySet) -> NtsSession:
    keys = NtsKeys(os.urandom(32), os.urandom(32))
    session = NtsSession(os.urandom)
    session.install(keys, tuple(keyset.make_cookie(keys, os.urandom(16)) for _ in range(8)))
    return session


def test_exchanges_keep_the_jar_full_and_replays_are_ignored() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    session = session_with(keyset)
    for i in range(20):
        reply = serve(session.request(client_request(i + 1, 4)), keyset)
        assert reply is not None
        verdict = session.reply(reply)
        assert verdict.kind is ReplyKind.AUTHENTICATED and verdict.packet is not None
        assert verdict.packet.origin_ts == i + 1
        assert session.cookies == 8
    replayed = session.reply(reply)
    assert replayed.kind is ReplyKind.IGNORED
    assert session.authenticated == 20 and session.rejected == 1


def test_lost_replies_are_refilled_through_placeholders() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    session = session_with(keyset)
    for i in range(5):
        session.request(client_request(i + 1, 4))  # lost
    assert session.cookies == 3
    reply = serve(session.request(client_request(9, 4)), keyset)
    assert reply is not None and session.reply(reply).kind is ReplyKind.AUTHENTICATED
    assert session.cookies == 8


def test_forged_and_unauthenticated_kod_are_ignored_nak_needs_new_ke() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0, stale_key_count=0)
    session = session_with(keyset)
    request = session.request(client_request(1, 4))
    reply = serve(request, keyset)
    assert reply is not None
    forged = bytearray(reply)
    forged[-1] ^= 1
    assert session.reply(bytes(forged)).kind is ReplyKind.IGNORED
    rate = HEADER_STRUCT.pack(0x24, 0, 4, 0, 0, 0, int.from_bytes(b"RATE", "big"), 0, 1, 0, 0)
    assert session.reply(rate).kind is ReplyKind.IGNORED
    assert session.jar.ignored_kods == 1 and not session.needs_key_exchange
    assert session.reply(reply).kind is ReplyKind.AUTHENTICATED  # the real one still counts
    keyset.rotate_if_due(DAY, os.urandom)  # the server forgot our cookies' key
    nak = serve(session.request(client_request(2, 4)), keyset)
    assert nak is not None
    assert session.reply(nak).kind is ReplyKind.NAK
    assert session.needs_key_exchange
    with pytest.raises(RuntimeError):
        session.request(client_request(3, 4))
