"""The sock source's socket against a misbehaving feeder process (tests/data/sock_sender.py).

A separate process connects to the socket workers/refclock_io.py made and sends
malformed datagrams of every kind, then a flood; the receiver drops and counts
each by reason and keeps accepting good samples. Real gpsd feeding this socket
runs in the QEMU guest (tests/integration/test_pps_guest.py): gpsd does no time
service for gpsfake's ptys, which the last test here shows with the recorded log
tests/data/gps-1hz.nmea, so it needs the guest's serial port and PPS device.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
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


NMEA_LOG = Path(__file__).resolve().parents[1] / "data" / "gps-1hz.nmea"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gpsd_under_gpsfake_reads_the_log_but_never_feeds_a_chrony_socket() -> None:
    """Why the real-gpsd sock test runs in the QEMU guest: gpsd (3.22) does no time
    service for a pty, which is what gpsfake feeds it, so it never looks for
    /run/chrony.<pty>.sock. It does parse the recorded log (the TPV times are its)."""
    gpsfake = shutil.which("gpsfake")
    if gpsfake is None:
        pytest.skip("gpsfake is not installed (Debian gpsd-clients: tests/run.sh)")
    proc = subprocess.Popen([gpsfake, "-1", "-n", "-c", "0.05", "-D", "9", "-P",
                             str(_free_port()), "-p", str(NMEA_LOG)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # gpsfake stops the gpsd it started
            proc.communicate(timeout=30)
    times = [json.loads(line)["time"] for line in out.splitlines()
             if '"class":"TPV"' in line and '"time"' in line]
    assert times[:3] == ["2026-12-04T12:34:00.000Z", "2026-12-04T12:34:01.000Z",
                         "2026-12-04T12:34:02.000Z"]
    assert len(times) >= 19
    assert "/dev/pts/" in err  # the pty gpsfake made, activated by gpsd
    assert "chrony" not in err.lower()  # no chrony socket looked for, opened or written
