"""A misbehaving SOCK feeder: sends the datagrams named on the command line to a socket.

Run as its own process by tests/integration/test_sock_gpsd.py. Each argument is one
kind of datagram; the counts it sent are printed as JSON at the end. ``flood:N`` sends
N valid samples as fast as the socket takes them (non-blocking: what the kernel
refuses is counted as refused, not sent).
"""

from __future__ import annotations

import json
import math
import socket
import struct
import sys
import time

MAGIC = 0x534F434B


def sample(offset: float = 0.001, *, magic: int = MAGIC, leap: int = 0, pulse: int = 0,
           age_s: float = 0.05, sec: int | None = None) -> bytes:
    now = time.time() - age_s
    whole = int(now) if sec is None else sec
    return struct.pack("=qqdiiiI", whole, int((now % 1) * 1e6), offset, pulse, leap, 0, magic)


KINDS = {
    "good": lambda: sample(),
    "empty": lambda: b"",
    "short": lambda: sample()[:39],
    "long": lambda: sample() + b"\0",
    "huge": lambda: b"\xff" * 1000,
    "magic": lambda: sample(magic=0x4B434F53),
    "nan": lambda: sample(math.nan),
    "inf": lambda: sample(-math.inf),
    "absurd": lambda: sample(1e300),
    "leap": lambda: sample(leap=7),
    "timeval": lambda: sample(sec=-5),
    "pulse": lambda: sample(pulse=1),
    "stale": lambda: sample(age_s=60.0),
    "ahead": lambda: sample(age_s=-30.0),
}


def main(path: str, kinds: list[str]) -> None:
    sent: dict[str, int] = {}
    refused = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        for kind in kinds:
            name, _, count = kind.partition(":")
            if name == "flood":
                sock.setblocking(False)
                for _ in range(int(count)):
                    try:
                        sock.send(sample())
                    except BlockingIOError:
                        refused += 1
                    else:
                        sent["flood"] = sent.get("flood", 0) + 1
                sock.setblocking(True)
                continue
            sock.send(KINDS[name]())
            sent[name] = sent.get(name, 0) + 1
            time.sleep(0.02)  # a receiver's pace: the kernel queues only a few datagrams
    print(json.dumps({"sent": sent, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
