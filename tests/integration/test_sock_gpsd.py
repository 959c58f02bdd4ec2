"""The sock source's socket against a misbehaving feeder process (tests/data/sock_sender.py).

A separate process connects to the socket workers/refclock_io.py made and sends
malformed datagrams of every kind, then a flood; the receiver drops and counts
each by reason and keeps accepting good samples. Real gpsd feeding this socket
runs in the QEMU guest (tests/integration/test_pps_guest.py: gpsd does no time
service for gpsfake's ptys, so it needs the guest's serial port and PPS device).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest
from ntpd_py.core.config import SockSourceConfig
from ntpd_py.core.sock_source import SockSource, SockState
from ntpd_py.workers.refclock_io import SockReceiver, create_sock_socket

pytestmark = pytest.mark.integration

SENDER = Path(__file__).resolve().parents[1] / "data" / "sock_sender.py"
# what the source must call each kind the sender sends
REASONS = {
    "empty": "wrong-size", "short": "wrong-size", "long": "wrong-size", "huge": "wrong-size",
    "magic": "wrong-magic", "nan": "offset-not-finite", "inf": "offset-not-finite",
    "absurd": "offset-absurd", "leap": "bad-leap", "timeval": "bad-timeval", "pulse": "pulse",
    "stale": "stale", "ahead": "ahead",
}


def _feed(tmp_path: Path, kinds: list[str]) -> tuple[SockReceiver, dict[str, object]]:
    path = str(tmp_path / "chrony.ttyS0.sock")
    sock = create_sock_socket(path)
    source = SockSource(SockSourceConfig.model_validate(
        {"mode": "sock", "path": path, "precision": 1e-3}), "sock:" + path)
    receiver = SockReceiver(sock, source)
    sender = subprocess.Popen([sys.executable, str(SENDER), path, *kinds],
                              stdout=subprocess.PIPE, text=True)
    try:
        while True:
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                receiver.on_readable()
            elif sender.poll() is not None:
                break
        out = sender.communicate(timeout=30)[0]
    finally:
        if sender.poll() is None:
            sender.kill()  # our own child, by its Popen handle
            sender.wait()
        sock.close()
    return receiver, json.loads(out)


def test_every_malformed_kind_is_dropped_and_counted(tmp_path: Path) -> None:
    kinds = ["good", *REASONS, "good"]
    receiver, report = _feed(tmp_path, kinds)
    status = receiver.source.status()
    want: dict[str, int] = {}
    for kind in REASONS:
        want[REASONS[kind]] = want.get(REASONS[kind], 0) + 1
    assert status.drops == want
    assert status.samples == 2 and report["sent"]["good"] == 2  # type: ignore[index]
    assert receiver.overflow == 0
    # the malformed run in between put the source in REJECTING; the last good one recovered it
    assert receiver.source.state is SockState.RUNNING


def test_a_flood_is_bounded_and_every_datagram_accounted(tmp_path: Path) -> None:
    receiver, report = _feed(tmp_path, ["good", "flood:3000", "good"])
    sent = report["sent"]
    assert isinstance(sent, dict)
    total = sent["good"] + sent.get("flood", 0)
    status = receiver.source.status()
    assert status.samples + sum(status.drops.values()) + receiver.overflow == total
    # a flood is not a receiver: most of it is refused as such, a few samples get through
    assert status.drops.get("flood", 0) + receiver.overflow > total // 2
    assert 1 <= status.samples < total // 4
    assert receiver.source.state is SockState.RUNNING
