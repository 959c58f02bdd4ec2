"""Our KE client against hostile NTS-KE servers (loopback, Python's ssl as the server):
malformed records, an oversized answer, a connection cut mid-response, silence after the
handshake, an Error record, a server without ALPN. Each gives a typed failure within the
client's deadline; nothing raises."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ntpd_py.core.nts_ke_records import (
    FailureKind,
    KeFailure,
    Record,
    RecordType,
    encode_records,
    error_response,
)
from ntpd_py.workers.nts_ke_client import key_exchange

from tests.nts_helpers import Pki, make_pki

Behaviour = Callable[[ssl.SSLSocket], None]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def serve_once(pki: Pki, behaviour: Behaviour, alpn: bool = True) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if alpn:
        context.set_alpn_protocols(["ntske/1"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                tls.recv(4096)  # the client's request
                behaviour(tls)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield port
    finally:
        thread.join(10)
        listener.close()


def exchange(pki: Pki, behaviour: Behaviour, alpn: bool = True,
             timeout: float = 2.0) -> tuple[KeFailure, float]:
    gen = serve_once(pki, behaviour, alpn)
    port = next(gen)
    start = time.monotonic()
    try:
        result = key_exchange("localhost", port, ca_file=str(pki.ca_cert), timeout=timeout)
        elapsed = time.monotonic() - start
    finally:
        gen.close()
    assert isinstance(result, KeFailure), result
    return result, elapsed


def test_malformed_records(pki: Pki) -> None:
    bad = encode_records([Record(RecordType.NEW_COOKIE, b"c" * 8, True),  # critical cookie
                          Record(RecordType.END_OF_MESSAGE, b"", True)])
    result, _ = exchange(pki, lambda tls: tls.sendall(bad))
    assert result.kind is FailureKind.MALFORMED


def test_oversized_answer(pki: Pki) -> None:
    huge = encode_records([Record(0x1234, b"x" * 60000)])  # never ends
    result, _ = exchange(pki, lambda tls: tls.sendall(huge))
    assert result.kind in (FailureKind.MALFORMED, FailureKind.TRANSPORT)
    assert "long" in result.detail


def test_cut_mid_response(pki: Pki) -> None:
    partial = encode_records([Record(RecordType.NEXT_PROTOCOL, b"\0\0", True)])
    result, _ = exchange(pki, lambda tls: tls.sendall(partial))
    assert result.kind is FailureKind.TRANSPORT


def test_silence_after_the_handshake_meets_the_deadline(pki: Pki) -> None:
    result, elapsed = exchange(pki, lambda tls: time.sleep(3.0), timeout=0.5)
    assert result.kind is FailureKind.TRANSPORT and "timed out" in result.detail
    assert elapsed < 2.5  # the deadline, not the server, ended the exchange


def test_error_record(pki: Pki) -> None:
    result, _ = exchange(pki, lambda tls: tls.sendall(error_response(2)))
    assert result.kind is FailureKind.SERVER_ERROR and result.error_code == 2


def test_server_without_alpn(pki: Pki) -> None:
    gen = serve_once(pki, lambda tls: None, alpn=False)
    port = next(gen)
    try:
        result = key_exchange("localhost", port, ca_file=str(pki.ca_cert), timeout=2.0)
    finally:
        gen.close()
    assert isinstance(result, KeFailure) and "ALPN" in result.detail


def test_an_unreadable_certificate_authority_is_named_in_the_failure(tmp_path: Path) -> None:
    from ntpd_py.workers.nts_ke_client import KeFailure, key_exchange

    missing = tmp_path / "no-such-ca.pem"
    outcome = key_exchange("127.0.0.1", 9, ca_file=str(missing), timeout=1.0)
    assert isinstance(outcome, KeFailure)
    # not OpenSSL's bare "BIO lib": the file, the uid that tried, and why
    assert f"certificate-authority {missing} cannot be read by uid" in outcome.detail
    assert "No such file" in outcome.detail
