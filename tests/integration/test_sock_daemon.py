"""The real daemon with a `mode = "sock"` source: the supervisor's socket, the worker, status.

`ntpd-py run` (observe clock, so nothing is steered) creates the feeder's Unix
datagram socket; this test plays the feeder (gpsd's role), sending well-formed
SOCK samples stamped with the host clock and some malformed datagrams, and reads
`ntpctl status --json` / `ntpctl sources`: the source is there with kind sock,
its samples counted and every drop counted under its reason. The same in
`--single-process` mode, which builds the same task.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
import threading
import time
from typing import Any

import pytest
from ntpd_py.core.refclock_sock import encode_sock_sample

from tests.integration.daemon import Daemon, wait_for

pytestmark = pytest.mark.integration

OFFSET_S = 0.0123  # what the "feeder" says the host clock is off by
SPACING_S = 0.25


def _body(path: str) -> str:
    return f"""
[[source]]
mode = "sock"
path = "{path}"
precision = 1e-3

[synchronization]
minimum-agreeing-sources = 1
"""


class Feeder:
    """Sends a good sample every SPACING_S and, once, a few malformed datagrams."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _send(self, data: bytes) -> None:
        # the daemon is not up yet: a feeder keeps trying, as gpsd does
        with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
            self.sock.sendto(data, self.path)

    def _run(self) -> None:
        malformed = [
            encode_sock_sample(time.time_ns(), 0.0, magic=0x12345678),  # wrong-magic
            b"\x00" * 7,  # wrong-size
            encode_sock_sample(time.time_ns(), math.inf),  # offset-not-finite
            encode_sock_sample(time.time_ns(), OFFSET_S, pulse=True),  # pulse
        ]
        bad_sent = False
        while not self._stop.is_set():
            self._send(encode_sock_sample(time.time_ns(), OFFSET_S))
            self.sent += 1
            if self.sent >= 8 and not bad_sent:
                for data in malformed:
                    self._send(data)
                bad_sent = True
            self._stop.wait(SPACING_S)


def _sock_source(daemon: Daemon, worker_id: str) -> dict[str, Any] | None:
    document = daemon.status()
    if document is None:
        return None
    return next((s for s in document["sources"] if s["source_id"] == worker_id), None)


def _check_daemon(daemon: Daemon, path: str) -> None:
    worker_id = f"sock:{path}"
    with Feeder(path):
        def fed() -> dict[str, Any] | None:
            source = _sock_source(daemon, worker_id)
            if source is None or source["samples"] < 5:
                return None
            counters = source["counters"]
            if not all(counters.get(f"drop:{reason}") for reason in
                       ("wrong-magic", "wrong-size", "offset-not-finite", "pulse")):
                return None
            # three drops in a row made it "rejecting"; the next good sample ends that
            return source if source["worker_state"] == "running" else None

        source = wait_for(fed, 40, "sock samples and drop counters in ntpctl status")
    assert source["kind"] == "sock"
    assert source["name"] == path
    assert source["worker_state"] == "running", source
    assert source["counters"]["samples"] >= 5
    # one of each malformed kind was sent: one of each counted
    for reason in ("wrong-magic", "wrong-size", "offset-not-finite", "pulse"):
        assert source["counters"][f"drop:{reason}"] == 1, source["counters"]
    # The feeder's offset reached the algorithm: the observed clock was stepped by it,
    # and the samples since then read against the stepped clock show none left.
    assert f"stepping the clock by +{OFFSET_S:.9f} s" in daemon.log()
    assert source["last_offset_s"] is not None
    assert abs(source["last_offset_s"]) < 1e-4, source
    table = daemon.ctl("sources")
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if path in row)
    assert " sock " in line, table.stdout


def test_daemon_creates_the_socket_and_reports_the_sock_source() -> None:
    daemon = Daemon("", clock="observe")
    path = str(daemon.dir / "gps.sock")
    daemon.write_config(_body(path))
    with daemon:
        worker_id = f"sock:{path}"
        document = daemon.wait_running([worker_id])
        (proc,) = [p for p in document["processes"] if p["worker_id"] == worker_id]
        assert proc["role"] == "sock"
        mode = os.lstat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        if os.geteuid() == 0:
            # its own uid, never root: it only receives on the fd it was handed
            assert proc["user"] != "root"
        _check_daemon(daemon, path)
    assert not os.path.exists(path)  # removed when the daemon stops


def test_single_process_runs_the_same_sock_task() -> None:
    daemon = Daemon("", clock="observe", extra_args=("--single-process",))
    path = str(daemon.dir / "gps.sock")
    daemon.write_config(_body(path))
    with daemon:
        wait_for(lambda: os.path.exists(path), 20, "the sock socket")
        _check_daemon(daemon, path)


def test_a_restarted_worker_gets_the_same_socket_and_a_reload_adds_and_removes_one() -> None:
    daemon = Daemon("", clock="observe")
    first = str(daemon.dir / "gps.sock")
    second = str(daemon.dir / "gps2.sock")
    daemon.write_config(_body(first))
    with daemon:
        worker_id = f"sock:{first}"
        document = daemon.wait_running([worker_id])
        old_pid = next(p["pid"] for p in document["processes"] if p["worker_id"] == worker_id)
        inode = os.lstat(first).st_ino
        with Feeder(first):
            wait_for(lambda: (_sock_source(daemon, worker_id) or {}).get("samples", 0) >= 2,
                     30, "samples before the kill")
            os.kill(old_pid, 9)  # the worker only: the supervisor restarts it

            def restarted_with_samples() -> bool:
                procs = daemon.workers()
                proc = procs.get(worker_id, {})
                source = _sock_source(daemon, worker_id) or {}
                # the new process's own "receiving" line: its status is not the old one's
                received = daemon.log().count(f"running: receiving samples on {first}")
                return (proc.get("state") == "running" and proc.get("pid") not in (None, old_pid)
                        and received >= 2 and source.get("worker_state") == "running")

            wait_for(restarted_with_samples, 40, "the restarted worker receiving samples")
        # the supervisor kept the socket: the feeder never saw it vanish
        assert os.lstat(first).st_ino == inode
        # a reload adds a sock source (its socket made) and removes the first one
        daemon.write_config(_body(second))
        daemon.signal(1)  # SIGHUP
        daemon.wait_running([f"sock:{second}"])
        assert stat.S_ISSOCK(os.lstat(second).st_mode)
        wait_for(lambda: not os.path.exists(first), 20, "the removed source's socket gone")
