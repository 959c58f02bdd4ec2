"""The metrics exporter's listening socket, bound by the supervisor before it forks.

Bound here, as root, so that `metrics-exporter-listen` may name a port below
1024 and the metrics worker needs no privilege. If binding fails (address in
use, address not configured yet) the daemon still starts — time keeping must
not depend on its exporter — and the metrics worker keeps retrying itself.
On a reload the socket is kept when the address is unchanged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket

from ntpd_py.core.config import parse_socket_addr
from ntpd_py.plumbing.tcp_listen import bind_listener

__all__ = ["metrics_listener"]


def _bound_to(fd: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            host, port = sock.getsockname()[:2]
    except OSError:
        return None
    return ipaddress.ip_address(host), int(port)


def metrics_listener(current_fd: int | None, listen: str | None, log: logging.Logger) -> int | None:
    """The listening fd for `listen` (None: exporter off, or binding failed for now)."""
    if current_fd is not None:
        if listen is not None:
            host, port = parse_socket_addr(listen)
            if _bound_to(current_fd) == (ipaddress.ip_address(host), port):
                return current_fd
        with contextlib.suppress(OSError):
            os.close(current_fd)
    if listen is None:
        return None
    try:
        sock = bind_listener(listen)
    except OSError as exc:
        log.warning(
            "metrics-exporter-listen = %s: cannot listen: %s; the metrics worker keeps trying",
            listen,
            exc.strerror,
        )
        return None
    return sock.detach()
