"""The exporter's HTTP side: a small threaded server on the listening socket.

The socket (``tcp_listen``) is normally bound by the supervisor before it
forks (as root, so a port below 1024 works too) and inherited; if that failed
(address in use, interface not up yet) the metrics worker binds it itself and
retries. The
server is the standard library's threaded HTTP server around an existing
socket, with prometheus_client choosing the format from the Accept header
(OpenMetrics for Prometheus, the classic text format for curl): a scrape
never waits for the daemon, it renders the latest status the worker holds.
A client that stalls only ties up its own thread, for at most `timeout`.
A client that resets mid-reply (or a bug while serving one) is counted and
logged once a minute with the count — not a traceback per connection, which
the standard library's server would print to stderr.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ntpd_py.plumbing.logutil import RateLimitedLog
from ntpd_py.plumbing.tcp_listen import bind_listener

__all__ = ["MetricsServer", "Render", "bind_listener"]

# (status code, content type, body) for one scrape with the given Accept header.
Render = Callable[[str], tuple[int, str, bytes]]
CLIENT_TIMEOUT_S = 5.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT_S
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        if urlsplit(self.path).path not in ("/", "/metrics"):
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
            return
        try:
            code, content_type, body = self.server.render(self.headers.get("Accept", ""))
        except Exception as exc:  # a bug in rendering must not kill the thread silently
            self._reply(500, "text/plain; charset=utf-8", f"error: {exc}\n".encode())
            return
        self._reply(code, content_type, body)

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # no line per scrape


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    render: Render
    limited: RateLimitedLog
    lock: threading.Lock
    client_errors = 0

    def handle_error(self, request: object, client_address: object) -> None:
        # Runs in the client's thread; the default prints a traceback to stderr.
        exc = sys.exc_info()[1]
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        with self.lock:
            self.client_errors += 1
            self.limited.log(logging.WARNING, "client", time.monotonic_ns(),
                             "metrics client %s: %s: %s (%d such errors so far)", peer,
                             type(exc).__name__, exc, self.client_errors)


class MetricsServer:
    """Serve `render` on an already listening socket, in a background thread."""

    def __init__(self, sock: socket.socket, render: Render,
                 log: logging.Logger | None = None) -> None:
        self._server = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self._server.socket.close()  # the throwaway socket the constructor made
        self._server.socket = sock
        self._server.render = render
        self._server.limited = RateLimitedLog(log or logging.getLogger("metrics-http"))
        self._server.lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def client_errors(self) -> int:
        """Connections that ended in an exception (reset mid-reply, mostly)."""
        return self._server.client_errors

    def flush_log(self, now_ns: int) -> None:
        """From the worker's loop: log the last held-back client error once a minute."""
        with self._server.lock:
            self._server.limited.flush(now_ns)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
