"""The wiring the NTP worker will do, in process: the NTP client's request wrapped by an
NtsSession, answered by the core NTS server around a plain reply, the reply gated by the
session before the NTP client sees it. Authenticated replies become samples; a forged
one never reaches the client."""

from __future__ import annotations

import os

from ntpd_py.core.ntp_client import Publish, Send
from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request
from ntpd_py.core.nts_session import NtsSession, ReplyKind

from tests.core.test_ntp_client import T0_MONO, Server, make_client, only, real_at


def test_nts_wrapped_exchanges_become_samples() -> None:
    keyset = ServerKeySet.generate(os.urandom, 0)
    keys = NtsKeys(os.urandom(32), os.urandom(32))
    session = NtsSession(os.urandom)
    session.install(keys, tuple(keyset.make_cookie(keys, os.urandom(16)) for _ in range(8)))
    client = make_client()
    server = Server(offset_s=0.125)
    samples = []
    now = T0_MONO
    exchanges = 0
    while exchanges < 6:
        sends = only(client.handle_timer(now), Send)
        now += 1_000_000_000
        if not sends:
            continue
        exchanges += 1
        request = session.request(sends[0].data)
        verdict = judge_request(request, keyset)
        assert verdict.verdict is Verdict.AUTHENTICATED
        sent_at = now - 1_000_000_000
        plain, sent, received = server.exchange(client, sends[0].data, real_at(sent_at), sent_at)
        reply = authenticated_reply(plain[:48], verdict, keyset, os.urandom, len(request))
        forged = bytearray(reply)
        forged[47] ^= 1  # the server's transmit timestamp
        assert session.reply(bytes(forged)).kind is ReplyKind.IGNORED
        assert session.reply(reply).kind is ReplyKind.AUTHENTICATED
        samples += only(client.handle_reply(reply, sent, received), Publish)
    assert len(samples) >= 4
    assert abs(samples[-1].sample.offset_s - 0.125) < 1e-3
    assert session.cookies == 8
