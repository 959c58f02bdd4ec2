"""The NTS-KE server loop against our KE client and against raw, slow and hostile clients
(loopback; a CA made by the test; the loop runs in a thread stopped by the test)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntpd_py.core.nts_cookies import ServerKeySet
from ntpd_py.core.nts_ke_records import (
    KeErrorCode,
    KeFailure,
    Record,
    RecordType,
    client_request,
    encode_records,
    parse_message,
)
from ntpd_py.workers.nts_ke_client import KeOutcome, key_exchange
from ntpd_py.workers.nts_ke_server import KeServer, server_context

from tests.nts_helpers import Pki, make_pki


class Running:
    def __init__(self, server: KeServer, keyset: ServerKeySet) -> None:
        self.server = server
        self.keyset = keyset
        self.port = int(server.address[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=server.serve_forever, args=(self._stop.is_set,))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def start(pki: Pki, **options: object) -> Running:
    import os

    keyset = ServerKeySet.generate(os.urandom, 0)
    server = KeServer(("127.0.0.1", 0), server_context(pki.chain_pem, pki.key_pem),
                      lambda: keyset, **options)  # type: ignore[arg-type]
    return Running(server, keyset)


@pytest.fixture
def running(pki: Pki) -> Iterator[Running]:
    handle = start(pki, ntp_port=11123, timeout_s=1.0, max_connections=4)
    try:
        yield handle
    finally:
        handle.stop()


def raw_tls(port: int, ca: Path, alpn: list[str] | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(alpn if alpn is not None else ["ntske/1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=3)
    return context.wrap_socket(raw, server_hostname="localhost")


def read_message(tls: ssl.SSLSocket) -> tuple[Record, ...]:
    data = b""
    while True:
        chunk = tls.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
        records = parse_message(data)
        if records is not None:
            return records


def test_our_client_gets_cookies_holding_its_keys(running: Running, pki: Pki) -> None:
    outcome = key_exchange("localhost", running.port, ca_file=str(pki.ca_cert), timeout=5)
    assert isinstance(outcome, KeOutcome), outcome
    assert len(outcome.response.cookies) == 8
    assert outcome.ntp_port == 11123 and outcome.ntp_host == "localhost"
    # both ends exported the same keys: the server sealed exactly the client's keys
    assert all(running.keyset.open_cookie(c) == outcome.keys for c in outcome.response.cookies)
    assert running.server.stats.completed == 1


def test_bad_requests_get_error_records(running: Running, pki: Pki) -> None:
    with raw_tls(running.port, pki.ca_cert) as tls:
        tls.sendall(encode_records([Record(RecordType.NEXT_PROTOCOL, b"\0\0", True),
                                    Record(0x2222, b"", True),
                                    Record(RecordType.END_OF_MESSAGE, b"", True)]))
        assert read_message(tls) == (
            Record(RecordType.ERROR, KeErrorCode.UNRECOGNIZED_CRITICAL_RECORD.to_bytes(2, "big"),
                   True),)
    with raw_tls(running.port, pki.ca_cert) as tls:
        tls.sendall(encode_records([Record(RecordType.END_OF_MESSAGE, b"", False)]))
        (error,) = read_message(tls)
        assert error.record_type == RecordType.ERROR and error.body == b"\0\x01"
    with raw_tls(running.port, pki.ca_cert) as tls:  # a request in pieces is fine
        request = client_request()
        for i in range(len(request)):
            tls.sendall(request[i : i + 1])
        assert sum(r.record_type == RecordType.NEW_COOKIE for r in read_message(tls)) == 8


def test_no_alpn_no_key_exchange(running: Running, pki: Pki) -> None:
    # The server finishes the handshake without ALPN (OpenSSL's "no overlap"), then
    # closes without reading: the client gets no answer at all.
    try:
        with raw_tls(running.port, pki.ca_cert, alpn=["http/1.1"]) as tls:
            tls.sendall(client_request())
            answer = tls.recv(4096)
    except (ssl.SSLError, ConnectionError):
        answer = b""
    assert answer == b""
    assert running.server.stats.completed == 0


def test_slow_and_silent_clients_cannot_exhaust_it(running: Running, pki: Pki) -> None:
    silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(4)]
    try:
        time.sleep(0.3)
        assert running.server.open_connections == 4
        extra = socket.create_connection(("127.0.0.1", running.port))
        extra.settimeout(3)
        assert extra.recv(10) == b""  # closed at once: every slot taken
        extra.close()
        assert running.server.stats.refused_full >= 1
        time.sleep(1.2)  # past the 1 s deadline: the silent ones are dropped
        assert running.server.stats.timed_out >= 4 and running.server.open_connections == 0
        # a partial request does not extend a deadline either
        slow = raw_tls(running.port, pki.ca_cert)
        slow.sendall(client_request()[:3])
        time.sleep(1.2)
        assert running.server.stats.timed_out >= 5
        outcome = key_exchange("127.0.0.1", running.port, ca_file=str(pki.ca_cert), timeout=5)
        assert isinstance(outcome, KeOutcome)
        slow.close()
    finally:
        for s in silent:
            s.close()


def test_untrusting_client_fails(running: Running, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    result = key_exchange("localhost", running.port, ca_file=str(other.ca_cert), timeout=5)
    assert isinstance(result, KeFailure)
