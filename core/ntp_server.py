"""Sans-IO NTP server: decide and build the reply to one client request.

The server worker receives a datagram with its kernel receive timestamp and
calls :meth:`Responder.respond`, which either writes a 48-byte reply into the
caller's buffer and returns 48, or returns 0 (drop). The reply's transmit
timestamp is left for the I/O layer to fill with :func:`stamp_transmit` right
before the datagram is handed to the kernel, so it is taken as late as
possible. Replies are never longer than the request (no amplification):
extension fields (NTS) and legacy MACs in a request are checked for structure
and otherwise ignored; the reply carries neither.

Per request, in this order (the ntpd-rs order; counters as ntpd-rs names them):

1. counted in ``received``; shorter than 48 bytes, longer than
   :data:`~ntpd_py.core.packet.MAX_PACKET_BYTES`, not mode 3, a version not in
   ``accept-ntp-versions``, or a malformed trailer → dropped and counted in
   ``ignored`` (and in ``malformed``/``wrong_mode``/``bad_version``);
2. ``denylist`` match → its action; outside a configured ``allowlist`` → that
   list's action. Action ``deny`` → KoD DENY (counted ``denied``), ``ignore``
   → drop (``ignored``);
3. rate limiting (``rate-limiting-cache-size`` slots,
   ``rate-limiting-cutoff-ms``): a request that comes sooner than the cutoff
   after the previous one from the same address is ``rate_limited``. The first
   such request of an episode gets a KoD RATE (poll field = the cutoff as log2
   s, at least the request's poll); further ones in the same episode are
   dropped, so a flood with a spoofed source reflects at most one kiss per
   episode. The table is ntpd-rs's: a fixed array indexed by a (per-process
   randomised) hash of the address; a slot holds one address, so a collision
   forgets the older one (a missed limit, never a false one). Bounded memory,
   O(1) per packet;
4. otherwise a time reply (``accepted``) from the current
   :class:`ServerClockState`.

Clock state: when unsynchronized the reply says leap 3 (alarm) and
``local-stratum``. Root dispersion grows from the state's reference time at
RFC 5905's PHI (15 ppm). The 48-byte reply templates are rebuilt when the
state changes and at least once a second; the dispersion written into them is
the one at the end of that second (an upper bound, at most 15 µs high).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ServerConfig
from .errors import PacketError
from .events import LeapIndicator
from .ntp_server_policy import ALLOW, IGNORE, LIMIT_DROP, LIMIT_OK, AccessPolicy, RateLimiter
from .packet import HEADER_BYTES, HEADER_STRUCT, KISS_DENY, KISS_RATE, MAX_PACKET_BYTES, Mode
from .packet import check_trailer as _check_trailer
from .timestamps import NTP64_ONE_SECOND, ntp64_diff, s_to_short

__all__ = [
    "PHI",
    "REPLY_BYTES",
    "Responder",
    "ServerClockState",
    "stamp_transmit",
    "stamp_transmit_batch",
]

PHI = 15e-6  # RFC 5905 frequency tolerance, s/s: how fast an unrefreshed error bound grows
REPLY_BYTES = HEADER_BYTES
TEMPLATE_LIFETIME_NTP = NTP64_ONE_SECOND

_Q = struct.Struct(">Q")
_NO_FAST_PATH: list[bytes | None] = [None] * 256


_PACKERS: dict[int, struct.Struct] = {}


def _packer(n: int) -> struct.Struct:
    packer = _PACKERS.get(n)
    if packer is None:
        packer = struct.Struct(f">{n}Q")
        if n <= 1024:  # batch sizes: a handful of distinct values
            _PACKERS[n] = packer
    return packer


def _signed_byte(value: int) -> int:
    return value - 256 if value > 127 else value


def stamp_transmit(out: bytearray | memoryview, transmit_ntp: int, offset: int = 0) -> None:
    """Write the transmit timestamp into a reply built by :meth:`Responder.respond`."""
    _Q.pack_into(out, offset + 40, transmit_ntp)


def stamp_transmit_batch(out: bytearray, count: int, transmit_ntp: int) -> None:
    """The same transmit timestamp into the first ``count`` replies of a batch."""
    size = count * REPLY_BYTES
    raw = _Q.pack(transmit_ntp)
    for i in range(8):
        out[40 + i : size : REPLY_BYTES] = raw[i : i + 1] * count


@dataclass(frozen=True, slots=True)
class ServerClockState:
    """What clock-control publishes for the server to put into replies."""

    synchronized: bool
    leap: LeapIndicator
    stratum: int  # ours: the selected source's stratum + 1
    precision_log2: int
    root_delay_s: float
    root_dispersion_s: float  # at reference_time_ntp
    reference_id: int
    reference_time_ntp: int  # last clock update, NTP 64-bit; 0 = never

    def __post_init__(self) -> None:
        if not 1 <= self.stratum <= 16:
            raise ValueError("stratum must be 1..16")
        if not -128 <= self.precision_log2 <= 127:
            raise ValueError("precision_log2 must fit a signed byte")
        for name in ("root_delay_s", "root_dispersion_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and not negative")
        if not 0 <= self.reference_id < 2**32 or not 0 <= self.reference_time_ntp < 2**64:
            raise ValueError("reference id / time out of range")

    @classmethod
    def unsynchronized(cls, precision_log2: int, reference_id: int = 0) -> ServerClockState:
        return cls(False, LeapIndicator.UNSYNCHRONIZED, 16, precision_log2, 0.0, 0.0,
                   reference_id, 0)


class Responder:
    """The per-socket server state: config, clock state, rate-limit table, counters."""

    def __init__(
        self,
        config: ServerConfig,
        local_stratum: int = 16,
        state: ServerClockState | None = None,
    ) -> None:
        self.config = config
        self.local_stratum = local_stratum
        self._versions = tuple(v in config.accept_ntp_versions for v in range(8))
        self.access = AccessPolicy(config.allowlist, config.denylist)
        self.rate_limiter = RateLimiter(config.rate_limiting_cache_size,
                                        config.rate_limiting_cutoff_ms)
        # `require-nts`: true and "ignore" drop unauthenticated requests, "deny" kisses them
        self.require_nts: str | None = (
            None if config.require_nts in (None, False)
            else "ignore" if config.require_nts is True else str(config.require_nts))
        # The I/O layer may skip extracting the client address when nothing uses it.
        self.needs_client_address = self.access.active or self.rate_limiter.active
        self.received = self.accepted = self.denied = self.ignored = 0
        self.rate_limited = self.response_send_errors = 0
        self.malformed = self.wrong_mode = self.bad_version = 0
        self._state = state or ServerClockState.unsynchronized(-20)
        self._templates: list[bytes] = [b""] * 8
        self._joined_templates = bytes(8 * HEADER_BYTES)
        self._by_first_byte: list[bytes | None] = [None] * 256
        self._template_start = 0
        self._template_expiry = 0  # forces a build on the first request

    # -- state --------------------------------------------------------------------------

    @property
    def state(self) -> ServerClockState:
        return self._state

    def set_clock_state(self, state: ServerClockState) -> None:
        self._state = state
        self._template_expiry = 0

    def admit(self, request: bytes | bytearray | memoryview, length: int,
              trailer_checked: bool = False) -> int:
        """Count a request as received and check its structure: its version, or -1 when
        it is dropped (counted in ``ignored`` and its reason). Step 1 of :meth:`respond`.
        ``trailer_checked``: the NTS parser walked the extension fields already."""
        self.received += 1
        if length != HEADER_BYTES and (length < HEADER_BYTES or length > MAX_PACKET_BYTES):
            self.ignored += 1
            self.malformed += 1
            return -1
        first = request[0]
        if first & 7 != 3:
            self.ignored += 1
            self.wrong_mode += 1
            return -1
        version = (first >> 3) & 7
        if not self._versions[version]:
            self.ignored += 1
            self.bad_version += 1
            return -1
        if length != HEADER_BYTES and not trailer_checked:
            try:
                _check_trailer(request, length, version)
            except PacketError:
                self.ignored += 1
                self.malformed += 1
                return -1
        return version

    def count_dropped(self, request: bytes | bytearray | memoryview, length: int) -> None:
        """A request the caller dropped without :meth:`respond` (a malformed NTS request):
        counted with the reason :meth:`respond` would have given, else as malformed."""
        if self.admit(request, length) >= 0:
            self.ignored += 1
            self.malformed += 1

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "denied": self.denied,
            "ignored": self.ignored,
            "rate_limited": self.rate_limited,
            "response_send_errors": self.response_send_errors,
            "malformed": self.malformed,
            "wrong_mode": self.wrong_mode,
            "bad_version": self.bad_version,
        }

    def _build_templates(self, first_rx: int, last_rx: int) -> None:
        """Reply templates valid for receive times in [first_rx, last_rx + 1 s)."""
        st = self._state
        leap, stratum = (st.leap, st.stratum) if st.synchronized else (3, self.local_stratum)
        expiry = last_rx + TEMPLATE_LIFETIME_NTP
        disp = st.root_dispersion_s
        if st.reference_time_ntp:
            age = ntp64_diff(expiry, st.reference_time_ntp)
            disp += PHI * max(age, 0) / NTP64_ONE_SECOND
        fields = (stratum, 0, st.precision_log2, s_to_short(st.root_delay_s), s_to_short(disp),
                  st.reference_id, st.reference_time_ntp, 0, 0, 0)
        self._templates = [
            HEADER_STRUCT.pack((int(leap) << 6) | (v << 3) | Mode.SERVER, *fields)
            if self._versions[v] else b""
            for v in range(8)
        ]
        # By the request's first byte (any LI, an accepted version, mode 3): the
        # batch fast path needs one lookup instead of three checks.
        self._by_first_byte = [
            self._templates[(b >> 3) & 7] if b & 7 == Mode.CLIENT and self._versions[(b >> 3) & 7]
            else None
            for b in range(256)
        ]
        self._template_start = first_rx
        self._template_expiry = expiry
        self._joined_templates = b"".join(t or bytes(HEADER_BYTES) for t in self._templates)

    def header_templates(self, first_rx: int, last_rx: int) -> bytes:
        """The reply header for each NTP version (8 × 48 bytes; zeros where a version is
        refused), valid for receive times in [``first_rx``, ``last_rx``]. For the C NTS
        engine (workers/_nts_fast.c), which fills in poll, origin, receive and transmit
        as :meth:`respond` does."""
        if not (self._template_start <= first_rx and last_rx < self._template_expiry):
            self._build_templates(first_rx, last_rx)
        return self._joined_templates

    # -- kisses ---------------------------------------------------------------------

    def _kiss(self, code: int, poll: int, version: int, request: bytes | bytearray | memoryview,
              rx_ntp: int, out: bytearray | memoryview, offset: int) -> int:
        HEADER_STRUCT.pack_into(
            out, offset, (3 << 6) | (version << 3) | Mode.SERVER, 0, poll,
            self._state.precision_log2, 0, 0, code, 0, 0, rx_ntp, 0,
        )
        out[offset + 24 : offset + 32] = request[40:48]
        return REPLY_BYTES

    # -- the hot path -------------------------------------------------------------------

    def respond(
        self,
        request: bytes | bytearray | memoryview,
        length: int,
        client: bytes,
        rx_ntp: int,
        now_mono_ns: int,
        out: bytearray | memoryview,
        offset: int = 0,
        nts: bool = False,
    ) -> int:
        """Handle one request; return the reply length written at ``out[offset:]`` or 0.

        ``request[:length]`` is the datagram, ``client`` the packed source IP
        (4 or 16 bytes), ``rx_ntp`` the kernel receive time in NTP format. ``nts``: the
        caller found a well-formed NTS request (core/nts_server.py), which passes
        ``require-nts``; access lists and rate limits apply to it as to any request.
        """
        version = self.admit(request, length, trailer_checked=nts)
        if version < 0:
            return 0
        if self.access.active:
            decision = self.access.decide(client)
            if decision != ALLOW:
                if decision == IGNORE:
                    self.ignored += 1
                    return 0
                self.denied += 1
                poll = _signed_byte(request[2])
                return self._kiss(KISS_DENY, poll, version, request, rx_ntp, out, offset)
        if self.rate_limiter.active:
            limited = self.rate_limiter.check(client, now_mono_ns)
            if limited != LIMIT_OK:
                self.rate_limited += 1
                if limited == LIMIT_DROP:
                    return 0
                poll = max(self.rate_limiter.kiss_poll, _signed_byte(request[2]))
                return self._kiss(KISS_RATE, poll, version, request, rx_ntp, out, offset)
        if self.require_nts is not None and not nts:
            if self.require_nts == "ignore":
                self.ignored += 1
                return 0
            self.denied += 1
            return self._kiss(KISS_DENY, _signed_byte(request[2]), version, request, rx_ntp,
                              out, offset)
        if not self._template_start <= rx_ntp < self._template_expiry:
            self._build_templates(rx_ntp, rx_ntp)
        out[offset : offset + 48] = self._templates[version]
        out[offset + 2] = request[2]
        out[offset + 24 : offset + 32] = request[40:48]
        _Q.pack_into(out, offset + 32, rx_ntp)
        self.accepted += 1
        return REPLY_BYTES

    def respond_batch(
        self,
        data: bytearray | memoryview,
        stride: int,
        lengths: Sequence[int],
        rx_ntp: Sequence[int],
        clients: Sequence[bytes] | None,
        now_mono_ns: int,
        out: bytearray | memoryview,
    ) -> list[int]:
        """:meth:`respond` for a batch: request k is ``data[k * stride:][:lengths[k]]``.

        Returns the indices of the requests that were answered, in order; the
        reply to the j-th of them is at ``out[48 * j:]``. Same decisions and
        counters as :meth:`respond`; plain 48-byte requests skip the per-call
        overhead when no access list or rate limit is configured.
        """
        n = len(lengths)
        answered: list[int] = []
        if not n:
            return answered
        lo, hi = min(rx_ntp), max(rx_ntp)
        if not (self._template_start <= lo and hi < self._template_expiry):
            self._build_templates(lo, hi)
        table = self._by_first_byte
        if self.needs_client_address or self.require_nts:
            table = _NO_FAST_PATH
        elif isinstance(out, bytearray) and isinstance(data, bytearray) and stride >= 48:
            firsts = data[0 : n * stride : stride]
            template = table[firsts[0]]
            if (template is not None and firsts.count(firsts[0]) == n
                    and lengths.count(HEADER_BYTES) == n):
                self._respond_uniform(data, stride, n, rx_ntp, template, out)
                self.received += n
                self.accepted += n
                return list(range(n))
        pack = _Q.pack_into
        respond = self.respond
        o = 0  # where the next reply goes
        fast = 0
        # Written for CPython's speed: this loop is the server's hot path.
        for k, base, length, rx in zip(range(n), range(0, n * stride, stride), lengths, rx_ntp,
                                       strict=False):
            if length < 0:
                continue  # taken out of the batch by the caller (NTS, answered on its own)
            if length == HEADER_BYTES:
                template = table[data[base]]
                if template is not None:
                    out[o : o + REPLY_BYTES] = template
                    out[o + 2] = data[base + 2]  # the poll field is the client's
                    out[o + 24 : o + 32] = data[base + 40 : base + 48]
                    pack(out, o + 32, rx)
                    answered.append(k)
                    o += REPLY_BYTES
                    continue
            client = clients[k] if clients else b""
            if respond(data[base : base + length], length, client, rx, now_mono_ns, out, o):
                answered.append(k)
                o += REPLY_BYTES
                fast -= 1  # respond() counted this one itself
        fast += len(answered)
        self.received += fast
        self.accepted += fast
        return answered

    def _respond_uniform(self, data: bytearray, stride: int, n: int, rx_ntp: Sequence[int],
                         template: bytes, out: bytearray) -> None:
        """Replies to n plain requests of one version, with a fixed number of bulk copies.

        Extended-slice assignments move the poll byte and the 8 origin bytes of
        every request at once, so the Python cost per request is nearly nothing.
        """
        end, size = n * stride, n * REPLY_BYTES
        out[0:size] = template * n
        out[2:size:REPLY_BYTES] = data[2:end:stride]
        for i in range(8):
            out[24 + i : size : REPLY_BYTES] = data[40 + i : end : stride]
        packed = _packer(n).pack(*rx_ntp)
        for i in range(8):
            out[32 + i : size : REPLY_BYTES] = packed[i::8]
