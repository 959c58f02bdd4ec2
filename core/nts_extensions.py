"""NTS extension fields of NTP packets (RFC 8915 §5): build, parse with bounds, seal
and open with an AEAD passed in.

Four field types: Unique Identifier (random, echoed by the server: it ties a reply
to one request and defeats replays), NTS Cookie, NTS Cookie Placeholder (asks the
server for one more cookie without revealing how many the client holds) and the NTS
Authenticator and Encrypted Extension Fields, which authenticates everything before
it (the associated data) and carries encrypted fields (the server's new cookies).

The AEAD is an interface (:class:`Aead`) so that this module never holds key
material longer than its caller wants; :class:`AesSivCmac256` adapts
``cryptography``'s ``AESSIV`` (a maintained, constant-time implementation: writing
AES-SIV here would be reckless). The SIV nonce is passed as the last associated-data
component, which is how RFC 5297 turns SIV into a nonce-based AEAD and what other
NTS implementations do, so keys from one side open packets of the other.

Client: :func:`build_client_request`, :func:`open_server_reply`.
Server: :func:`parse_client_request`, :func:`open_client_request`,
:func:`build_server_reply` (never longer than the request: NTS must not amplify),
:func:`nts_nak`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from .errors import PacketError
from .packet import (
    HEADER_BYTES,
    MAX_EXTENSIONS_BYTES,
    MAX_PACKET_BYTES,
    MIN_EXTENSION_BYTES,
    V4_MAC_LENGTHS,
    Mode,
    NtpPacket,
    check_trailer,
    parse,
)

__all__ = [
    "MIN_NONCE_BYTES",
    "NTSN",
    "UID_BYTES",
    "Aead",
    "AesSivCmac256",
    "FieldType",
    "NtsClientRequest",
    "NtsError",
    "NtsServerReply",
    "build_client_request",
    "build_server_reply",
    "encode_field",
    "is_nts_nak",
    "max_placeholders",
    "nts_nak",
    "open_client_request",
    "open_server_reply",
    "parse_client_request",
    "parse_fields",
    "request_size",
]

UID_BYTES = 32  # RFC 8915 §5.3: at least 32 random bytes
MIN_NONCE_BYTES = 16  # AES-SIV's nonce; every NTS implementation sends 16
AES_SIV_KEY_BYTES = 32
SIV_TAG_BYTES = 16
_EF = struct.Struct(">HH")
_AUTH_HEAD = struct.Struct(">HH")
NTSN = 0x4E54534E  # "NTSN", the NTS NAK kiss code
_BAD_MODES = frozenset({int(Mode.RESERVED), int(Mode.CONTROL), int(Mode.PRIVATE)})


class FieldType(enum.IntEnum):
    """NTP extension field types of RFC 8915 §5.7."""

    UNIQUE_IDENTIFIER = 0x0104
    NTS_COOKIE = 0x0204
    NTS_COOKIE_PLACEHOLDER = 0x0304
    NTS_AUTHENTICATOR = 0x0404


_UID = int(FieldType.UNIQUE_IDENTIFIER)
_COOKIE = int(FieldType.NTS_COOKIE)
_PLACEHOLDER = int(FieldType.NTS_COOKIE_PLACEHOLDER)
_AUTHENTICATOR = int(FieldType.NTS_AUTHENTICATOR)


class NtsError(PacketError):
    """An NTS field that is malformed, missing, duplicated or does not authenticate."""


class Aead(Protocol):
    """An AEAD with a nonce (RFC 5116 style); ``open`` raises :class:`NtsError`."""

    def seal(self, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes: ...

    def open(self, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes: ...


class AesSivCmac256:
    """AEAD_AES_SIV_CMAC_256 (RFC 5297, IANA AEAD 15) over ``cryptography``'s AESSIV."""

    __slots__ = ("_siv",)

    def __init__(self, key: bytes) -> None:
        if len(key) != AES_SIV_KEY_BYTES:
            raise ValueError(f"AEAD_AES_SIV_CMAC_256 takes a {AES_SIV_KEY_BYTES}-byte key")
        self._siv = AESSIV(key)

    def seal(self, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
        return self._siv.encrypt(plaintext, [associated, nonce])

    def open(self, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
        try:
            return self._siv.decrypt(ciphertext, [associated, nonce])
        except InvalidTag:
            raise NtsError("authenticator does not verify") from None


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def encode_field(field_type: int, value: bytes) -> bytes:
    """One extension field, value zero-padded to a multiple of 4 and to 16 bytes in all."""
    size = len(value)
    padded = max(size + (-size % 4), MIN_EXTENSION_BYTES - 4)
    return _EF.pack(field_type, 4 + padded) + value + bytes(padded - size)


def parse_fields(data: bytes, offset: int = 0) -> list[tuple[int, int, bytes]]:
    """Extension fields in ``data[offset:]`` as (type, start offset, value); strict bounds.

    Used for the decrypted plaintext of an authenticator (the packet codec parses
    the packet's own fields): each field at least 16 bytes, a multiple of 4, and
    nothing left over.
    """
    fields: list[tuple[int, int, bytes]] = []
    while offset < len(data):
        if len(data) - offset < MIN_EXTENSION_BYTES:
            raise NtsError(f"{len(data) - offset} bytes left: not an extension field")
        kind, size = _EF.unpack_from(data, offset)
        if size < MIN_EXTENSION_BYTES or size % 4 or offset + size > len(data):
            raise NtsError(f"extension field of invalid length {size}")
        fields.append((kind, offset, bytes(data[offset + 4 : offset + size])))
        offset += size
    return fields


def _authenticator(aead: Aead, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    ciphertext = aead.seal(nonce, plaintext, associated)
    body = _AUTH_HEAD.pack(len(nonce), len(ciphertext)) + _pad4(nonce) + _pad4(ciphertext)
    return encode_field(FieldType.NTS_AUTHENTICATOR, body)


def _split_authenticator(value: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of an authenticator field's value, bounds checked."""
    if len(value) < _AUTH_HEAD.size:
        raise NtsError("authenticator too short")
    nonce_len, ct_len = _AUTH_HEAD.unpack_from(value, 0)
    if nonce_len < MIN_NONCE_BYTES:
        raise NtsError(f"nonce of {nonce_len} bytes (at least {MIN_NONCE_BYTES})")
    if ct_len < SIV_TAG_BYTES:
        raise NtsError(f"ciphertext of {ct_len} bytes (shorter than the tag)")
    start = _AUTH_HEAD.size
    ct_start = start + nonce_len + (-nonce_len % 4)
    if ct_start + ct_len > len(value):
        raise NtsError("authenticator lengths exceed the field")
    return value[start : start + nonce_len], value[ct_start : ct_start + ct_len]


def request_size(cookie_len: int, placeholders: int, nonce_len: int = MIN_NONCE_BYTES) -> int:
    """Bytes of a client request with one cookie of ``cookie_len`` and placeholders."""
    cookie_field = 4 + max(12, cookie_len + (-cookie_len % 4))
    auth = 4 + 4 + nonce_len + (-nonce_len % 4) + SIV_TAG_BYTES
    return HEADER_BYTES + 4 + UID_BYTES + cookie_field * (1 + placeholders) + auth


def max_placeholders(cookie_len: int) -> int:
    """How many placeholders fit beside one cookie in the packet codec's field budget."""
    budget = HEADER_BYTES + MAX_EXTENSIONS_BYTES
    fitting = 0
    while fitting < 7 and request_size(cookie_len, fitting + 1) <= budget:
        fitting += 1
    return fitting


# --- client -------------------------------------------------------------------------------


def build_client_request(
    header: bytes, uid: bytes, cookie: bytes, placeholders: int, c2s: Aead, nonce: bytes
) -> bytes:
    """An NTS request: the 48-byte header, the unique identifier, one cookie,
    ``placeholders`` placeholders of the cookie's size, then the authenticator."""
    if len(header) != HEADER_BYTES or len(uid) < UID_BYTES or len(nonce) < MIN_NONCE_BYTES:
        raise ValueError("header of 48 bytes, unique identifier ≥ 32, nonce ≥ 16 bytes")
    parts = [header, encode_field(FieldType.UNIQUE_IDENTIFIER, uid),
             encode_field(FieldType.NTS_COOKIE, cookie)]
    parts += [encode_field(FieldType.NTS_COOKIE_PLACEHOLDER, bytes(len(cookie)))] * placeholders
    associated = b"".join(parts)
    return associated + _authenticator(c2s, nonce, b"", associated)


@dataclass(frozen=True, slots=True)
class NtsServerReply:
    """An authenticated reply: the header fields and the new cookies it carried."""

    packet: NtpPacket
    cookies: tuple[bytes, ...]


def _field_offsets(packet: NtpPacket) -> list[int]:
    offsets = []
    offset = HEADER_BYTES
    for ext in packet.extensions:
        offsets.append(offset)
        offset += 4 + len(ext.value)
    return offsets


def _uid_of(packet: NtpPacket) -> bytes | None:
    uids = [ext.value for ext in packet.extensions if ext.field_type == FieldType.UNIQUE_IDENTIFIER]
    if len(uids) > 1:
        raise NtsError("more than one unique identifier")
    return uids[0] if uids else None


def is_nts_nak(data: bytes, uid: bytes) -> bool:
    """An NTS NAK (kiss code NTSN) echoing our unique identifier.

    It is not authenticated (the server could not read our cookie): the caller
    may start a new key exchange, which costs an attacker nothing it could not
    get by dropping packets, but must not treat it as a time sample.
    """
    try:
        packet = parse(data)
        return packet.is_kiss and packet.reference_id == NTSN and _uid_of(packet) == uid
    except PacketError:
        return False


def open_server_reply(data: bytes, uid: bytes, s2c: Aead) -> NtsServerReply:
    """Verify a server reply for the request that carried ``uid``; raise NtsError.

    The unique identifier must match and the authenticator must be the last
    field (fields after it would be unauthenticated) and verify over everything
    before it; the new cookies come from its encrypted part only.
    """
    packet = parse(data)
    if packet.mac is not None:
        raise NtsError("a legacy MAC after the NTS fields")
    if _uid_of(packet) != uid:
        raise NtsError("unique identifier missing or not ours")
    if not packet.extensions or packet.extensions[-1].field_type != FieldType.NTS_AUTHENTICATOR:
        raise NtsError("the authenticator is missing or not the last field")
    auth_offset = _field_offsets(packet)[-1]
    nonce, ciphertext = _split_authenticator(packet.extensions[-1].value)
    plaintext = s2c.open(nonce, ciphertext, bytes(data[:auth_offset]))
    cookies = tuple(value for kind, _, value in parse_fields(plaintext)
                    if kind == FieldType.NTS_COOKIE)
    return NtsServerReply(packet, cookies)


# --- server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NtsClientRequest:
    """The NTS parts of a client request, not yet authenticated."""

    version: int
    mode: int
    poll: int  # signed, as sent
    transmit_ts: int
    uid: bytes
    cookie: bytes
    placeholders: int
    nonce: bytes
    ciphertext: bytes
    auth_offset: int  # the associated data is the request up to here


_POLL_AND_TRANSMIT = struct.Struct(">2xb37xQ")


def parse_client_request(data: bytes) -> NtsClientRequest | None:
    """The NTS parts of a request; None if it carries no cookie (a plain NTP request).

    Raises PacketError when it is not NTP at all (the rules of
    :func:`~ntpd_py.core.packet.parse`), NtsError when it has NTS fields that break
    the rules: no or several unique identifiers or cookies, placeholders whose size
    differs from the cookie's, no authenticator or fields after it.

    This runs for every request an NTS server gets, so it walks the raw bytes once
    instead of building a packet object first (``packet.parse`` and then a loop over
    its fields cost ~40 % of an NTS reply); tests/core/test_nts_parse.py holds the
    two-step version and checks that both agree on every input.
    """
    length = len(data)
    if length < HEADER_BYTES:
        raise PacketError(f"short packet ({length} bytes)")
    first = data[0]
    version, mode = (first >> 3) & 7, first & 7
    if not 1 <= version <= 4:
        raise PacketError(f"unsupported NTP version {version}")
    if mode in _BAD_MODES:
        raise PacketError(f"unsupported mode {mode}")
    if version < 4 or length == HEADER_BYTES or length > MAX_PACKET_BYTES:
        check_trailer(data, length, version)  # raises, or: no extension fields
        return None
    uid: bytes | None = None
    cookie: bytes | None = None
    placeholder_sizes: set[int] = set()
    placeholders = 0
    offset = HEADER_BYTES
    last_type = last_offset = -1
    mac = False
    duplicate = ""  # an NTS rule broken; raised once the packet is known to be NTP
    unpack = _EF.unpack_from
    while offset < length:
        rest = length - offset
        if rest in V4_MAC_LENGTHS:
            mac = True
            break
        if rest < MIN_EXTENSION_BYTES:
            raise PacketError(f"{rest} trailing bytes are neither a MAC nor an extension field")
        kind, size = unpack(data, offset)
        if size < MIN_EXTENSION_BYTES or size % 4 or size > rest:
            raise PacketError(f"extension field of invalid length {size}")
        if kind == _COOKIE:
            if cookie is not None:
                duplicate = duplicate or "more than one cookie"
            cookie = bytes(data[offset + 4 : offset + size])
        elif kind == _UID:
            if uid is not None:
                duplicate = duplicate or "more than one unique identifier"
            uid = bytes(data[offset + 4 : offset + size])
        elif kind == _PLACEHOLDER:
            placeholders += 1
            placeholder_sizes.add(size - 4)
        last_type, last_offset = kind, offset
        offset += size
    if duplicate:
        raise NtsError(duplicate)
    if cookie is None:
        return None
    if uid is None or len(uid) < UID_BYTES:
        raise NtsError("no unique identifier of at least 32 bytes")
    if placeholder_sizes - {len(cookie)}:
        raise NtsError("a placeholder differs in size from the cookie")
    if mac or last_type != _AUTHENTICATOR:
        raise NtsError("the authenticator is missing or not the last field")
    end = offset
    nonce, ciphertext = _split_authenticator(bytes(data[last_offset + 4 : end]))
    poll, transmit = _POLL_AND_TRANSMIT.unpack_from(data, 0)
    return NtsClientRequest(version, mode, poll, transmit, uid, cookie, placeholders, nonce,
                            ciphertext, last_offset)


def open_client_request(data: bytes, request: NtsClientRequest, c2s: Aead) -> bytes:
    """Verify the request with the client's key (from its cookie); the plaintext."""
    return c2s.open(request.nonce, request.ciphertext, bytes(data[: request.auth_offset]))


def build_server_reply(
    header: bytes, uid: bytes, cookies: list[bytes], s2c: Aead, nonce: bytes, limit: int
) -> bytes:
    """An authenticated reply with as many of ``cookies`` as fit in ``limit`` bytes.

    ``limit`` is the request's length: a reply never exceeds it, so an NTS server
    cannot amplify a spoofed request. Cookies that do not fit are left out (the
    client asks again with placeholders).
    """
    associated = header + encode_field(FieldType.UNIQUE_IDENTIFIER, uid)
    kept = list(cookies)
    while True:
        plaintext = b"".join(encode_field(FieldType.NTS_COOKIE, c) for c in kept)
        reply = associated + _authenticator(s2c, nonce, plaintext, associated)
        if len(reply) <= limit or not kept:
            return reply
        kept.pop()


def nts_nak(header: bytes, uid: bytes) -> bytes:
    """An NTS NAK: the kiss header the caller built (stratum 0, NTSN) and our uid echoed."""
    return header + encode_field(FieldType.UNIQUE_IDENTIFIER, uid)
