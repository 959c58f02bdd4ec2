"""The exporter's HTTP server: clients that reset mid-reply are counted, logged rate-limited."""

from __future__ import annotations

import logging
import socket
import struct
import time

import pytest
from ntpd_py.workers.metrics_http import MetricsServer


def test_reset_clients_are_counted_and_logged_once(capfd: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def render(accept: str) -> tuple[int, str, bytes]:
        time.sleep(0.02)  # the client is gone by the time the reply is written
        return 200, "text/plain", b"x" * 200_000

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = MetricsServer(listener, render, logging.getLogger("test-metrics-http"))
    server.start()
    try:
        host, port = server.address
        for _ in range(20):
            client = socket.create_connection((host, port))
            client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST
        deadline = time.monotonic() + 10
        while server.client_errors < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.client_errors == 20
        # the server still serves
        with socket.create_connection((host, port)) as client:
            client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert client.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        server.stop()
    lines = [r for r in caplog.records if r.name == "test-metrics-http"]
    assert len(lines) == 1 and "metrics client 127.0.0.1" in lines[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err
