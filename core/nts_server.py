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
from collections.abc import Callable
from dataclasses import dataclass

from .errors import PacketError
from .events import LeapIndicator
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
from .packet import HEADER_STRUCT, Mode

__all__ = [
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
    if request.packet.mode != Mode.CLIENT:
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
    packet = verdict.request.packet
    header = HEADER_STRUCT.pack(
        (int(LeapIndicator.UNSYNCHRONIZED) << 6) | (packet.version << 3) | Mode.SERVER,
        0, packet.poll, 0, 0, 0, NTSN, 0, packet.transmit_ts, 0, 0)
    return nts_nak(header, verdict.request.uid)
