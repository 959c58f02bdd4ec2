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

Wildcard binds (``0.0.0.0``, ``::``): the kernel would pick the reply's source
address by routing, which on a host with several addresses is not always the
one the client sent to, and the client's connected socket then drops the
reply. So on a wildcard socket the destination of each request is read from
``IP_PKTINFO``/``IPV6_PKTINFO`` and the reply is sent from it (as chrony does);
that path parses control messages per datagram and costs a little more CPU.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import time
from collections.abc import Sequence

from ntpd_py.core.ntp_server import REPLY_BYTES, Responder, stamp_transmit_batch
from ntpd_py.core.nts_server import NtsResponder
from ntpd_py.core.packet import MAX_PACKET_BYTES
from ntpd_py.core.units import NTP_UNIX_OFFSET_S as _OFFSET_S  # a short name for the hot path

from ._udp import SCM_TIMESTAMPNS, enable_rx_timestamps
from .random_pool import RandomPool

try:  # the C NTS engine, built by `pip install` (setup.py); see workers/_nts_fast.c
    from . import _nts_fast
except ImportError as _exc:  # pragma: no cover - a checkout that was never built
    _nts_fast = None  # type: ignore[assignment]
    NTS_FAST_UNAVAILABLE: str | None = f"the C NTS engine is not built ({_exc})"
else:
    NTS_FAST_UNAVAILABLE = None
    # OpenSSL loads its configuration and providers on first use: do it now, while the
    # worker starts, not after its seccomp filter is in place.
    _nts_fast.siv_seal(bytes(32), b"", bytes(16), b"")

__all__ = ["NTS_FAST_UNAVAILABLE", "ServerBatchIO"]

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
_CONTROLLEN_AT = 40
_IOV = struct.Struct("=QQ")
_NAME = 32  # stride; sockaddr_in6 is 28 bytes
_CTRL = socket.CMSG_SPACE(16)
_DATA = (MAX_PACKET_BYTES + 1 + 15) & ~15  # one spare byte tells "oversized" apart
_CMSG_TS = struct.Struct("=QiiQQ")  # cmsg_len, level, type, tv_sec, tv_nsec
_CONTROLLEN = struct.Struct("=Q")
_LEN_FIELDS = struct.Struct("=Q8xI")  # msg_controllen … msg_len
_MSG_DONTWAIT = socket.MSG_DONTWAIT
# <linux/in.h>, <linux/in6.h>: the destination address of a request, for wildcard sockets.
IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
_CTRL_PKTINFO = 80  # timestamp (32) + in6_pktinfo (40) + slack
_CMSG_HDR = struct.Struct("=Qii")
_TIMESPEC = struct.Struct("=qq")
_IN_PKTINFO = struct.Struct("=QiiI4s4s4x")  # cmsghdr + ifindex, spec_dst, addr; CMSG_SPACE
_IN6_PKTINFO = struct.Struct("=Qii16sI4x")  # cmsghdr + addr, ifindex; CMSG_SPACE


_CONTROL_AT = 32  # msg_control, msg_controllen in struct mmsghdr
_CONTROL = struct.Struct("=QQ")
if _nts_fast is not None:
    _PY, _AUTH, _NAK, _DROP = _nts_fast.PY, _nts_fast.AUTHENTICATED, _nts_fast.NAK, _nts_fast.DROP


def _packer(n: int) -> struct.Struct:
    return _u64_packers.get(n) or _u64_packers.setdefault(n, struct.Struct(f"={n}Q"))


def _int_packer(n: int) -> struct.Struct:
    return _i32_packers.get(n) or _i32_packers.setdefault(n, struct.Struct(f"={n}i"))


_u64_packers: dict[int, struct.Struct] = {}
_i32_packers: dict[int, struct.Struct] = {}


def _is_wildcard(sock: socket.socket) -> bool:
    return bool(sock.getsockname()[0] in ("0.0.0.0", "::"))


def _enable_pktinfo(sock: socket.socket) -> None:
    # A dual-stack IPv6 socket reports IPv4 clients' destinations as IPv4-mapped
    # IPV6_PKTINFO too, so one option per family is enough.
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def _walk_cmsgs(ctrl: bytearray, base: int, length: int) -> tuple[int | None, bytes]:
    """Kernel RX time (ns) and a ready pktinfo cmsg naming the request's destination."""
    rx: int | None = None
    reply_cmsg = b""
    off, end = base, base + length
    while off + _CMSG_HDR.size <= end:
        clen, level, kind = _CMSG_HDR.unpack_from(ctrl, off)
        if clen < _CMSG_HDR.size or off + clen > end:
            break
        data = off + _CMSG_HDR.size
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and clen >= 32:
            sec, nsec = _TIMESPEC.unpack_from(ctrl, data)
            rx = sec * 1_000_000_000 + nsec
        elif level == socket.IPPROTO_IP and kind == IP_PKTINFO and clen >= 28:
            # Reply from the address the request was sent to (ipi_addr) as ipi_spec_dst.
            reply_cmsg = _IN_PKTINFO.pack(
                28, socket.IPPROTO_IP, IP_PKTINFO, 0, bytes(ctrl[data + 8 : data + 12]), bytes(4)
            )
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and clen >= 36:
            # IPv4 clients of a dual-stack socket come as IPv4-mapped addresses
            # here, and the kernel takes them back the same way.
            addr = bytes(ctrl[data : data + 16])
            ifindex = struct.unpack_from("=I", ctrl, data + 16)[0]
            reply_cmsg = _IN6_PKTINFO.pack(36, socket.IPPROTO_IPV6, IPV6_PKTINFO, addr, ifindex)
        off += (clen + 7) & ~7
    return rx, reply_cmsg


def _addr(buf: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _transmit_ntp() -> int:
    ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
    tx = (((ns + _OFFSET_S * 1_000_000_000) << 32) + 500_000_000) // 1_000_000_000
    return tx & 0xFFFF_FFFF_FFFF_FFFF


def _sockaddr(family: int, name: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
    """A raw sockaddr_in / sockaddr_in6 (as recvmmsg filled it) as Python's address."""
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, name[8:24]), port,
                int.from_bytes(name[4:8], "big"), int.from_bytes(name[24:28], "little"))
    return (socket.inet_ntop(socket.AF_INET, name[4:8]), port)


class ServerBatchIO:
    """One server socket's receive/reply machinery around a :class:`Responder`."""

    def __init__(self, sock: socket.socket, responder: Responder, batch: int = 64) -> None:
        enable_rx_timestamps(sock)  # also for a socket the supervisor opened and passed in
        self.sock = sock
        self.fd = sock.fileno()
        self.responder = responder
        self.batch = batch
        self.family = sock.family
        namelen = self._namelen = 28 if sock.family == socket.AF_INET6 else 16
        self._addr_slice = (8, 24) if sock.family == socket.AF_INET6 else (4, 8)
        # Bound to a wildcard address, a reply must leave from the address the request
        # came to (the routing table may choose another one, which clients drop).
        self.pktinfo = _is_wildcard(sock)
        if self.pktinfo:
            _enable_pktinfo(sock)
        self._ctrl_stride = _CTRL_PKTINFO if self.pktinfo else _CTRL
        self.names = bytearray(_NAME * batch)
        self.ctrl = bytearray(self._ctrl_stride * batch)
        self.tx_ctrl = bytearray(_IN6_PKTINFO.size * batch)
        self.data = bytearray(_DATA * batch)
        self.out = bytearray(REPLY_BYTES * batch)
        self.rx_iov = bytearray(_IOV.size * batch)
        self.tx_iov = bytearray(_IOV.size * batch)
        self.rx_hdr = bytearray(_HDR * batch)
        self.tx_hdr = bytearray(_HDR * batch)
        names, ctrl, data, out = map(_addr, (self.names, self.ctrl, self.data, self.out))
        rx_iov, tx_iov, tx_ctrl = _addr(self.rx_iov), _addr(self.tx_iov), _addr(self.tx_ctrl)
        stride = self._ctrl_stride
        for k in range(batch):
            _IOV.pack_into(self.rx_iov, k * _IOV.size, data + k * _DATA, _DATA)
            _IOV.pack_into(self.tx_iov, k * _IOV.size, out + k * REPLY_BYTES, REPLY_BYTES)
            _MMSG.pack_into(
                self.rx_hdr,
                k * _HDR,
                names + k * _NAME,
                namelen,
                rx_iov + k * _IOV.size,
                1,
                ctrl + k * stride,
                stride,
                0,
                0,
            )
            _MMSG.pack_into(
                self.tx_hdr,
                k * _HDR,
                names + k * _NAME,
                namelen,
                tx_iov + k * _IOV.size,
                1,
                tx_ctrl + k * _IN6_PKTINFO.size,
                0,
                0,
                0,
            )
        self._rx_template = bytes(self.rx_hdr)
        self._rx_ptr = _addr(self.rx_hdr)
        self._tx_ptr = _addr(self.tx_hdr)
        self._structs: dict[int, tuple[struct.Struct, struct.Struct]] = {}
        self.receive_errors = 0
        self.batches = 0
        # NTS (core/nts_server.NtsResponder): requests longer than 48 bytes are taken out
        # of the batch. The C engine answers the NTS ones in one call and one sendmmsg
        # (with access lists or a rate limit, after a judging pass and the per-client
        # decision in Python); what it hands back is answered one by one here.
        self.nts: NtsResponder | None = None
        self.nts_fast_batches = 0
        # (keyset, its primary key id, the engine holding its keys)
        self._engine: tuple[object, int, _nts_fast.Engine] | None = None
        self._nts_buffers: tuple[bytearray, ...] | None = None
        self._nts_random = RandomPool()

    def nts_fast_path(self) -> str | None:
        """None if NTS requests take the C engine, else why not (logged by the worker)."""
        return NTS_FAST_UNAVAILABLE

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
        lengths: Sequence[int]
        if self.pktinfo:
            lengths, rx, reply_cmsgs = self._parse_with_pktinfo(n)
        else:
            lengths, rx = self._lengths_and_timestamps(n)
        if self.nts is not None and max(lengths) > REPLY_BYTES:
            cmsgs = reply_cmsgs if self.pktinfo else None
            if _nts_fast is not None:
                lengths = self._serve_nts_fast(n, lengths, rx, cmsgs, now_mono)
            if max(lengths) > REPLY_BYTES:
                lengths = self._serve_nts(lengths, rx, cmsgs, now_mono)
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
            if self.pktinfo:
                cmsg = reply_cmsgs[k]
                self.tx_ctrl[j * _IN6_PKTINFO.size : j * _IN6_PKTINFO.size + len(cmsg)] = cmsg
                _CONTROLLEN.pack_into(self.tx_hdr, j * _HDR + _CONTROLLEN_AT, len(cmsg))
        if answered:
            self._send(len(answered))
        return n

    def _serve_nts(self, lengths: Sequence[int], rx: list[int], cmsgs: list[bytes] | None,
                   now_mono: int) -> list[int]:
        """Answer the batch's long requests (NTS, or plain NTP with a trailer) on their own;
        their lengths become -1 so the batch responder skips them."""
        assert self.nts is not None
        left = list(lengths)
        a0, a1 = self._addr_slice
        for k, length in enumerate(lengths):
            if length <= REPLY_BYTES:
                continue
            left[k] = -1
            if length > MAX_PACKET_BYTES:
                self.responder.count_dropped(b"", length)  # oversized, as respond() counts it
                continue
            base = k * _DATA
            name = bytes(self.names[k * _NAME : (k + 1) * _NAME])
            reply = self.nts.respond(bytes(self.data[base : base + length]), name[a0:a1], rx[k],
                                     now_mono, _transmit_ntp)
            if reply is None:
                continue
            self._send_one(reply, name, cmsgs[k] if cmsgs is not None else b"")
        return left

    def _serve_nts_fast(self, n: int, lengths: Sequence[int], rx: list[int],
                        cmsgs: list[bytes] | None, now_mono: int) -> list[int]:
        """The batch's NTS requests through the C engine and one sendmmsg; their lengths
        become -1. What the engine hands back (plain NTP with a trailer, NTPv3, a
        refused version) keeps its length for the Python path.

        With an access list or a rate limit, the engine first only judges; each NTS
        request then passes the plain responder's per-client decision as on the Python
        path (a denied or limited one gets its unauthenticated kiss, an ignored one
        nothing), and the engine answers the allowed ones."""
        assert self.nts is not None and _nts_fast is not None
        nts, plain = self.nts, self.responder
        keyset = nts.keyset
        if (self._engine is None or self._engine[0] is not keyset
                or self._engine[1] != keyset.primary.key_id):
            # a new keyset object (ServerTask.install_keyset), or the same one rotated in
            # place (--single-process): a rotation always brings a new primary key id
            self._engine = (keyset, keyset.primary.key_id, _nts_fast.Engine(
                [(k.key_id, k.key) for k in keyset.keys]))
        if self._nts_buffers is None:
            self._nts_buffers = (bytearray(_DATA * self.batch), bytearray(self.batch),
                                 bytearray(_IOV.size * self.batch), bytearray(_HDR * self.batch),
                                 bytearray(_IN6_PKTINFO.size * self.batch))
        out, verdicts, iov, hdr, ctrl = self._nts_buffers
        engine = self._engine[2]
        rx_packed = _packer(n).pack(*rx)
        templates = plain.header_templates(min(rx), max(rx))
        counts = nts.counts
        policy = plain.needs_client_address
        serve_lengths: Sequence[int] = lengths
        if policy:
            engine.serve(self.data, _DATA, _int_packer(n).pack(*lengths), rx_packed, templates,
                         out, _DATA, b"", 0, verdicts, self.names, _NAME, self._namelen, iov,
                         hdr, True)
            judged = verdicts[:n]
            serve_lengths = self._apply_policy(n, lengths, rx, judged, cmsgs, now_mono)
        long_requests = sum(1 for length in serve_lengths if length > REPLY_BYTES)
        random = self._nts_random.peek(_nts_fast.RANDOM_PER_REQUEST * long_requests)
        slots, used = engine.serve(
            self.data, _DATA, _int_packer(n).pack(*serve_lengths), rx_packed, templates,
            out, _DATA, random, 0, verdicts, self.names, _NAME, self._namelen, iov, hdr)
        del random
        self._nts_random.advance(used)
        self.nts_fast_batches += 1
        v = verdicts[:n]
        auth, nak, drop = v.count(_AUTH), v.count(_NAK), v.count(_DROP)
        counts["received"] += auth + nak + drop
        counts["accepted"] += auth
        counts["nak"] += nak
        counts["dropped"] += drop
        if not policy:  # else respond() counted them in _apply_policy
            plain.received += auth + nak
            plain.accepted += auth + nak
        if drop:
            for k in range(n):
                if v[k] == _DROP:
                    base = k * _DATA
                    plain.count_dropped(self.data[base : base + lengths[k]], lengths[k])
        if slots:
            if cmsgs is not None:
                ctrl_base = _addr(ctrl)
                for j, k in enumerate(slots):
                    cmsg = cmsgs[k]
                    at = j * _IN6_PKTINFO.size
                    ctrl[at : at + len(cmsg)] = cmsg
                    _CONTROL.pack_into(hdr, j * _HDR + _CONTROL_AT,
                                       ctrl_base + at if cmsg else 0, len(cmsg))
            self._sendmmsg(_addr(hdr), len(slots))
        if policy:
            # what the judging pass skipped (plain 48-byte requests) or handed back
            # goes on; every other slot is done
            return [length if code <= _PY else -1
                    for length, code in zip(lengths, judged, strict=False)]
        return [length if code <= _PY else -1 for length, code in zip(lengths, v, strict=False)]

    def _apply_policy(self, n: int, lengths: Sequence[int], rx: list[int], judged: bytearray,
                      cmsgs: list[bytes] | None, now_mono: int) -> list[int]:
        """Access lists and rate limit for the judged NTS requests (authenticated or NAK):
        the lengths of the allowed ones, -1 for every other slot. Drops are counted here."""
        assert self.nts is not None
        plain, counts = self.responder, self.nts.counts
        a0, a1 = self._addr_slice
        header = bytearray(REPLY_BYTES)
        allowed = [-1] * n
        for k in range(n):
            code = judged[k]
            length = lengths[k]
            base = k * _DATA
            if code == _DROP:
                counts["received"] += 1
                counts["dropped"] += 1
                plain.count_dropped(self.data[base : base + length], length)
                continue
            if code != _AUTH and code != _NAK:
                continue
            name = bytes(self.names[k * _NAME : (k + 1) * _NAME])
            denied, limited = plain.denied, plain.rate_limited
            size = plain.respond(self.data[base : base + length], length, name[a0:a1], rx[k],
                                 now_mono, header, nts=True)
            if plain.denied != denied or plain.rate_limited != limited:
                counts["received"] += 1
                counts["denied" if plain.denied != denied else "rate_limited"] += 1
                if size:
                    self._send_one(bytes(header), name, cmsgs[k] if cmsgs else b"")
            elif not size:
                counts["received"] += 1
                counts["dropped"] += 1  # an access list said "ignore"
            else:
                allowed[k] = length
        return allowed

    def _send_one(self, reply: bytes, name: bytes, cmsg: bytes) -> None:
        ancillary = []
        if cmsg:
            clen, level, kind = _CMSG_HDR.unpack_from(cmsg)
            ancillary = [(level, kind, cmsg[_CMSG_HDR.size : clen])]
        try:
            self.sock.sendmsg([reply], ancillary, 0, _sockaddr(self.family, name))
        except OSError:
            self.responder.response_send_errors += 1

    def _sendmmsg(self, hdr_ptr: int, count: int) -> None:
        sent = 0
        while sent < count:
            n = _sendmmsg(self.fd, hdr_ptr + sent * _HDR, count - sent, 0)
            if n <= 0:
                # This reply failed (EPERM from a firewall, ENOBUFS, …): skip it.
                self.responder.response_send_errors += 1
                n = 1
            sent += n

    def _lengths_and_timestamps(self, n: int) -> tuple[Sequence[int], list[int]]:
        """Datagram lengths and kernel receive times (NTP format) of a batch, in bulk."""
        structs = self._structs.get(n)
        if structs is None:
            structs = self._structs[n] = (
                struct.Struct("=" + "40xQ8xI4x" * n),
                struct.Struct("=" + "QiiQQ" * n),
            )
        hdr_fields = structs[0].unpack_from(self.rx_hdr)
        cmsgs = structs[1].unpack_from(self.ctrl)
        rx = [
            (((sec + _OFFSET_S) & 0xFFFF_FFFF) << 32)
            | (((nsec << 32) + 500_000_000) // 1_000_000_000)
            for sec, nsec in zip(cmsgs[3::5], cmsgs[4::5], strict=True)
        ]
        if (
            min(hdr_fields[0::2]) < _CTRL
            or cmsgs[2::5].count(SCM_TIMESTAMPNS) != n
            or cmsgs[1::5].count(socket.SOL_SOCKET) != n
            or max(cmsgs[4::5]) >= 10**9
        ):
            self._fix_missing_timestamps(n, hdr_fields, cmsgs, rx)
        return hdr_fields[1::2], rx

    def _parse_with_pktinfo(self, n: int) -> tuple[list[int], list[int], list[bytes]]:
        """Per datagram: length, kernel RX time (NTP format), reply pktinfo cmsg."""
        lengths, rx, cmsgs = [], [], []
        stride = self._ctrl_stride
        for k in range(n):
            controllen, length = _LEN_FIELDS.unpack_from(self.rx_hdr, k * _HDR + _CONTROLLEN_AT)
            ns, cmsg = _walk_cmsgs(self.ctrl, k * stride, min(controllen, stride))
            if ns is None:
                ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
            lengths.append(length)
            rx.append(
                ((((ns + _OFFSET_S * 1_000_000_000) << 32) + 500_000_000) // 1_000_000_000)
                & 0xFFFF_FFFF_FFFF_FFFF
            )
            cmsgs.append(cmsg)
        return lengths, rx, cmsgs

    @staticmethod
    def _fix_missing_timestamps(
        n: int, hdr_fields: tuple[int, ...], cmsgs: tuple[int, ...], rx: list[int]
    ) -> None:
        # Cannot happen with SO_TIMESTAMPNS set; if it does, read the clock instead.
        for k in range(n):
            i = 5 * k
            if (
                hdr_fields[2 * k] < _CTRL
                or cmsgs[i + 2] != SCM_TIMESTAMPNS
                or cmsgs[i + 1] != socket.SOL_SOCKET
                or cmsgs[i + 4] >= 10**9
            ):
                ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
                rx[k] = (
                    (((ns + _OFFSET_S * 1_000_000_000) << 32) + 500_000_000) // 1_000_000_000
                ) & 0xFFFF_FFFF_FFFF_FFFF

    def _send(self, count: int) -> None:
        ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tx = (((ns + _OFFSET_S * 1_000_000_000) << 32) + 500_000_000) // 1_000_000_000
        tx &= 0xFFFF_FFFF_FFFF_FFFF
        stamp_transmit_batch(self.out, count, tx)
        self._sendmmsg(self._tx_ptr, count)
