"""NTS-KE server I/O (RFC 8915 §4): a bounded, non-blocking TLS 1.3 server loop.

One selector, one listening socket, at most ``max_connections`` key exchanges at once,
each with a deadline from its accept: a client that is slow, half-open or silent is
dropped at its deadline, and connections beyond the limit are closed at once, so no
client can hold more than one slot for longer than ``timeout_s``. A request is read
up to :data:`MAX_MESSAGE_BYTES`; the answer is eight cookies sealed with the keyset's
primary key (or an Error record), then the connection is closed.

The certificate chain and private key arrive as PEM bytes (the supervisor reads the
files; this worker never opens them). TLS is pyOpenSSL's, since Python's ``ssl`` has
no keying-material exporter. Record logic: :mod:`ntpd_py.core.nts_ke_records`;
cookies: :class:`ntpd_py.core.nts_cookies.ServerKeySet`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from ntpd_py.core.nts_cookies import COOKIE_NONCE_BYTES, NtsKeys, ServerKeySet
from ntpd_py.core.nts_ke_records import (
    EXPORTER_LABEL,
    MAX_MESSAGE_BYTES,
    KeErrorCode,
    KeFailure,
    KeRecordError,
    Record,
    error_response,
    exporter_context,
    parse_message,
    parse_server_request,
    server_response,
)
from OpenSSL import SSL

__all__ = ["ALPN", "KeServer", "KeServerStats", "server_context"]

ALPN = b"ntske/1"
COOKIES_PER_RESPONSE = 8
KEY_BYTES = 32


def server_context(chain_pem: bytes, key_pem: bytes) -> SSL.Context:
    """A TLS 1.3-only server context offering ALPN ntske/1 with the given chain and key."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.use_certificate(certs[0])
    for extra in certs[1:]:
        context.add_extra_chain_cert(extra)
    key = load_pem_private_key(key_pem, password=None)
    context.use_privatekey(key)  # type: ignore[arg-type]
    context.check_privatekey()

    def select_alpn(_conn: SSL.Connection, offered: list[bytes]) -> bytes:
        return ALPN if ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]

    context.set_alpn_select_callback(select_alpn)
    return context


@dataclass
class KeServerStats:
    accepted: int = 0
    refused_full: int = 0  # closed at accept: every slot taken
    completed: int = 0  # cookies sent
    errors_sent: int = 0  # an Error record sent
    timed_out: int = 0
    failed: int = 0  # TLS errors, resets, oversized requests


@dataclass
class _Conn:
    sock: socket.socket
    tls: SSL.Connection
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytes = b""
    handshaken: bool = False


class KeServer:
    """The NTS-KE server loop; call :meth:`step` repeatedly (or :meth:`serve_forever`)."""

    def __init__(
        self,
        listen: tuple[str, int] | None,
        context: SSL.Context,
        keyset: Callable[[], ServerKeySet],
        *,
        listener: socket.socket | None = None,
        max_connections: int = 512,
        timeout_s: float = 1.0,
        ntp_server: str | None = None,
        ntp_port: int | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if listener is not None:  # bound and listening already (the daemon's supervisor)
            self._listener = listener
        else:
            assert listen is not None
            family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
            self._listener = socket.socket(family, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(listen)
            self._listener.listen(min(max_connections, 1024))
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()
        self._context = context
        self._keyset = keyset
        self._max = max_connections
        self._timeout = timeout_s
        self._ntp_server = ntp_server
        self._ntp_port = ntp_port
        self._random = random
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._conns: dict[int, _Conn] = {}
        self.stats = KeServerStats()

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def fileno(self) -> int:
        """The selector's own descriptor: readable when a connection or the listener is."""
        return self._selector.fileno()

    def next_deadline_s(self) -> float | None:
        """The nearest connection deadline (CLOCK_MONOTONIC, s), if any is open."""
        return min((c.deadline for c in self._conns.values()), default=None)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._selector.close()
        self._listener.close()

    def serve_forever(self, stop: Callable[[], bool]) -> None:
        while not stop():
            self.step(0.2)

    def step(self, max_wait_s: float) -> None:
        """Wait for events at most ``max_wait_s`` (less if a deadline comes first)."""
        now = time.monotonic()
        if self._conns:
            nearest = min(c.deadline for c in self._conns.values())
            max_wait_s = max(0.0, min(max_wait_s, nearest - now))
        for key, _ in self._selector.select(max_wait_s):
            if key.data is None:
                self._accept()
            else:
                conn = self._conns.get(key.fd)
                if conn is not None:
                    self._advance(conn)
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self.stats.timed_out += 1
            self._drop(conn)

    def _accept(self) -> None:
        for _ in range(64):  # bounded work per wakeup
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._conns) >= self._max:
                self.stats.refused_full += 1
                sock.close()
                continue
            sock.setblocking(False)
            # the answer and close_notify are separate small writes: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = SSL.Connection(self._context, sock)
            tls.set_accept_state()
            conn = _Conn(sock, tls, time.monotonic() + self._timeout)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self.stats.accepted += 1
            self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        try:
            if not conn.handshaken:
                conn.tls.do_handshake()
                conn.handshaken = True
                if conn.tls.get_alpn_proto_negotiated() != ALPN:
                    raise SSL.Error("no ALPN ntske/1")
            if not conn.outbox:
                self._read(conn)
            if conn.outbox:
                sent = conn.tls.send(conn.outbox)
                conn.outbox = conn.outbox[sent:]
                if not conn.outbox:
                    with contextlib.suppress(SSL.Error):
                        conn.tls.shutdown()
                    self._drop(conn)
                else:
                    self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        except SSL.WantReadError:
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        except SSL.WantWriteError:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        except (SSL.Error, OSError, KeRecordError):
            self.stats.failed += 1
            self._drop(conn)

    def _read(self, conn: _Conn) -> None:
        while True:
            chunk = conn.tls.recv(4096)  # WantReadError when drained
            if not chunk:
                raise SSL.Error("closed before a request")
            conn.inbox += chunk
            if len(conn.inbox) > MAX_MESSAGE_BYTES:
                raise KeRecordError("request too long")
            try:
                records = parse_message(conn.inbox)
            except KeRecordError:
                conn.outbox = error_response(KeErrorCode.BAD_REQUEST)
                self.stats.errors_sent += 1
                return
            if records is not None:
                conn.outbox = self._answer(conn, records)
                return

    def _answer(self, conn: _Conn, records: tuple[Record, ...]) -> bytes:
        request = parse_server_request(records)
        if isinstance(request, KeFailure):
            self.stats.errors_sent += 1
            code = request.error_code
            return error_response(KeErrorCode.BAD_REQUEST if code is None else code)
        keys = NtsKeys(
            conn.tls.export_keying_material(EXPORTER_LABEL, KEY_BYTES,
                                            exporter_context(request.protocol, request.aead,
                                                             False)),
            conn.tls.export_keying_material(EXPORTER_LABEL, KEY_BYTES,
                                            exporter_context(request.protocol, request.aead,
                                                             True)),
            request.aead,
        )
        keyset = self._keyset()
        cookies = [keyset.make_cookie(keys, self._random(COOKIE_NONCE_BYTES))
                   for _ in range(COOKIES_PER_RESPONSE)]
        self.stats.completed += 1
        return server_response(request.protocol, request.aead, cookies,
                               self._ntp_server, self._ntp_port)

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        self._conns.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()


def main(argv: list[str] | None = None) -> int:
    """A standalone KE server with a fresh in-memory keyset (benchmarks and tests only:
    the daemon's worker gets its chain, key and keyset from the supervisor)."""
    import argparse

    from ntpd_py.core.config import parse_socket_addr

    parser = argparse.ArgumentParser(description="NTS-KE server (tests and benchmarks)")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--chain", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ntp-port", type=int)
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--timeout-ms", type=int, default=1000)
    args = parser.parse_args(argv)
    with open(args.chain, "rb") as chain, open(args.key, "rb") as key:
        context = server_context(chain.read(), key.read())
    keyset = ServerKeySet.generate(os.urandom, time.time_ns())
    server = KeServer(parse_socket_addr(args.listen), context, lambda: keyset,
                      ntp_port=args.ntp_port, max_connections=args.max_connections,
                      timeout_s=args.timeout_ms / 1000)
    try:
        server.serve_forever(lambda: False)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
