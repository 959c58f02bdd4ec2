"""A hostile network against the real daemon's NTS server (the C engine, loopback only).

The daemon runs with a simulated clock, a `[[server]]` on 127.0.0.1 and a `[keyset]`
whose file the test reads, so it can mint cookies as an honest NTS-KE server would.
From the test we send, in batches the worker reads together: valid NTS requests with
one byte changed at every offset, cut at many lengths, with lying field and
authenticator lengths, cookies of other sizes, replays of one valid request, and random
bytes; between them, valid NTS requests that must keep being answered. Outcome: no
reply ever larger than its request; an authenticated reply (one that verifies with the
client's key) only to an unmodified valid request or a replay of one (the server keeps
no replay state, as RFC 8915 allows); the drops counted in `ntpctl status --json`; the
server worker never restarted.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import time

import pytest
from ntpd_py.core.nts_cookies import NtsKeys, ServerKeySet
from ntpd_py.core.nts_extensions import (
    AesSivCmac256,
    NtsError,
    build_client_request,
    open_server_reply,
)
from ntpd_py.core.packet import client_request

from tests.adversarial.helpers import nts_server_daemon
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import free_udp_port

pytestmark = pytest.mark.integration

KEYS = NtsKeys(os.urandom(32), os.urandom(32))


def _valid(keyset: ServerKeySet, transmit: int, placeholders: int = 1) -> tuple[bytes, bytes]:
    uid = os.urandom(32)
    request = build_client_request(client_request(transmit, 6), uid,
                                   keyset.make_cookie(KEYS, os.urandom(16)), placeholders,
                                   AesSivCmac256(KEYS.c2s), os.urandom(16))
    return uid, request


def _hostile(rng: random.Random, base: bytes) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for at in range(len(base)):
        data = bytearray(base)
        data[at] ^= 1 << rng.randrange(8)
        out.append(("flipped", bytes(data)))
    for cut in range(49, len(base), 7):
        out.append(("cut", base[:cut]))
    for at in range(48, len(base) - 4, 4):  # every 4-byte boundary: a lying length
        for size in (0, 4, 15, 16, 0xFFFC, 0xFFFF):
            data = bytearray(base)
            struct.pack_into(">H", data, at + 2, size)
            out.append(("length", bytes(data)))
    auth = len(base) - 40  # the authenticator: nonce and ciphertext lengths
    for nonce_len, ct_len in ((0, 16), (15, 16), (16, 0), (16, 15), (0xFFFF, 16), (16, 0xFFFF)):
        data = bytearray(base)
        struct.pack_into(">HH", data, auth + 4, nonce_len, ct_len)
        out.append(("authenticator", bytes(data)))
    out += [("random", rng.randbytes(rng.randrange(49, 1141))) for _ in range(300)]
    # a "lying" length equal to the true one, or a zero written over zeros, is no change
    out = [(kind, data) for kind, data in out if data != base]
    out += [("replay", base)] * 20
    rng.shuffle(out)
    return out


def _servers(daemon: Daemon) -> dict[str, int]:
    total: dict[str, int] = {}
    for server in (daemon.status() or {}).get("servers", []):
        for key, value in server["counters"].items():
            total[key] = total.get(key, 0) + value
    return total


def test_hostile_nts_traffic_gets_no_authenticated_reply_and_the_engine_keeps_serving() -> None:
    port = free_udp_port()
    addr = ("127.0.0.1", port)
    daemon, keyset = nts_server_daemon(port)
    rng = random.Random(20)
    with daemon:
        daemon.wait_running(["server"])
        assert "takes the Python path" not in daemon.log()  # the C engine serves
        pid = {p["worker_id"]: p["pid"] for p in daemon.status()["processes"]}["server"]  # type: ignore[index]
        base_uid, base = _valid(keyset, 0x0FFF_0000_0000_0001)
        hostile = _hostile(rng, base)
        valid: dict[int, bytes] = {}  # transmit -> uid
        sizes: dict[int, int] = {}  # transmit (the origin a reply echoes) -> request size
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            replies: list[bytes] = []
            for start in range(0, len(hostile), 40):
                transmit = 0x0AAA_0000_0000_0000 + start
                uid, request = _valid(keyset, transmit, start % 3)
                valid[transmit] = uid
                sizes[transmit] = len(request)
                for _, data in hostile[start : start + 40]:
                    sock.sendto(data, addr)
                sock.sendto(request, addr)
                while select.select([sock], [], [], 0.2)[0]:
                    replies.append(sock.recv(2048))
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                if select.select([sock], [], [], 0.2)[0]:
                    replies.append(sock.recv(2048))
        answered: set[int] = set()
        authenticated_hostile = 0
        for reply in replies:
            origin = struct.unpack_from(">Q", reply, 24)[0]
            assert len(reply) <= max(sizes.get(origin, len(base)), len(base))
            if origin in valid:
                open_server_reply(reply, valid[origin], AesSivCmac256(KEYS.s2c))  # verifies
                answered.add(origin)
                continue
            try:
                open_server_reply(reply, base_uid, AesSivCmac256(KEYS.s2c))
            except NtsError:
                continue  # a NAK, a plain reply to a plain-looking packet: not authenticated
            authenticated_hostile += 1
        replays = sum(1 for kind, _ in hostile if kind == "replay")
        # an authenticated reply to a hostile packet only where it is the valid request
        # itself (a replay): every other change is covered by the authenticator
        assert authenticated_hostile <= replays
        assert answered == set(valid), f"{len(set(valid) - answered)} valid requests unanswered"

        def counted() -> dict[str, int] | None:
            counters = _servers(daemon)
            return counters if counters.get("nts_received", 0) >= len(valid) else None

        counters = wait_for(counted, 15, "the NTS counters in ntpctl status --json")
        assert counters["nts_dropped"] > 0 and counters["nts_accepted"] >= len(valid)
        now = {p["worker_id"]: p for p in daemon.status()["processes"]}  # type: ignore[index]
        assert now["server"]["pid"] == pid and now["server"]["restarts"] == 0
        print(f"\nhostile NTS: {len(hostile)} packets, {len(valid)} valid interleaved (all "
              f"answered), {authenticated_hostile} authenticated replies to replays of "
              f"{replays}; counters {counters}")
    daemon.cleanup()
