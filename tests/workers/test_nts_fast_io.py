"""ServerBatchIO with NTS over real loopback sockets: a batch of mixed requests goes
through the C engine and one sendmmsg (bound and wildcard sockets), what it hands back
through the Python path; with access lists or a rate limit the engine judges, the
plain responder decides per client, and the result is the Python path's. The replies
verify on the client side and the counters match."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator

import pytest
from ntpd_py.core.config import FilterList, ServerConfig
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    build_client_request,
    is_nts_nak,
    open_server_reply,
)
from ntpd_py.core.nts_server import NtsResponder
from ntpd_py.core.packet import client_request, parse
from ntpd_py.workers import _mmsg
from ntpd_py.workers._mmsg import NTS_FAST_UNAVAILABLE, ServerBatchIO
from ntpd_py.workers._udp import open_server_socket
from ntpd_py.workers.random_pool import RandomPool


def test_the_engine_is_built() -> None:
    assert NTS_FAST_UNAVAILABLE is None

KEYS = NtsKeys(os.urandom(32), os.urandom(32))


def _server(host: str, **config: object) -> tuple[ServerBatchIO, socket.socket, ServerKeySet]:
    sock = open_server_socket(host, 0)
    port = sock.getsockname()[1]
    state = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.001, 0.001, 0x7F000001,
                             (int(time.time()) + 2208988800) << 32)
    responder = Responder(ServerConfig(listen=f"{host}:{port}", **config), state=state)
    io = ServerBatchIO(sock, responder)
    keyset = ServerKeySet.generate(os.urandom, 0)
    io.nts = NtsResponder(responder, keyset, RandomPool())
    return io, sock, keyset


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def _requests(keyset: ServerKeySet) -> list[tuple[str, bytes, bytes]]:
    out = []
    for i, placeholders in enumerate((0, 2, 7)):
        uid = os.urandom(32)
        cookie = keyset.make_cookie(KEYS, os.urandom(16))
        out.append((f"nts{i}", uid, build_client_request(
            client_request(1000 + i, 6), uid, cookie, placeholders, AesSivCmac256(KEYS.c2s),
            os.urandom(16))))
    uid = os.urandom(32)
    stale = ServerKeySet.generate(os.urandom, 0).make_cookie(KEYS, os.urandom(16))
    out.append(("nak", uid, build_client_request(client_request(2000, 6), uid, stale, 0,
                                                  AesSivCmac256(KEYS.c2s), os.urandom(16))))
    forged = bytearray(out[0][2])
    forged[-3] ^= 1
    out.append(("forged", out[0][1], bytes(forged)))
    out.append(("plain", b"", client_request(3000, 6)))
    out.append(("mac", b"", client_request(4000, 6) + bytes(20)))
    return out


def _exchange(io: ServerBatchIO, client: socket.socket, requests: list[tuple[str, bytes, bytes]],
              target: tuple[str, int]) -> dict[int, bytes]:
    for _, _, request in requests:
        client.sendto(request, target)
    time.sleep(0.05)  # all queued: one batch
    assert select.select([io.fd], [], [], 2)[0]
    io.handle_ready()
    replies: dict[int, bytes] = {}
    client.settimeout(0.5)
    try:
        while True:
            data = client.recv(2048)
            replies[parse(data[:48]).origin_ts] = data
    except TimeoutError:
        pass
    return replies


def _check(replies: dict[int, bytes], requests: list[tuple[str, bytes, bytes]]) -> None:
    by_name = {name: (uid, request) for name, uid, request in requests}
    for i, placeholders in enumerate((0, 2, 7)):
        uid, request = by_name[f"nts{i}"]
        reply = replies[1000 + i]
        assert len(reply) <= len(request)
        opened = open_server_reply(reply, uid, AesSivCmac256(KEYS.s2c))
        assert len(opened.cookies) == 1 + placeholders
    assert is_nts_nak(replies[2000], by_name["nak"][0])
    assert len(replies[3000]) == 48 and len(replies[4000]) == 48
    assert len(replies) == 6  # the forged one got nothing


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_mixed_batch_through_the_c_engine(host: str, client: socket.socket) -> None:
    io, sock, keyset = _server(host)
    try:
        assert io.nts_fast_path() is None
        requests = _requests(keyset)
        replies = _exchange(io, client, requests, ("127.0.0.1", sock.getsockname()[1]))
        _check(replies, requests)
        assert io.nts_fast_batches == 1
        assert io.nts is not None
        assert io.nts.counters() == {"nts_received": 5, "nts_accepted": 3, "nts_denied": 0,
                                     "nts_rate_limited": 0, "nts_nak": 1, "nts_dropped": 1}
        counters = io.responder.counters()
        assert counters["received"] == 7 and counters["accepted"] == 6
        assert counters["malformed"] == 1  # the forged one
    finally:
        sock.close()


POLICIES = {
    "rate limit": {"rate_limiting_cache_size": 64, "rate_limiting_cutoff_ms": 60_000},
    "denylist, deny": {"denylist": FilterList(filter=["127.0.0.0/8"], action="deny")},
    "allowlist, ignore": {"allowlist": FilterList(filter=["10.0.0.0/8"], action="ignore")},
    "allowlist, allowed": {"allowlist": FilterList(filter=["127.0.0.1/32"], action="deny")},
}


@pytest.mark.parametrize("policy", POLICIES)
def test_access_lists_and_rate_limit_decide_as_on_the_python_path(
        policy: str, client: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's judging pass, then the per-client decision: the same replies (kind and
    length) and the same counters as the Python path for the same batch."""
    results = []
    for engine in (True, False):
        if not engine:
            monkeypatch.setattr(_mmsg, "_nts_fast", None)
        io, sock, keyset = _server("127.0.0.1", **POLICIES[policy])
        try:
            requests = _requests(keyset)
            replies = _exchange(io, client, requests, ("127.0.0.1", sock.getsockname()[1]))
            assert io.nts is not None
            assert io.nts_fast_batches == (1 if engine else 0)
            kinds = {origin: (len(r), r[1], r[12:16]) for origin, r in replies.items()}
            results.append((kinds, io.nts.counters(), io.responder.counters()))
        finally:
            sock.close()
    assert results[0] == results[1]
    kinds, nts_counters, _ = results[0]
    if policy == "rate limit":  # the first request passes, the others get RATE
        assert nts_counters["nts_rate_limited"] >= 3
    elif policy == "denylist, deny":
        assert nts_counters["nts_denied"] == 4 and all(k[1] == 0 for k in kinds.values())
    elif policy == "allowlist, ignore":
        assert not kinds and nts_counters["nts_dropped"] == 5
    else:
        assert nts_counters["nts_accepted"] == 3 and nts_counters["nts_nak"] == 1


def test_a_keyset_rotated_in_place_reaches_the_engine(client: socket.socket) -> None:
    """--single-process rotates the one keyset object in place: the engine must follow
    (cookies of the new primary authenticate, and fresh cookies use it)."""
    io, sock, keyset = _server("127.0.0.1")
    target = ("127.0.0.1", sock.getsockname()[1])
    try:
        requests = _requests(keyset)
        _check(_exchange(io, client, requests, target), requests)
        old_id = keyset.primary.key_id
        keyset.rotation_interval_ns = 0
        assert keyset.rotate_if_due(1, os.urandom) and keyset.primary.key_id != old_id
        uid = os.urandom(32)
        request = build_client_request(client_request(1000, 6), uid,
                                       keyset.make_cookie(KEYS, os.urandom(16)), 0,
                                       AesSivCmac256(KEYS.c2s), os.urandom(16))
        reply = _exchange(io, client, [("new", uid, request)], target)[1000]
        opened = open_server_reply(reply, uid, AesSivCmac256(KEYS.s2c))
        assert opened.cookies[0][:4] == keyset.primary.key_id.to_bytes(4, "big")
        assert io.nts is not None and io.nts.counters()["nts_nak"] == 1  # the first batch's
    finally:
        sock.close()
