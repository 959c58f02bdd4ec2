"""The e2e scenario's second source: an NTP server on the guest's loopback serving true time.

Its clock is CLOCK_MONOTONIC_RAW mapped onto the PHC timeline by a line
fitted before the guest clock was detuned (see :mod:`tests.vm.phc_truth`).
MONOTONIC_RAW is never adjusted, so neither daemon steering the guest clock
nor `rmmod igb` moves what this server serves: it is what an excellent
network server would be, minus the network (a stratum-1 server reached over
loopback). It does not touch any clock. Stdlib only, and none of ntpd-py's
code, so it starts fast under TCG and stays independent of what it tests.

Receive timestamps come from the kernel (SO_TIMESTAMPNS, CLOCK_REALTIME) and
are moved onto MONOTONIC_RAW with the realtime − raw offset read right after.
A transmit timestamp must be in the packet before it is sent, so it is the
clock read plus the send latency the kernel reported (software transmit
timestamps) for the previous replies: under TCG that latency is ~0.2 ms and
left uncorrected it would bias every client by half of it.

    python -m tests.vm.raw_ntp_server --listen 127.0.0.1:11123 --line X0,Y0,C,SLOPE
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import struct
import sys
import time

from .phc_truth import Line, real_minus_raw

__all__ = ["NTP_EPOCH_OFFSET_S", "ntp64", "reply_for"]

NTP_EPOCH_OFFSET_S = 2_208_988_800
SO_TIMESTAMPNS = 35  # Linux; SCM_TIMESTAMPNS has the same value
SO_TIMESTAMPING = 37  # and SCM_TIMESTAMPING
TX_STAMP_FLAGS = (1 << 1) | (1 << 4) | (1 << 11)  # TX_SOFTWARE | SOFTWARE | OPT_TSONLY
LATENCY_HISTORY = 15
PRECISION_LOG2 = -20  # about 1 µs
REFID = b"RAW\0"
_HEADER = struct.Struct("!BBbbII4sQQQQ")


def ntp64(unix_ns: int) -> int:
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return ((seconds + NTP_EPOCH_OFFSET_S) << 32) | ((nanos << 32) // 1_000_000_000)


def reply_for(request: bytes, receive_ns: int) -> bytearray | None:
    """A mode-4 answer to a mode-3 request without its transmit timestamp, or None.

    The transmit timestamp (bytes 40..48) is written by the caller right before
    sending: every microsecond between reading the clock and the send is an
    error of half that in the client's offset.
    """
    if len(request) < 48:
        return None
    first = request[0]
    version, mode = (first >> 3) & 7, first & 7
    if mode != 3 or not 1 <= version <= 4:
        return None
    poll = struct.unpack_from("!b", request, 2)[0]
    origin = struct.unpack_from("!Q", request, 40)[0]
    return bytearray(_HEADER.pack(
        (0 << 6) | (version << 3) | 4, 1, poll, PRECISION_LOG2,
        0, 1,  # root delay 0, root dispersion 1/65536 s
        REFID, ntp64(receive_ns), origin, ntp64(receive_ns), 0,
    ))


def _kernel_stamp(ancillary: list[tuple[int, int, bytes]], kind: int) -> int | None:
    for level, got, payload in ancillary:
        if level == socket.SOL_SOCKET and got == kind and len(payload) >= 16:
            sec, nsec = struct.unpack_from("@qq", payload)
            if sec or nsec:
                return int(sec * 1_000_000_000 + nsec)
    return None


class SendLatency:
    """Clock read → kernel transmit stamp, the median of the last few replies (ns)."""

    def __init__(self) -> None:
        self.history: list[int] = []

    def estimate(self) -> int:
        ordered = sorted(self.history)
        return ordered[len(ordered) // 2] if ordered else 0

    def learn(self, sock: socket.socket, read_raw: int) -> None:
        try:
            _, ancillary, _, _ = sock.recvmsg(1, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except OSError:
            return
        tx_real = _kernel_stamp(ancillary, SO_TIMESTAMPING)
        if tx_real is not None:
            rr = real_minus_raw(3)[0]
            self.history = [*self.history[-(LATENCY_HISTORY - 1):], tx_real - rr - read_raw]


def serve(listen: str, line: Line) -> int:
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_STAMP_FLAGS)
    sock.bind((host, int(port)))
    latency = SendLatency()
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    print(f"listening on {listen}", flush=True)
    answered = 0
    pack_into, raw_clock = struct.Struct("!Q").pack_into, time.CLOCK_MONOTONIC_RAW
    while not stop[0]:
        try:
            if not select.select([sock], [], [], 0.5)[0]:
                continue
            data, ancillary, _, peer = sock.recvmsg(1024, socket.CMSG_SPACE(16))
        except InterruptedError:
            continue
        rr, raw_now, _ = real_minus_raw(3)
        rx_real = _kernel_stamp(ancillary, SO_TIMESTAMPNS)
        rx_raw = raw_now if rx_real is None else rx_real - rr
        answer = reply_for(data, line.at(rx_raw))
        if answer is not None:
            ahead = latency.estimate()
            read_raw = time.clock_gettime_ns(raw_clock)
            pack_into(answer, 40, ntp64(line.at(read_raw + ahead)))
            sock.sendto(answer, peer)
            latency.learn(sock, read_raw)
            answered += 1
    print(f"answered {answered} requests; send latency {latency.estimate()} ns", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.raw_ntp_server",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:11123")
    parser.add_argument("--line", required=True,
                        help="X0,Y0,C,SLOPE: PHC ns = Y0 + C + SLOPE·(raw ns − X0)")
    args = parser.parse_args(argv)
    x0, y0, c, slope = args.line.split(",")
    return serve(args.listen, Line(int(x0), int(y0), float(c), float(slope)))


if __name__ == "__main__":
    sys.exit(main())
