"""A minimal UDP server loop for benchmarks/nts.py: one socket, one request at a time,
the plain responder (core/ntp_server.py) for the header and, in ``nts`` mode, the
server-side NTS of core/nts_server.py around it. The same loop in both modes, so the
ratio of their rates is the cost of NTS on our server path, not of the loop.

    python benchmarks/nts_udp_loop.py PORT plain|nts COOKIE_KEY_HEX

Not the daemon's server worker (which answers NTS through the C engine): batching, rate
limiting and privilege separation are left out of both modes alike.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from ntpd_py.core.config import ServerConfig
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.nts_cookies import CookieKey, ServerKeySet
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request

NTP_EPOCH = 2208988800


def main() -> int:
    port, mode, key_hex = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    keyset = ServerKeySet([CookieKey(1, bytes.fromhex(key_hex))], 0)
    state = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.001, 0.001, 1,
                             int((time.time() + NTP_EPOCH) * 2**32))
    responder = Responder(ServerConfig(listen=f"127.0.0.1:{port}"), state=state)
    out = bytearray(2048)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.bind(("127.0.0.1", port))
    nts = mode == "nts"
    while True:
        data, peer = sock.recvfrom(2048)
        rx = int((time.time() + NTP_EPOCH) * 2**32)
        length = responder.respond(data, len(data), b"\x7f\0\0\1", rx, time.monotonic_ns(), out)
        if not length:
            continue
        if not nts:
            sock.sendto(out[:length], peer)
            continue
        verdict = judge_request(data, keyset)
        if verdict.verdict is Verdict.AUTHENTICATED:
            sock.sendto(authenticated_reply(bytes(out[:48]), verdict, keyset, os.urandom,
                                            len(data)), peer)


if __name__ == "__main__":
    sys.exit(main())
