"""The metrics exporter's listening TCP socket: bound by the supervisor (as root,
before it forks) or, when that failed, by the metrics worker itself.

Kept apart from the HTTP server so that binding it does not import http.server
(and with it http.client, ssl and libcrypto) into the supervisor, whose memory
every child shares.
"""

from __future__ import annotations

import socket

from ntpd_py.core.config import parse_socket_addr

__all__ = ["BACKLOG", "bind_listener"]

BACKLOG = 16


def bind_listener(listen: str) -> socket.socket:
    """A listening TCP socket on `listen` ("ip:port"); raises OSError."""
    host, port = parse_socket_addr(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
