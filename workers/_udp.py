"""UDP I/O for NTP (no process main): kernel timestamps, client channels, server sockets.

Receive times come from the kernel: every socket here enables
``SO_TIMESTAMPNS``, and :func:`rx_timestamp_ns` reads the ``SCM_TIMESTAMPNS``
control message (CLOCK_REALTIME, integer ns) that ``recvmsg`` returns.

Client side (:class:`ClientChannel`): every request goes out on a new socket
bound to a kernel-chosen ephemeral port (Linux picks it at random) and
connected to the server, so the kernel drops datagrams from anyone else and a
late reply to an older request never reaches us (RFC 9109). The send time is
read right before ``send``; where the kernel offers a software transmit
timestamp (``SO_TIMESTAMPING`` with ``SOF_TIMESTAMPING_TX_SOFTWARE``, read
from the socket's error queue) it replaces that reading, which removes the
Python and syscall-entry latency from t1. On loopback the kernel stamps the
packet inside ``send``, so the error queue holds it when ``send`` returns; on
a real NIC it is taken in the driver and may arrive a little later, which is
why :meth:`ClientChannel.receive` drains the error queue before it reads
replies. A worker that polls the channel's file descriptor must re-register it
after every send: each request has its own socket. :func:`client_io_step` is a
complete loop pass for a plain ``select.poll`` loop.

Server side: :func:`open_server_socket` (IPv4/IPv6, optional
``SO_REUSEPORT``) and, in :mod:`ntpd_py.workers._mmsg`, the batched receive
and reply loop.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import struct
import time
from collections.abc import Iterable

from ntpd_py.core.ntp_client import (
    ClientAction,
    LocalTime,
    NtpClient,
    Send,
    SetTimer,
)
from ntpd_py.plumbing.clock_pair import mono_real_pair

__all__ = [
    "SOF_TIMESTAMPING_OPT_TSONLY",
    "SOF_TIMESTAMPING_SOFTWARE",
    "SOF_TIMESTAMPING_TX_SOFTWARE",
    "SO_TIMESTAMPING",
    "SO_TIMESTAMPNS",
    "ClientChannel",
    "client_io_step",
    "enable_rx_timestamps",
    "execute_client_actions",
    "local_time_from_rx",
    "monotonic_ns",
    "now_local",
    "open_server_socket",
    "realtime_ns",
    "resolve_numeric",
    "rx_timestamp_ns",
]

# <asm-generic/socket.h> on 64-bit Linux (time_t is a long): the "_OLD" values.
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SCM_TIMESTAMPING = SO_TIMESTAMPING
# <linux/net_tstamp.h>
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11

_TIMESPEC = struct.Struct("=qq")
_TIMESPEC3 = struct.Struct("=qqqqqq")
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC3.size) + socket.CMSG_SPACE(_TIMESPEC.size)
RECV_BUFFER_BYTES = 2048


def realtime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


def monotonic_ns() -> int:
    return time.monotonic_ns()


def now_local() -> LocalTime:
    """Both clocks at one instant (with the simulated clock, the offset comes from the
    monotonic one, so a gap between the two reads would be an error in the sample)."""
    mono, real = mono_real_pair()
    return LocalTime(realtime_ns=real, mono_ns=mono)


def local_time_from_rx(rx_realtime_ns: int) -> LocalTime:
    """A kernel receive timestamp with its CLOCK_MONOTONIC twin (now minus its age)."""
    mono, real = mono_real_pair()
    return LocalTime(realtime_ns=rx_realtime_ns, mono_ns=mono - max(real - rx_realtime_ns, 0))


def rx_timestamp_ns(ancdata: Iterable[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time (CLOCK_REALTIME ns) from ``recvmsg`` ancillary data."""
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
        if kind == SCM_TIMESTAMPING and len(data) >= _TIMESPEC3.size:
            sec, nsec = _TIMESPEC3.unpack_from(data)[:2]
            if sec or nsec:
                return int(sec) * 1_000_000_000 + int(nsec)
    return None


SockAddr = tuple[str, int] | tuple[str, int, int, int]


def resolve_numeric(host: str, port: int) -> tuple[int, SockAddr]:
    """Family and sockaddr of a numeric IPv4/IPv6 address (no DNS)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    sockaddr = info[0][4]
    assert isinstance(sockaddr[0], str)  # AF_INET/AF_INET6 addresses
    return family, sockaddr


class ClientChannel:
    """The sockets of one client association: a fresh one for every request."""

    def __init__(self, host: str, port: int, tx_timestamps: bool = True) -> None:
        self.family, self.sockaddr = resolve_numeric(host, port)
        self.tx_timestamps = tx_timestamps
        self.sock: socket.socket | None = None
        self.sent: LocalTime | None = None
        self.tx_kernel = False  # whether self.sent came from the kernel
        self.send_errors = 0

    def fileno(self) -> int:
        return -1 if self.sock is None else self.sock.fileno()

    def _new_socket(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.tx_timestamps:
                try:
                    sock.setsockopt(
                        socket.SOL_SOCKET,
                        SO_TIMESTAMPING,
                        SOF_TIMESTAMPING_TX_SOFTWARE
                        | SOF_TIMESTAMPING_SOFTWARE
                        | SOF_TIMESTAMPING_OPT_TSONLY,
                    )
                except OSError:
                    self.tx_timestamps = False
            sock.bind(("::", 0) if self.family == socket.AF_INET6 else ("0.0.0.0", 0))
            sock.connect(self.sockaddr)
        except OSError:
            sock.close()
            raise
        return sock

    def send(self, data: bytes) -> bool:
        """Send a request from a new socket; False (and counted) if the kernel refused it."""
        self.close()
        self.sent = None
        try:
            self.sock = self._new_socket()
            local = now_local()
            self.sock.send(data)
        except OSError:
            self.send_errors += 1
            return False
        self.sent = local
        self.tx_kernel = False
        self._read_tx_timestamp()
        return True

    def _read_tx_timestamp(self) -> None:
        if not self.tx_timestamps or self.sock is None or self.sent is None or self.tx_kernel:
            return
        try:
            _, anc, _, _ = self.sock.recvmsg(
                1, _ANC_SPACE, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(raw) >= 48:
                sec, nsec = _TIMESPEC3.unpack_from(raw)[:2]
                if sec or nsec:
                    tx = sec * 1_000_000_000 + nsec
                    # Keep the monotonic twin consistent with the better realtime reading.
                    mono = self.sent.mono_ns + (tx - self.sent.realtime_ns)
                    self.sent = LocalTime(realtime_ns=tx, mono_ns=mono)
                    self.tx_kernel = True

    def receive(self) -> list[tuple[bytes, LocalTime]]:
        """Every datagram waiting on the current socket, with its kernel receive time."""
        out: list[tuple[bytes, LocalTime]] = []
        if self.sock is None:
            return out
        self._read_tx_timestamp()
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(
                    RECV_BUFFER_BYTES, _ANC_SPACE, socket.MSG_DONTWAIT
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # ICMP port unreachable and friends surface here; count as no reply.
                break
            rx = rx_timestamp_ns(anc)
            out.append((data, local_time_from_rx(rx) if rx is not None else now_local()))
        return out

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def execute_client_actions(
    actions: Iterable[ClientAction], channel: ClientChannel
) -> tuple[int | None, list[ClientAction]]:
    """Carry out Send and SetTimer; return the new deadline (if any) and the other actions."""
    deadline: int | None = None
    rest: list[ClientAction] = []
    for action in actions:
        if isinstance(action, Send):
            channel.send(action.data)
        elif isinstance(action, SetTimer):
            deadline = action.deadline_mono_ns
        else:
            rest.append(action)
    return deadline, rest


def client_io_step(
    client: NtpClient, channel: ClientChannel, deadline_ns: int | None, max_wait_ns: int
) -> tuple[int | None, list[ClientAction]]:
    """One pass of a client loop: wait for a reply or the timer, feed the client, send.

    Returns the next timer deadline and the actions left for the caller
    (Publish, ReportUnreachable, Demobilize). ``deadline_ns`` None means "poll now".
    """
    now = monotonic_ns()
    wait_ns = max_wait_ns if deadline_ns is None else min(max(deadline_ns - now, 0), max_wait_ns)
    actions: list[ClientAction] = []
    if deadline_ns is not None and channel.fileno() >= 0:
        poller = select.poll()
        poller.register(channel.fileno(), select.POLLIN | select.POLLERR)
        if poller.poll((wait_ns + 999_999) // 1_000_000):
            replies = channel.receive()  # also picks up the kernel TX timestamp
            sent = channel.sent
            for data, received in replies:
                if sent is not None:
                    actions.extend(client.handle_reply(data, sent, received))
    elif deadline_ns is not None:
        time.sleep(wait_ns / 1e9)
    now = monotonic_ns()
    if deadline_ns is None or now >= deadline_ns:
        actions.extend(client.handle_timer(now))
    new_deadline, rest = execute_client_actions(actions, channel)
    return (deadline_ns if new_deadline is None else new_deadline), rest


def enable_rx_timestamps(sock: socket.socket) -> None:
    """Kernel receive timestamps and non-blocking mode on a socket (e.g. one passed in)."""
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def open_server_socket(
    host: str, port: int, reuseport: bool = False, rcvbuf: int = 1 << 22
) -> socket.socket:
    """A bound, non-blocking UDP server socket with kernel receive timestamps."""
    family, sockaddr = resolve_numeric(host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        enable_rx_timestamps(sock)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):  # the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock
