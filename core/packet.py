"""Codec of the NTPv3/v4 packet: the 48-byte header plus what may follow it.

:func:`parse` turns bytes from the network into an :class:`NtpPacket` and
raises :class:`~ntpd_py.core.errors.PacketError` for anything malformed; no
other exception can leave it (a hypothesis test feeds it arbitrary bytes).
:meth:`NtpPacket.encode` is its inverse.

What may follow the header (RFC 5905 §7.3, RFC 7822):

* NTPv4: any number of extension fields (type u16, length u16 counting the
  4-byte field header, value padded to the length). A field is at least
  16 bytes long and a multiple of 4. Then, optionally, a legacy MAC.
* A legacy MAC (key id + digest) is recognised by the length of what is
  left: 4 bytes (a crypto-NAK, key id only), 20 (MD5/AES-CMAC) or 24 (SHA-1).
  This is RFC 7822's rule for telling a MAC from an extension field; its other
  rule (a MAC-less last field must be ≥ 28 bytes) follows from it and is not
  checked separately. In NTPv3 only a MAC may follow, 4 to 68 bytes, a
  multiple of 4.
* Nothing here authenticates: the MAC and field contents are carried, not
  verified. Callers that do not implement a field ignore it.

Versions 1 to 4 are accepted (v1/v2 as headers only); version 0 and 5+ (the
NTPv5 draft has a different header) are rejected, as are mode 0 and the
control/private modes 6 and 7 whose layout is not this one. Packets longer than
:data:`MAX_PACKET_BYTES` (the header plus chrony's limit of 1024 bytes of
extension fields plus the longest MAC) are rejected as oversized.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from .errors import PacketError
from .events import LeapIndicator

__all__ = [
    "HEADER_BYTES",
    "HEADER_STRUCT",
    "KISS_DENY",
    "KISS_RATE",
    "KISS_RSTR",
    "MAX_PACKET_BYTES",
    "ExtensionField",
    "Mode",
    "NtpPacket",
    "check_trailer",
    "client_request",
    "kiss_code",
    "parse",
    "refid_for_address",
    "refid_from_text",
]

HEADER_BYTES = 48
MAX_EXTENSIONS_BYTES = 1024
MAX_MAC_BYTES = 68  # key id + a 64-byte digest (NTPv3 style)
MAX_PACKET_BYTES = HEADER_BYTES + MAX_EXTENSIONS_BYTES + MAX_MAC_BYTES
MIN_EXTENSION_BYTES = 16
V4_MAC_LENGTHS = frozenset({4, 20, 24})

# leap/version/mode byte, stratum, poll, precision, root delay, root dispersion,
# reference id, reference/origin/receive/transmit timestamps.
HEADER_STRUCT = struct.Struct(">BBbbIIIQQQQ")
_EF_HEADER = struct.Struct(">HH")


def refid_from_text(text: str) -> int:
    """A reference id or kiss code from up to 4 ASCII characters (NUL padded)."""
    raw = text.encode("ascii")
    if len(raw) > 4:
        raise ValueError("a reference id has at most 4 characters")
    return int.from_bytes(raw.ljust(4, b"\0"), "big")


def refid_for_address(address: str) -> int:
    """The reference id that names an NTP server by address (RFC 5905 §7.3).

    IPv4: the address itself. IPv6: the first 4 bytes of the MD5 of the address
    (a hash, not a security measure: RFC 5905 chose it only to fit 32 bits).
    A server synchronized to us puts one of these for our address in its refid,
    which is how the client detects loops.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return int(ip)
    return int.from_bytes(hashlib.md5(ip.packed, usedforsecurity=False).digest()[:4], "big")


KISS_RATE = refid_from_text("RATE")
KISS_DENY = refid_from_text("DENY")
KISS_RSTR = refid_from_text("RSTR")


def kiss_code(reference_id: int) -> str:
    """The printable kiss code of a stratum-0 packet ('?' for unprintable bytes)."""
    raw = reference_id.to_bytes(4, "big").rstrip(b"\0")
    return "".join(chr(b) if 0x20 < b < 0x7F else "?" for b in raw)


class Mode(enum.IntEnum):
    """The association mode (RFC 5905 figure 10)."""

    RESERVED = 0
    SYMMETRIC_ACTIVE = 1
    SYMMETRIC_PASSIVE = 2
    CLIENT = 3
    SERVER = 4
    BROADCAST = 5
    CONTROL = 6
    PRIVATE = 7


@dataclass(frozen=True, slots=True)
class ExtensionField:
    """One RFC 7822 extension field; ``value`` includes any padding."""

    field_type: int
    value: bytes

    def encode(self) -> bytes:
        length = 4 + len(self.value)
        if length < MIN_EXTENSION_BYTES or length % 4 or length > 0xFFFF:
            raise ValueError("an extension field is ≥ 16 bytes and a multiple of 4")
        return _EF_HEADER.pack(self.field_type, length) + self.value


@dataclass(frozen=True, slots=True)
class NtpPacket:
    """A decoded packet. Timestamps are raw 64-bit values, delay/dispersion raw 16.16."""

    leap: LeapIndicator
    version: int
    mode: Mode
    stratum: int
    poll: int  # log2 s, signed
    precision: int  # log2 s, signed
    root_delay: int  # short format
    root_dispersion: int  # short format
    reference_id: int
    reference_ts: int
    origin_ts: int
    receive_ts: int
    transmit_ts: int
    extensions: tuple[ExtensionField, ...] = ()
    mac: bytes | None = None

    @property
    def is_kiss(self) -> bool:
        """Stratum 0 in a server reply: a Kiss-o'-Death, never a time."""
        return self.stratum == 0

    def encode(self) -> bytes:
        head = HEADER_STRUCT.pack(
            (int(self.leap) << 6) | (self.version << 3) | int(self.mode),
            self.stratum,
            self.poll,
            self.precision,
            self.root_delay,
            self.root_dispersion,
            self.reference_id,
            self.reference_ts,
            self.origin_ts,
            self.receive_ts,
            self.transmit_ts,
        )
        tail = b"".join(field.encode() for field in self.extensions)
        return head + tail + (self.mac or b"")


def client_request(transmit_ts: int, poll: int, version: int = 4) -> bytes:
    """A minimal mode-3 request (every field zero but LI/VN/mode, poll and transmit).

    ``transmit_ts`` should be random (see the client): it identifies the
    request and tells the server nothing about our clock.
    """
    return HEADER_STRUCT.pack(
        (version << 3) | Mode.CLIENT, 0, poll, 0, 0, 0, 0, 0, 0, 0, transmit_ts
    )


def check_trailer(
    data: bytes | bytearray | memoryview, length: int, version: int
) -> tuple[tuple[ExtensionField, ...], bytes | None]:
    """Split and check what follows the header; raise :class:`PacketError` if malformed."""
    if length > MAX_PACKET_BYTES:
        raise PacketError(f"oversized packet ({length} bytes)")
    rest = length - HEADER_BYTES
    if rest == 0:
        return (), None
    if version < 4:
        if rest < 4 or rest > MAX_MAC_BYTES or rest % 4:
            raise PacketError(f"NTPv{version} packet with {rest} trailing bytes (not a MAC)")
        return (), bytes(data[HEADER_BYTES:length])
    fields: list[ExtensionField] = []
    offset = HEADER_BYTES
    while offset < length:
        rest = length - offset
        if rest in V4_MAC_LENGTHS:
            return tuple(fields), bytes(data[offset:length])
        if rest < MIN_EXTENSION_BYTES:
            raise PacketError(f"{rest} trailing bytes are neither a MAC nor an extension field")
        field_type, field_len = _EF_HEADER.unpack_from(data, offset)
        if field_len < MIN_EXTENSION_BYTES or field_len % 4 or field_len > rest:
            raise PacketError(f"extension field of invalid length {field_len}")
        fields.append(ExtensionField(field_type, bytes(data[offset + 4 : offset + field_len])))
        offset += field_len
    return tuple(fields), None


def parse(data: bytes | bytearray | memoryview) -> NtpPacket:
    """Decode one packet; raise :class:`PacketError` if it is not a valid NTPv1-4 packet."""
    length = len(data)
    if length < HEADER_BYTES:
        raise PacketError(f"short packet ({length} bytes)")
    first = data[0]
    version = (first >> 3) & 7
    mode = first & 7
    if not 1 <= version <= 4:
        raise PacketError(f"unsupported NTP version {version}")
    if mode in (Mode.RESERVED, Mode.CONTROL, Mode.PRIVATE):
        raise PacketError(f"unsupported mode {mode}")
    extensions, mac = check_trailer(data, length, version)
    (_, stratum, poll, precision, root_delay, root_disp, refid, ref_ts, org_ts, rec_ts,
     xmt_ts) = HEADER_STRUCT.unpack_from(data, 0)
    return NtpPacket(
        leap=LeapIndicator(first >> 6),
        version=version,
        mode=Mode(mode),
        stratum=stratum,
        poll=poll,
        precision=precision,
        root_delay=root_delay,
        root_dispersion=root_disp,
        reference_id=refid,
        reference_ts=ref_ts,
        origin_ts=org_ts,
        receive_ts=rec_ts,
        transmit_ts=xmt_ts,
        extensions=extensions,
        mac=mac,
    )
