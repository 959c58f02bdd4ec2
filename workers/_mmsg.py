"""Batched NTP server I/O: recvmmsg/sendmmsg through ctypes (no process main).

Why ctypes: Python's socket module has no recvmmsg/sendmmsg, and a
``recvmsg``/``sendto`` pair per datagram costs more than the NTP logic: with
them a request took about 9.6 µs of CPU (4 µs of it in Python) on the
development VM; batched, with the responder's bulk path for uniform batches,
it takes 5.5–7 µs, about what chronyd needs (see
``benchmarks/server_throughput.py``). All buffers are preallocated bytearrays
whose addresses stay pinned for the life of the object.

One :meth:`ServerBatchIO.handle_ready` call: ``recvmmsg`` up to ``batch``
datagrams (``MSG_DONTWAIT``), hand each to the sans-IO
:class:`~ntpd_py.core.ntp_server.Responder` with its kernel receive timestamp
(``SCM_TIMESTAMPNS``), read CLOCK_REALTIME once, write it as the transmit
timestamp of every reply of the batch, and ``sendmmsg`` them. A batch is only
longer than one datagram when requests queued up while the previous batch was
being answered, i.e. under load; then the transmit timestamp of the k-th
reply is early by the time the kernel takes to send the k-1 before it (a few
µs each on loopback). Without load every reply gets its own reading.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import time
from collections.abc import Sequence

from ntpd_py.core.ntp_server import REPLY_BYTES, Responder, stamp_transmit_batch
from ntpd_py.core.packet import MAX_PACKET_BYTES

from ._udp import SCM_TIMESTAMPNS, enable_rx_timestamps

__all__ = ["ServerBatchIO"]

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int

# struct mmsghdr on x86_64/aarch64 Linux: msghdr (56 bytes) + unsigned msg_len + padding.
_MMSG = struct.Struct("=QI4xQQQQi4xI4x")  # pointers as u64 (64-bit only)
assert _MMSG.size == 64
_HDR = _MMSG.size
_MSG_LEN_AT = 56
_CONTROLLEN_AT = 40
_IOV = struct.Struct("=QQ")
_NAME = 32  # stride; sockaddr_in6 is 28 bytes
_CTRL = socket.CMSG_SPACE(16)
_DATA = (MAX_PACKET_BYTES + 1 + 15) & ~15  # one spare byte tells "oversized" apart
_CMSG_TS = struct.Struct("=QiiQQ")  # cmsg_len, level, type, tv_sec, tv_nsec
_MSG_LEN = struct.Struct("=I")
_OFFSET_S = 2_208_988_800
_MSG_DONTWAIT = socket.MSG_DONTWAIT


def _addr(buf: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class ServerBatchIO:
    """One server socket's receive/reply machinery around a :class:`Responder`."""

    def __init__(self, sock: socket.socket, responder: Responder, batch: int = 64) -> None:
        enable_rx_timestamps(sock)  # also for a socket the supervisor opened and passed in
        self.sock = sock
        self.fd = sock.fileno()
        self.responder = responder
        self.batch = batch
        self.family = sock.family
        namelen = 28 if sock.family == socket.AF_INET6 else 16
        self._addr_slice = (8, 24) if sock.family == socket.AF_INET6 else (4, 8)
        self.names = bytearray(_NAME * batch)
        self.ctrl = bytearray(_CTRL * batch)
        self.data = bytearray(_DATA * batch)
        self.out = bytearray(REPLY_BYTES * batch)
        self.rx_iov = bytearray(_IOV.size * batch)
        self.tx_iov = bytearray(_IOV.size * batch)
        self.rx_hdr = bytearray(_HDR * batch)
        self.tx_hdr = bytearray(_HDR * batch)
        names, ctrl, data, out = map(_addr, (self.names, self.ctrl, self.data, self.out))
        rx_iov, tx_iov = _addr(self.rx_iov), _addr(self.tx_iov)
        for k in range(batch):
            _IOV.pack_into(self.rx_iov, k * _IOV.size, data + k * _DATA, _DATA)
            _IOV.pack_into(self.tx_iov, k * _IOV.size, out + k * REPLY_BYTES, REPLY_BYTES)
            _MMSG.pack_into(self.rx_hdr, k * _HDR, names + k * _NAME, namelen,
                            rx_iov + k * _IOV.size, 1, ctrl + k * _CTRL, _CTRL, 0, 0)
            _MMSG.pack_into(self.tx_hdr, k * _HDR, names + k * _NAME, namelen,
                            tx_iov + k * _IOV.size, 1, 0, 0, 0, 0)
        self._rx_template = bytes(self.rx_hdr)
        self._rx_ptr = _addr(self.rx_hdr)
        self._tx_ptr = _addr(self.tx_hdr)
        self._structs: dict[int, tuple[struct.Struct, struct.Struct]] = {}
        self.receive_errors = 0
        self.batches = 0

    def handle_ready(self, max_batches: int = 8) -> int:
        """Answer what is queued (up to ``max_batches`` full batches); return datagrams read."""
        total = 0
        for _ in range(max_batches):
            count = self._one_batch()
            total += count
            if count < self.batch:
                break
        return total

    def _one_batch(self) -> int:
        self.rx_hdr[:] = self._rx_template  # the kernel rewrote namelen/controllen/flags
        n = int(_recvmmsg(self.fd, self._rx_ptr, self.batch, _MSG_DONTWAIT, None))
        if n <= 0:
            err = ctypes.get_errno()
            if n < 0 and err not in (errno.EAGAIN, errno.EINTR):
                self.receive_errors += 1
            return 0
        self.batches += 1
        now_mono = time.monotonic_ns()
        lengths, rx = self._lengths_and_timestamps(n)
        clients = None
        if self.responder.needs_client_address:
            a0, a1 = self._addr_slice
            names = self.names
            clients = [bytes(names[k * _NAME + a0 : k * _NAME + a1]) for k in range(n)]
        answered = self.responder.respond_batch(
            self.data, _DATA, lengths, rx, clients, now_mono, self.out
        )
        names = self.names
        for j, k in enumerate(answered):
            if j != k:  # move the client's address next to its reply
                names[j * _NAME : (j + 1) * _NAME] = names[k * _NAME : (k + 1) * _NAME]
        if answered:
            self._send(len(answered))
        return n

    def _lengths_and_timestamps(self, n: int) -> tuple[Sequence[int], list[int]]:
        """Datagram lengths and kernel receive times (NTP format) of a batch, in bulk."""
        structs = self._structs.get(n)
        if structs is None:
            structs = self._structs[n] = (
                struct.Struct("=" + "40xQ8xI4x" * n), struct.Struct("=" + "QiiQQ" * n)
            )
        hdr_fields = structs[0].unpack_from(self.rx_hdr)
        cmsgs = structs[1].unpack_from(self.ctrl)
        rx = [
            (((sec + _OFFSET_S) & 0xFFFF_FFFF) << 32) | (((nsec << 32) + 500_000_000)
                                                        // 1_000_000_000)
            for sec, nsec in zip(cmsgs[3::5], cmsgs[4::5], strict=True)
        ]
        if (min(hdr_fields[0::2]) < _CTRL or cmsgs[2::5].count(SCM_TIMESTAMPNS) != n
                or cmsgs[1::5].count(socket.SOL_SOCKET) != n or max(cmsgs[4::5]) >= 10**9):
            self._fix_missing_timestamps(n, hdr_fields, cmsgs, rx)
        return hdr_fields[1::2], rx

    @staticmethod
    def _fix_missing_timestamps(
        n: int, hdr_fields: tuple[int, ...], cmsgs: tuple[int, ...], rx: list[int]
    ) -> None:
        # Cannot happen with SO_TIMESTAMPNS set; if it does, read the clock instead.
        for k in range(n):
            i = 5 * k
            if (hdr_fields[2 * k] < _CTRL or cmsgs[i + 2] != SCM_TIMESTAMPNS
                    or cmsgs[i + 1] != socket.SOL_SOCKET or cmsgs[i + 4] >= 10**9):
                ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
                rx[k] = ((((ns + _OFFSET_S * 1_000_000_000) << 32) + 500_000_000)
                         // 1_000_000_000) & 0xFFFF_FFFF_FFFF_FFFF

    def _send(self, count: int) -> None:
        ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tx = ((((ns + _OFFSET_S * 1_000_000_000) << 32) + 500_000_000) // 1_000_000_000)
        tx &= 0xFFFF_FFFF_FFFF_FFFF
        stamp_transmit_batch(self.out, count, tx)
        sent = 0
        while sent < count:
            n = _sendmmsg(self.fd, self._tx_ptr + sent * _HDR, count - sent, 0)
            if n <= 0:
                # This reply failed (EPERM from a firewall, ENOBUFS, …): skip it.
                self.responder.response_send_errors += 1
                n = 1
            sent += n
