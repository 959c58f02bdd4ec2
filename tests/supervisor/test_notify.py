"""sd_notify over a real AF_UNIX datagram socket, and when the supervisor says what."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from ntpd_py.supervisor.notify import READY_GRACE_NS, SystemdNotifier, sd_notify

S = 1_000_000_000


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def _drain(sock: socket.socket) -> list[str]:
    got = []
    sock.settimeout(0.05)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except TimeoutError:
        return got


def test_sd_notify_to_a_path_and_to_an_abstract_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"READY=1"
    name = f"ntpd-py-test-{os.getpid()}"
    with _receiver("\0" + name) as sock:
        assert sd_notify("STATUS=hello", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STATUS=hello"


def test_sd_notify_without_systemd_is_a_no_op(tmp_path: Path) -> None:
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": "relative"})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})


@dataclass
class _Child:
    state: str = "running"


@pytest.fixture
def notifier(tmp_path: Path):
    path = str(tmp_path / "notify")
    sock = _receiver(path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    yield SystemdNotifier(logging.getLogger("test"), env), sock
    sock.close()


def test_ready_once_every_process_heartbeats_then_status_and_watchdog(notifier) -> None:
    systemd, sock = notifier
    children = {"clock-control": _Child(), "ptp:/dev/ptp0": _Child(), "metrics": _Child()}
    systemd.tick(0, children)
    assert _drain(sock) == ["STATUS=starting: 0/3 processes up", "WATCHDOG=1"]
    systemd.heartbeat("clock-control", "not synchronized; 0/1 sources usable")
    systemd.heartbeat("ptp:/dev/ptp0", "")
    systemd.tick(S, children)
    assert _drain(sock) == ["STATUS=starting: 2/3 processes up"]
    systemd.heartbeat("metrics", "")
    systemd.tick(2 * S, children)  # the watchdog is due every WatchdogSec / 2 = 2 s
    assert _drain(sock) == ["READY=1", "STATUS=not synchronized; 0/1 sources usable",
                            "WATCHDOG=1"]
    systemd.heartbeat("clock-control", "synchronized to /dev/ptp0")
    systemd.tick(3 * S, children)
    systemd.tick(3 * S + 1, children)
    assert _drain(sock) == ["STATUS=synchronized to /dev/ptp0"]  # once, not per tick
    systemd.reloading()
    systemd.reloaded()
    systemd.stopping()
    assert _drain(sock) == ["RELOADING=1", "READY=1", "STOPPING=1"]


def test_ready_after_the_grace_period_without_a_worker_that_never_came_up(notifier) -> None:
    systemd, sock = notifier
    children = {"clock-control": _Child(), "ptp:/dev/ptp9": _Child(state="backoff")}
    systemd.heartbeat("clock-control", "")
    systemd.tick(0, children)
    systemd.tick(READY_GRACE_NS - 1, children)
    assert "READY=1" not in _drain(sock)
    systemd.tick(READY_GRACE_NS, children)
    assert "READY=1" in _drain(sock)


def test_no_ready_without_clock_control(notifier) -> None:
    systemd, sock = notifier
    children = {"clock-control": _Child(state="backoff")}
    systemd.tick(0, children)
    systemd.tick(10 * READY_GRACE_NS, children)
    assert "READY=1" not in _drain(sock)


def test_watchdog_for_another_pid_is_not_ours(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
        SystemdNotifier(logging.getLogger("test"), env).tick(0, {})
        assert "WATCHDOG=1" not in _drain(sock)
