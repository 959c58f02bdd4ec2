"""NTS-KE client I/O (RFC 8915 §4): one TLS 1.3 key exchange with a deadline.

Python's ``ssl`` cannot export keying material, which NTS needs for its C2S/S2C keys,
so TLS is pyOpenSSL's; the server name is checked with ``service_identity`` (pyOpenSSL
checks the chain only). Certificates are verified against the system store plus an
optional CA file (``certificate-authority``). Only TLS 1.3 and ALPN ``ntske/1`` are
accepted. The socket is non-blocking and every wait is bounded by one deadline for
the whole exchange, and the response by :data:`MAX_MESSAGE_BYTES`, so a slow or
hostile server costs at most ``timeout`` seconds and a few KiB.

The record logic is :mod:`ntpd_py.core.nts_ke_records`; this module moves bytes.
:func:`key_exchange` returns a :class:`KeOutcome` or a
:class:`~ntpd_py.core.nts_ke_records.KeFailure` (TRANSPORT for TLS, timeouts and
sizes); it never raises for anything the network does. :func:`key_exchange_steps` is
the same exchange as a generator that yields where it would wait, so an NTP worker
runs it inside its own loop and keeps answering its link and bus meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass

from ntpd_py.core.nts_cookies import NtsKeys
from ntpd_py.core.nts_ke_records import (
    AEAD_AES_SIV_CMAC_256,
    EXPORTER_LABEL,
    MAX_MESSAGE_BYTES,
    NTPV4_PROTOCOL,
    FailureKind,
    KeFailure,
    KeRecordError,
    KeResponse,
    client_request,
    exporter_context,
    parse_client_response,
    parse_message,
)
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address

__all__ = ["ALPN", "DEFAULT_TIMEOUT_S", "KeOutcome", "KeSteps", "KeWait", "client_context",
           "key_exchange", "key_exchange_steps"]

ALPN = b"ntske/1"
DEFAULT_TIMEOUT_S = 5.0
KEY_BYTES = 32  # AEAD_AES_SIV_CMAC_256
NTP_PORT = 123


@dataclass(frozen=True, slots=True)
class KeOutcome:
    """A successful key exchange: keys, cookies, and where to send NTP."""

    keys: NtsKeys
    response: KeResponse
    ntp_host: str  # the server the KE named, else the KE host
    ntp_port: int


class _Timeout(Exception):
    pass


def client_context(ca_file: str | None = None) -> SSL.Context:
    """A TLS 1.3-only client context verifying against the system store (+ ``ca_file``)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.set_default_verify_paths()
    if ca_file is not None:
        # OpenSSL says only "BIO lib" when the file cannot be read: name it ourselves
        # (the source's worker runs under its own uid, which must be able to read it).
        try:
            with open(ca_file, "rb"):
                pass
        except OSError as exc:
            raise OSError(exc.errno, f"certificate-authority {ca_file} cannot be read by "
                                     f"uid {os.getuid()}: {exc.strerror}") from None
        context.load_verify_locations(ca_file)
    context.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _d, _depth, ok: bool(ok))
    context.set_alpn_protos([ALPN])
    return context


@dataclass(frozen=True, slots=True)
class KeWait:
    """Where a key exchange in progress waits: ``sock`` readable (or writable) by
    ``deadline`` (``time.monotonic()`` seconds), after which it fails as timed out."""

    sock: socket.socket
    writable: bool
    deadline: float


# Yields whenever it would block; returns the outcome.
KeSteps = Generator[KeWait, None, "KeOutcome | KeFailure"]


def _io(conn: SSL.Connection, sock: socket.socket, deadline: float, action: str,
        data: bytes = b"") -> Generator[KeWait, None, bytes | int | None]:
    while True:
        if time.monotonic() > deadline:
            raise _Timeout
        try:
            if action == "handshake":
                conn.do_handshake()
                return None
            if action == "send":
                return conn.send(data)
            return conn.recv(4096)
        except SSL.WantReadError:
            yield KeWait(sock, False, deadline)
        except SSL.WantWriteError:
            yield KeWait(sock, True, deadline)


def _connect(host: str, port: int, deadline: float) -> Generator[KeWait, None, socket.socket]:
    """A TCP connection, not blocking (the name lookup does, bounded by the resolver)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        error = sock.connect_ex(address)
        while error in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            if time.monotonic() > deadline:
                raise _Timeout
            yield KeWait(sock, True, deadline)
            poller = select.poll()  # poll, not select: the seccomp profiles allow poll
            poller.register(sock, select.POLLOUT)
            if poller.poll(0):
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


def _check_name(conn: SSL.Connection, host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        verify_hostname(conn, host)
    else:
        verify_ip_address(conn, host)


def key_exchange(
    host: str,
    port: int,
    *,
    ca_file: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    context: SSL.Context | None = None,
) -> KeOutcome | KeFailure:
    """Run one key exchange with ``host``:``port``, waiting here until it is done."""
    steps = key_exchange_steps(host, port, ca_file=ca_file, timeout=timeout, context=context)
    try:
        wait = next(steps)
        while True:
            poller = select.poll()
            poller.register(wait.sock, select.POLLOUT if wait.writable else select.POLLIN)
            poller.poll(max(wait.deadline - time.monotonic(), 0.0) * 1000)
            wait = steps.send(None)
    except StopIteration as done:
        result: KeOutcome | KeFailure = done.value
        return result


def key_exchange_steps(
    host: str,
    port: int,
    *,
    ca_file: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    context: SSL.Context | None = None,
) -> KeSteps:
    """One key exchange with ``host``:``port`` (the server's name must be ``host``), as a
    generator: it yields a :class:`KeWait` whenever it would block, and its return value
    is the outcome. A caller that gives up closes it (the socket goes with it)."""
    deadline = time.monotonic() + timeout
    try:
        ctx = context if context is not None else client_context(ca_file)
    except (SSL.Error, OSError) as exc:
        return KeFailure(FailureKind.TRANSPORT, f"TLS setup: {exc}")
    sock: socket.socket | None = None
    try:
        sock = yield from _connect(host, port, deadline)
        # The request follows the handshake's last flight in a second small write:
        # with Nagle's algorithm it waits for the server's delayed ACK (40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = SSL.Connection(ctx, sock)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            conn.set_tlsext_host_name(host.encode("idna"))
        conn.set_connect_state()
        yield from _io(conn, sock, deadline, "handshake")
        if conn.get_protocol_version_name() != "TLSv1.3":
            return KeFailure(FailureKind.TRANSPORT, "not TLS 1.3")
        if conn.get_alpn_proto_negotiated() != ALPN:
            return KeFailure(FailureKind.TRANSPORT, "the server did not agree to ALPN ntske/1")
        _check_name(conn, host)
        request = client_request()
        sent = 0
        while sent < len(request):
            written = yield from _io(conn, sock, deadline, "send", request[sent:])
            assert isinstance(written, int)
            sent += written
        buffer = bytearray()
        records = None
        while records is None:
            try:
                chunk = yield from _io(conn, sock, deadline, "recv")
            except SSL.ZeroReturnError:
                chunk = b""
            assert isinstance(chunk, bytes)
            if not chunk:
                return KeFailure(FailureKind.TRANSPORT, "connection closed mid-response")
            buffer += chunk
            if len(buffer) > MAX_MESSAGE_BYTES:
                return KeFailure(FailureKind.TRANSPORT, "response too long")
            records = parse_message(buffer)
        result = parse_client_response(records)
        if isinstance(result, KeFailure):
            return result
        if result.aead != AEAD_AES_SIV_CMAC_256 or result.protocol != NTPV4_PROTOCOL:
            return KeFailure(FailureKind.NEGOTIATION, "unexpected protocol or AEAD")
        keys = NtsKeys(
            conn.export_keying_material(EXPORTER_LABEL, KEY_BYTES,
                                        exporter_context(result.protocol, result.aead, False)),
            conn.export_keying_material(EXPORTER_LABEL, KEY_BYTES,
                                        exporter_context(result.protocol, result.aead, True)),
            result.aead,
        )
        with contextlib.suppress(SSL.Error):
            conn.shutdown()  # close_notify; the server's reply to it is not awaited
        return KeOutcome(keys, result, result.server or host, result.port or NTP_PORT)
    except KeRecordError as exc:
        return KeFailure(FailureKind.MALFORMED, str(exc))
    except _Timeout:
        return KeFailure(FailureKind.TRANSPORT, f"timed out after {timeout} s")
    except VerificationError as exc:
        return KeFailure(FailureKind.TRANSPORT, f"certificate does not name {host}: {exc}")
    except SSL.Error as exc:
        return KeFailure(FailureKind.TRANSPORT, f"TLS: {exc}")
    except OSError as exc:
        return KeFailure(FailureKind.TRANSPORT, f"connection: {exc}")
    finally:
        if sock is not None:
            sock.close()
