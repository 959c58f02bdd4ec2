"""The client side of NTS for one source, between the NTP client and the socket.

:class:`NtsSession` wraps the 48-byte request the NTP client builds into an NTS
request (unique identifier, cookie, placeholders, authenticator) and turns what comes
back into a :class:`ReplyVerdict`: an authenticated packet for the NTP client, an NTS
NAK (a new key exchange is needed) or something to ignore (forged, replayed, for a
request given up, an unauthenticated kiss-o'-death). The key exchange itself is I/O
(:mod:`ntpd_py.workers.nts_ke_client`); its result goes to :meth:`install`. Sans-IO:
randomness is passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .errors import PacketError
from .nts_cookies import CookieJar, JarState, NtsKeys
from .nts_extensions import (
    MIN_NONCE_BYTES,
    UID_BYTES,
    AesSivCmac256,
    build_client_request,
    is_nts_nak,
    open_server_reply,
)
from .packet import NtpPacket, parse

__all__ = ["NtsSession", "ReplyKind", "ReplyVerdict"]


class ReplyKind(enum.Enum):
    AUTHENTICATED = "authenticated"
    NAK = "nak"  # keys and cookies dropped: run a new key exchange
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class ReplyVerdict:
    kind: ReplyKind
    packet: NtpPacket | None = None  # the authenticated reply (AUTHENTICATED only)
    reason: str = ""


class NtsSession:
    """NTS state of one source: keys, cookies, the request in flight."""

    def __init__(self, random: Callable[[int], bytes], jar: CookieJar | None = None) -> None:
        self._random = random
        self.jar = jar if jar is not None else CookieJar()
        self._uid: bytes | None = None
        self.authenticated = 0
        self.rejected = 0

    @property
    def needs_key_exchange(self) -> bool:
        return self.jar.state is JarState.NEEDS_KEY_EXCHANGE

    @property
    def cookies(self) -> int:
        return len(self.jar)

    def install(self, keys: NtsKeys, cookies: tuple[bytes, ...]) -> None:
        """The result of a key exchange."""
        self.jar.install(keys, cookies)
        self._uid = None

    def request(self, header: bytes) -> bytes:
        """The NTS request around ``header``; RuntimeError if a key exchange is needed."""
        uid = self._random(UID_BYTES)
        cookie, placeholders = self.jar.take(uid)
        keys = self.jar.keys
        assert keys is not None
        self._uid = uid
        return build_client_request(header, uid, cookie, placeholders,
                                    AesSivCmac256(keys.c2s), self._random(MIN_NONCE_BYTES))

    def reply(self, data: bytes) -> ReplyVerdict:
        """Judge a datagram received for this source."""
        uid, keys = self._uid, self.jar.keys
        if uid is None or keys is None:
            self.rejected += 1
            return ReplyVerdict(ReplyKind.IGNORED, reason="no request in flight")
        if is_nts_nak(data, uid):
            self.jar.nak(uid)
            self._uid = None
            return ReplyVerdict(ReplyKind.NAK, reason="NTS NAK")
        try:
            opened = open_server_reply(data, uid, AesSivCmac256(keys.s2c))
        except PacketError as exc:
            self.rejected += 1
            try:
                if parse(data).is_kiss:
                    self.jar.unauthenticated_kod()
            except PacketError:
                pass
            return ReplyVerdict(ReplyKind.IGNORED, reason=str(exc))
        if not self.jar.accept_reply(uid, opened.cookies):
            self.rejected += 1
            return ReplyVerdict(ReplyKind.IGNORED, reason="replayed")
        self._uid = None
        self.authenticated += 1
        return ReplyVerdict(ReplyKind.AUTHENTICATED, opened.packet)
