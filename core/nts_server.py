"""Server-side NTS for one NTP request (RFC 8915 §5.7): judge it, then build the
authenticated reply or the NTS NAK. Pure functions; randomness passed in.

:func:`judge_request` sorts a request into: not NTS (answer as plain NTP, or not at
all under ``require-nts``), authenticated (its cookie opened with a current or stale
key and its authenticator verified with the C2S key inside), NAK (a well-formed NTS
request whose cookie no key opens: the client must run a new key exchange) or drop
(malformed NTS fields, or a cookie that opens but an authenticator that does not
verify: answering would help an attacker probe). :func:`authenticated_reply` appends
the unique identifier and an authenticator holding one fresh cookie per cookie and
placeholder in the request, to the 48-byte header the plain responder built; it is
never longer than the request. :func:`nak_reply` is the kiss-o'-death NTSN.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .errors import PacketError
from .events import LeapIndicator
from .ntp_server import Responder
from .nts_cookies import COOKIE_NONCE_BYTES, NtsKeys, ServerKeySet
from .nts_extensions import (
    MIN_NONCE_BYTES,
    NTSN,
    NtsClientRequest,
    NtsError,
    build_server_reply,
    nts_nak,
    open_client_request,
    parse_client_request,
)
from .packet import HEADER_BYTES, HEADER_STRUCT, Mode

_TRANSMIT = struct.Struct(">Q")

__all__ = [
    "NTS_COUNTERS",
    "NtsResponder",
    "NtsVerdict",
    "Verdict",
    "authenticated_reply",
    "judge_request",
    "nak_reply",
]


class Verdict(enum.Enum):
    NOT_NTS = "not-nts"
    AUTHENTICATED = "authenticated"
    NAK = "nak"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class NtsVerdict:
    verdict: Verdict
    request: NtsClientRequest | None = None
    keys: NtsKeys | None = None
    reason: str = ""


def judge_request(data: bytes, keyset: ServerKeySet) -> NtsVerdict:
    """What to do with one request (see the module docstring)."""
    try:
        request = parse_client_request(data)
    except NtsError as exc:
        return NtsVerdict(Verdict.DROP, reason=str(exc))
    except PacketError as exc:
        return NtsVerdict(Verdict.DROP, reason=f"not NTP: {exc}")
    if request is None:
        return NtsVerdict(Verdict.NOT_NTS)
    if request.mode != Mode.CLIENT:
        return NtsVerdict(Verdict.DROP, reason="NTS fields outside a client request")
    keys = keyset.open_cookie(request.cookie)
    if keys is None:
        return NtsVerdict(Verdict.NAK, request, reason="cookie unknown or stale")
    try:
        open_client_request(data, request, keyset.session_aead(keys.c2s))
    except NtsError as exc:
        return NtsVerdict(Verdict.DROP, request, reason=str(exc))
    return NtsVerdict(Verdict.AUTHENTICATED, request, keys)


def authenticated_reply(
    header: bytes, verdict: NtsVerdict, keyset: ServerKeySet, random: Callable[[int], bytes],
    request_length: int,
) -> bytes:
    """The reply to an authenticated request: ``header`` (the plain responder's 48 bytes)
    plus the echoed identifier and fresh cookies, sealed with the S2C key."""
    assert verdict.verdict is Verdict.AUTHENTICATED and verdict.request and verdict.keys
    wanted = 1 + verdict.request.placeholders
    cookies = [keyset.make_cookie(verdict.keys, random(COOKIE_NONCE_BYTES))
               for _ in range(wanted)]
    return build_server_reply(header, verdict.request.uid, cookies,
                              keyset.session_aead(verdict.keys.s2c), random(MIN_NONCE_BYTES),
                              request_length)


def nak_reply(verdict: NtsVerdict) -> bytes:
    """The NTS NAK: a kiss-o'-death NTSN echoing the request's identifier and transmit time."""
    assert verdict.request is not None
    request = verdict.request
    header = HEADER_STRUCT.pack(
        (int(LeapIndicator.UNSYNCHRONIZED) << 6) | (request.version << 3) | Mode.SERVER,
        0, request.poll, 0, 0, 0, NTSN, 0, request.transmit_ts, 0, 0)
    return nts_nak(header, verdict.request.uid)


NTS_COUNTERS = ("received", "accepted", "denied", "rate_limited", "nak", "dropped")


class NtsResponder:
    """NTS on one server socket, beside its plain :class:`~ntpd_py.core.ntp_server.Responder`.

    The I/O layer gives it each request longer than 48 bytes (only those can carry NTS
    fields). :meth:`respond` returns the whole reply or None. A request with no NTS
    fields is answered as plain NTP (``require-nts`` applies); an NTS request passes the
    same access lists and rate limit as plain NTP (the plain responder decides, and its
    kiss-o'-death, unauthenticated, is the answer: RFC 8915 §5.7 lets a client ignore
    it but not be harmed by it), then gets an authenticated reply with fresh cookies,
    an NTS NAK (cookie unknown or stale) or nothing (malformed, or an authenticator that
    does not verify). Counters as ntpd-rs names its ``ntp_server_nts_*`` metrics, plus
    ``dropped``. The keyset is replaced whole when the supervisor rotates it.
    """

    def __init__(self, plain: Responder, keyset: ServerKeySet,
                 random: Callable[[int], bytes]) -> None:
        self.plain = plain
        self.keyset = keyset
        self.random = random
        self.counts = dict.fromkeys(NTS_COUNTERS, 0)
        self._header = bytearray(HEADER_BYTES)

    def counters(self) -> dict[str, int]:
        return {f"nts_{name}": value for name, value in self.counts.items()}

    def respond(self, request: bytes, client: bytes, rx_ntp: int, now_mono_ns: int,
                transmit_ntp: Callable[[], int]) -> bytes | None:
        """The reply to ``request`` (``client``: the packed source address; ``rx_ntp``:
        its receive time). ``transmit_ntp`` is read just before an authenticated reply
        is sealed: its transmit timestamp is inside the authenticated data."""
        verdict = judge_request(request, self.keyset)
        header = self._header
        if verdict.verdict is Verdict.NOT_NTS:
            size = self.plain.respond(request, len(request), client, rx_ntp, now_mono_ns,
                                      header)
            return bytes(header) if size else None
        self.counts["received"] += 1
        if verdict.verdict is Verdict.DROP:
            self.counts["dropped"] += 1
            self.plain.count_dropped(request, len(request))
            return None
        denied, limited = self.plain.denied, self.plain.rate_limited
        size = self.plain.respond(request, len(request), client, rx_ntp, now_mono_ns, header,
                                  nts=True)
        if self.plain.denied != denied or self.plain.rate_limited != limited:
            self.counts["denied" if self.plain.denied != denied else "rate_limited"] += 1
            return bytes(header) if size else None  # the plain kiss, or nothing
        if not size:
            self.counts["dropped"] += 1  # an access list said "ignore"
            return None
        if verdict.verdict is Verdict.NAK:
            self.counts["nak"] += 1
            return nak_reply(verdict)
        _TRANSMIT.pack_into(header, 40, transmit_ntp())
        self.counts["accepted"] += 1
        return authenticated_reply(bytes(header), verdict, self.keyset, self.random,
                                   len(request))
