"""The server sockets the supervisor binds get a receive buffer large enough for a burst."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from ntpd_py.supervisor.setup import SERVER_RCVBUF, _bind_udp, grow_receive_buffer


def test_bound_server_socket_has_the_large_receive_buffer(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test-rcvbuf")
    with caplog.at_level(logging.INFO, logger="test-rcvbuf"):
        fd = _bind_udp("127.0.0.1:0", "127.0.0.1", 0, False, log)
    sock = socket.socket(fileno=fd)
    try:
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        if os.geteuid() == 0 or rmem_max >= SERVER_RCVBUF:
            assert granted >= SERVER_RCVBUF  # the kernel reports twice what was set
        else:
            assert granted >= 2 * rmem_max
        assert f"receive buffer {granted // 1024} KiB" in caplog.text
    finally:
        sock.close()


def test_a_buffer_above_the_kernel_default_is_granted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert grow_receive_buffer(sock, 4 * default) > default
