"""The exporter's listening socket: which child gets it, kept or rebound on reload."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.worker_spec import build_specs
from ntpd_py.supervisor.metrics_listen import metrics_listener

LOG = logging.getLogger("test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_of(fd: int) -> int:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_metrics_worker_only_when_the_key_is_set() -> None:
    assert "metrics" not in {s.role for s in build_specs(load_config_text(""))}
    on = load_config_text('[observability]\nmetrics-exporter-listen = "127.0.0.1:9975"\n')
    other = load_config_text('[observability]\nmetrics-exporter-listen = "127.0.0.1:9976"\n')
    [spec] = [s for s in build_specs(on) if s.role == "metrics"]
    [moved] = [s for s in build_specs(other) if s.role == "metrics"]
    assert spec.worker_id == "metrics" and spec.fingerprint != moved.fingerprint


def test_kept_when_unchanged_rebound_when_moved_closed_when_unset() -> None:
    first, second = _free_port(), _free_port()
    fd = metrics_listener(None, f"127.0.0.1:{first}", LOG)
    assert fd is not None and _port_of(fd) == first
    assert metrics_listener(fd, f"127.0.0.1:{first}", LOG) == fd
    moved = metrics_listener(fd, f"127.0.0.1:{second}", LOG)
    assert moved is not None and _port_of(moved) == second
    assert not _listening(first)  # the old socket was closed
    assert _listening(second)
    assert metrics_listener(moved, None, LOG) is None
    assert not _listening(second)


def test_a_busy_port_is_a_warning_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with caplog.at_level(logging.WARNING):
            assert metrics_listener(None, f"127.0.0.1:{port}", LOG) is None
    assert "cannot listen" in caplog.text and "keeps trying" in caplog.text
