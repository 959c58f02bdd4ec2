"""NTS Key Establishment (RFC 8915 §4) records: a strict codec, the client's request and
response, the server's request parser and response builder.

A KE message is a sequence of records ending with End of Message. Each record is a
16-bit word (critical bit + 15-bit type), a 16-bit body length, then the body.
Parsing is strict because a key exchange that half-succeeds is worse than one that
fails: a record the RFC requires to be critical that is not, a body of the wrong
length, a duplicate of a record that must appear once, an unknown critical record,
or bytes after End of Message are all errors. Unknown non-critical records are
skipped, as the RFC asks.

The client side returns a :class:`KeResponse` or a :class:`KeFailure` (a typed
error rather than an exception: every path of a hostile server is data the worker
counts). The server side returns a :class:`KeRequest` or a :class:`KeFailure`
whose ``error_code`` is what the server answers with (:func:`error_response`).

Nothing here does I/O; the TLS exporter keys come from the I/O layer.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from .errors import CoreError

__all__ = [
    "AEAD_AES_SIV_CMAC_256",
    "EXPORTER_LABEL",
    "MAX_COOKIE_BYTES",
    "MAX_MESSAGE_BYTES",
    "NTPV4_PROTOCOL",
    "FailureKind",
    "KeErrorCode",
    "KeFailure",
    "KeRecordError",
    "KeRequest",
    "KeResponse",
    "Record",
    "RecordType",
    "client_request",
    "encode_records",
    "error_response",
    "exporter_context",
    "parse_client_response",
    "parse_message",
    "parse_server_request",
    "server_response",
]

# RFC 8915 §5.1: the keys are exported with this label; the context names the
# protocol, the AEAD algorithm and the direction.
EXPORTER_LABEL = b"EXPORTER-network-time-security"
NTPV4_PROTOCOL = 0
AEAD_AES_SIV_CMAC_256 = 15  # IANA AEAD registry; the algorithm every NTS peer has
# A response carries 8 cookies of a few hundred bytes at most; anything this large is
# a hostile or broken peer (the I/O layer stops reading here).
MAX_MESSAGE_BYTES = 16384
# chrony's limit. A cookie rides in an NTP request with a unique identifier, an
# authenticator and placeholders of its own size within the 1024 bytes of extension
# fields the packet codec accepts; large cookies mean fewer placeholders per request.
MAX_COOKIE_BYTES = 256
MAX_COOKIES = 16  # more than 8 in one response is kept to 8 by the jar; beyond 16 is abuse
MAX_SERVER_NAME_BYTES = 253  # a DNS name
_HEADER = struct.Struct(">HH")
_CRITICAL = 0x8000


class RecordType(enum.IntEnum):
    """The record types of RFC 8915 §4.1 (IANA "NTS Key Establishment Record Types")."""

    END_OF_MESSAGE = 0
    NEXT_PROTOCOL = 1
    ERROR = 2
    WARNING = 3
    AEAD_ALGORITHM = 4
    NEW_COOKIE = 5
    NTPV4_SERVER = 6
    NTPV4_PORT = 7


class KeErrorCode(enum.IntEnum):
    """Error record codes (RFC 8915 §4.1.3)."""

    UNRECOGNIZED_CRITICAL_RECORD = 0
    BAD_REQUEST = 1
    INTERNAL_SERVER_ERROR = 2


# The RFC's "critical bit MUST be set" (True) and "MUST NOT be set" (False) records;
# the others may have it either way.
_CRITICAL_RULE: dict[int, bool] = {
    RecordType.END_OF_MESSAGE: True,
    RecordType.NEXT_PROTOCOL: True,
    RecordType.ERROR: True,
    RecordType.WARNING: True,
    RecordType.NEW_COOKIE: False,
}


class KeRecordError(CoreError):
    """A KE message that is not well formed; ``code`` is what a server answers with."""

    def __init__(self, message: str, code: KeErrorCode = KeErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Record:
    """One KE record; ``record_type`` is the 15-bit type without the critical bit."""

    record_type: int
    body: bytes = b""
    critical: bool = False

    def encode(self) -> bytes:
        if not 0 <= self.record_type < _CRITICAL or len(self.body) > 0xFFFF:
            raise ValueError("record type is 15 bits and a body at most 65535 bytes")
        word = self.record_type | (_CRITICAL if self.critical else 0)
        return _HEADER.pack(word, len(self.body)) + self.body


def encode_records(records: list[Record]) -> bytes:
    return b"".join(record.encode() for record in records)


def _u16_list(body: bytes, what: str) -> tuple[int, ...]:
    if not body or len(body) % 2:
        raise KeRecordError(f"{what} record of length {len(body)} (a non-empty list of u16)")
    return struct.unpack(f">{len(body) // 2}H", body)


def _check_record(record: Record) -> None:
    """Length and critical-bit rules of the known record types."""
    rule = _CRITICAL_RULE.get(record.record_type)
    if rule is not None and record.critical != rule:
        state = "without" if rule else "with"
        raise KeRecordError(f"record type {record.record_type} {state} the critical bit")
    kind = record.record_type
    size = len(record.body)
    if kind == RecordType.END_OF_MESSAGE and size:
        raise KeRecordError("End of Message with a body")
    if kind in (RecordType.ERROR, RecordType.WARNING, RecordType.NTPV4_PORT) and size != 2:
        raise KeRecordError(f"record type {kind} of length {size} (expected 2)")
    if kind in (RecordType.NEXT_PROTOCOL, RecordType.AEAD_ALGORITHM):
        _u16_list(record.body, RecordType(kind).name)
    if kind == RecordType.NEW_COOKIE and not 0 < size <= MAX_COOKIE_BYTES:
        raise KeRecordError(f"cookie of {size} bytes (1 to {MAX_COOKIE_BYTES})")
    if kind == RecordType.NTPV4_SERVER:
        if not 0 < size <= MAX_SERVER_NAME_BYTES:
            raise KeRecordError(f"server name of {size} bytes")
        if not all(0x21 <= b < 0x7F for b in record.body):
            raise KeRecordError("server name is not printable ASCII")


def parse_message(data: bytes | bytearray | memoryview) -> tuple[Record, ...] | None:
    """The records of one complete KE message, or None while End of Message is missing.

    Raises :class:`KeRecordError` for anything malformed, for a message longer than
    :data:`MAX_MESSAGE_BYTES` and for bytes after End of Message (KE is one message
    each way). Unknown records are returned; the role-specific parsers decide.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise KeRecordError(f"KE message longer than {MAX_MESSAGE_BYTES} bytes")
    records: list[Record] = []
    offset = 0
    while offset + 4 <= len(data):
        word, size = _HEADER.unpack_from(data, offset)
        if offset + 4 + size > len(data):
            return None
        record = Record(word & ~_CRITICAL, bytes(data[offset + 4 : offset + 4 + size]),
                        bool(word & _CRITICAL))
        _check_record(record)
        offset += 4 + size
        if record.record_type == RecordType.END_OF_MESSAGE:
            if offset != len(data):
                raise KeRecordError(f"{len(data) - offset} bytes after End of Message")
            return tuple(records)
        records.append(record)
    return None


# --- client --------------------------------------------------------------------------------


class FailureKind(enum.Enum):
    """Why a key exchange failed."""

    MALFORMED = "malformed"  # the peer's message breaks the record rules
    SERVER_ERROR = "server-error"  # the server sent an Error record
    SERVER_WARNING = "server-warning"  # a Warning record: no warning codes are understood
    NEGOTIATION = "negotiation"  # no protocol / AEAD both sides support
    NO_COOKIES = "no-cookies"
    UNKNOWN_CRITICAL = "unknown-critical"
    TRANSPORT = "transport"  # TLS, timeouts, sizes: set by the I/O layer


@dataclass(frozen=True, slots=True)
class KeFailure:
    """A failed key exchange. ``error_code``: the Error record to send (server side)
    or the one received (client side, :attr:`FailureKind.SERVER_ERROR`)."""

    kind: FailureKind
    detail: str
    error_code: int | None = None


@dataclass(frozen=True, slots=True)
class KeResponse:
    """What a client keeps from a successful response (keys come from TLS)."""

    protocol: int
    aead: int
    cookies: tuple[bytes, ...]
    server: str | None = None  # NTPv4 Server Negotiation; None: the KE server's host
    port: int | None = None  # NTPv4 Port Negotiation; None: 123


def client_request(
    aeads: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,),
    protocols: tuple[int, ...] = (NTPV4_PROTOCOL,),
) -> bytes:
    """The client's request: the protocols and AEAD algorithms it supports, best first."""
    return encode_records([
        Record(RecordType.NEXT_PROTOCOL, struct.pack(f">{len(protocols)}H", *protocols), True),
        Record(RecordType.AEAD_ALGORITHM, struct.pack(f">{len(aeads)}H", *aeads), True),
        Record(RecordType.END_OF_MESSAGE, b"", True),
    ])


def _one(seen: dict[int, Record], record: Record) -> None:
    if record.record_type in seen:
        raise KeRecordError(f"duplicate record of type {record.record_type}")
    seen[record.record_type] = record


def parse_client_response(
    records: tuple[Record, ...],
    aeads: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,),
    protocols: tuple[int, ...] = (NTPV4_PROTOCOL,),
) -> KeResponse | KeFailure:
    """Judge a server's response to :func:`client_request` (``aeads``/``protocols`` offered)."""
    seen: dict[int, Record] = {}
    cookies: list[bytes] = []
    try:
        for record in records:
            kind = record.record_type
            if kind == RecordType.ERROR:
                code = struct.unpack(">H", record.body)[0]
                return KeFailure(FailureKind.SERVER_ERROR, f"server error {code}", code)
            if kind == RecordType.WARNING:
                code = struct.unpack(">H", record.body)[0]
                return KeFailure(FailureKind.SERVER_WARNING, f"server warning {code}", code)
            if kind == RecordType.NEW_COOKIE:
                if len(cookies) >= MAX_COOKIES:
                    raise KeRecordError(f"more than {MAX_COOKIES} cookies")
                cookies.append(record.body)
            elif kind in RecordType.__members__.values():
                _one(seen, record)
            elif record.critical:
                return KeFailure(FailureKind.UNKNOWN_CRITICAL,
                                 f"unknown critical record type {kind}")
        proto = seen.get(RecordType.NEXT_PROTOCOL)
        if proto is None:
            raise KeRecordError("no Next Protocol record")
        chosen = _u16_list(proto.body, "Next Protocol")
        if len(chosen) != 1 or chosen[0] not in protocols:
            return KeFailure(FailureKind.NEGOTIATION, f"server chose protocol(s) {chosen}")
        aead_record = seen.get(RecordType.AEAD_ALGORITHM)
        if aead_record is None:
            return KeFailure(FailureKind.NEGOTIATION, "no AEAD algorithm record")
        aead = _u16_list(aead_record.body, "AEAD")
        if len(aead) != 1 or aead[0] not in aeads:
            return KeFailure(FailureKind.NEGOTIATION, f"server chose AEAD(s) {aead}")
        if not cookies:
            return KeFailure(FailureKind.NO_COOKIES, "no cookie in the response")
        server = seen.get(RecordType.NTPV4_SERVER)
        port = seen.get(RecordType.NTPV4_PORT)
        return KeResponse(
            protocol=chosen[0],
            aead=aead[0],
            cookies=tuple(cookies),
            server=server.body.decode("ascii") if server else None,
            port=struct.unpack(">H", port.body)[0] if port else None,
        )
    except KeRecordError as exc:
        return KeFailure(FailureKind.MALFORMED, str(exc))


def exporter_context(protocol: int, aead: int, server_to_client: bool) -> bytes:
    """The TLS exporter context of RFC 8915 §5.1 (C2S: 0x00, S2C: 0x01)."""
    return struct.pack(">HHB", protocol, aead, 1 if server_to_client else 0)


# --- server --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeRequest:
    """A valid client request: what the server picked from the client's offers."""

    protocol: int
    aead: int
    server: str | None = None  # what the client would like; a server may ignore it
    port: int | None = None
    offered_aeads: tuple[int, ...] = field(default=())


def parse_server_request(
    records: tuple[Record, ...],
    aeads: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,),
    protocols: tuple[int, ...] = (NTPV4_PROTOCOL,),
) -> KeRequest | KeFailure:
    """Judge a client's request; a failure's ``error_code`` is the Error record to answer."""
    seen: dict[int, Record] = {}
    try:
        for record in records:
            kind = record.record_type
            if kind in (RecordType.ERROR, RecordType.WARNING, RecordType.NEW_COOKIE):
                raise KeRecordError(f"record type {kind} from a client")
            if kind in RecordType.__members__.values():
                _one(seen, record)
            elif record.critical:
                return KeFailure(FailureKind.UNKNOWN_CRITICAL,
                                 f"unknown critical record type {kind}",
                                 KeErrorCode.UNRECOGNIZED_CRITICAL_RECORD)
        proto = seen.get(RecordType.NEXT_PROTOCOL)
        aead_record = seen.get(RecordType.AEAD_ALGORITHM)
        if proto is None or aead_record is None:
            raise KeRecordError("Next Protocol and AEAD records are required")
        offered = _u16_list(proto.body, "Next Protocol")
        protocol = next((p for p in offered if p in protocols), None)
        offered_aeads = _u16_list(aead_record.body, "AEAD")
        aead = next((a for a in offered_aeads if a in aeads), None)
        if protocol is None or aead is None:
            return KeFailure(FailureKind.NEGOTIATION, "no common protocol or AEAD",
                             KeErrorCode.BAD_REQUEST)
        server = seen.get(RecordType.NTPV4_SERVER)
        port = seen.get(RecordType.NTPV4_PORT)
        return KeRequest(protocol, aead,
                         server.body.decode("ascii") if server else None,
                         struct.unpack(">H", port.body)[0] if port else None,
                         offered_aeads)
    except KeRecordError as exc:
        return KeFailure(FailureKind.MALFORMED, str(exc), KeErrorCode.BAD_REQUEST)


def server_response(
    protocol: int,
    aead: int,
    cookies: list[bytes],
    server: str | None = None,
    port: int | None = None,
) -> bytes:
    """A successful response: the chosen protocol and AEAD, the cookies, negotiation."""
    records = [
        Record(RecordType.NEXT_PROTOCOL, struct.pack(">H", protocol), True),
        Record(RecordType.AEAD_ALGORITHM, struct.pack(">H", aead), True),
    ]
    if server is not None:
        records.append(Record(RecordType.NTPV4_SERVER, server.encode("ascii"), True))
    if port is not None:
        records.append(Record(RecordType.NTPV4_PORT, struct.pack(">H", port), True))
    records.extend(Record(RecordType.NEW_COOKIE, cookie) for cookie in cookies)
    records.append(Record(RecordType.END_OF_MESSAGE, b"", True))
    return encode_records(records)


def error_response(code: int) -> bytes:
    """An Error record and End of Message (the server then closes the connection)."""
    return encode_records([
        Record(RecordType.ERROR, struct.pack(">H", code), True),
        Record(RecordType.END_OF_MESSAGE, b"", True),
    ])
