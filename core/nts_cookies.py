"""NTS cookies (RFC 8915 §5.7, §6): the client's cookie jar and the server's cookie keys.

Client: :class:`CookieJar` holds the keys of one key exchange and up to 8 cookies,
each sent once (a reused cookie would let an observer link requests). Each request
asks, with placeholders, for enough new cookies to refill the jar; a lost reply costs
one cookie, and an empty jar means a new key exchange. Only the reply to the one
outstanding request (matched by its unique identifier) is accepted, so a replayed
reply is rejected. An NTS NAK that echoes our identifier drops keys and cookies (the
server no longer knows its cookie keys); any other unauthenticated kiss-o'-death is
reported and changes nothing, since anyone on the path could forge it.

Server: :class:`ServerKeySet` keeps a primary cookie key and ``stale_key_count``
older ones, rotated every ``rotation_interval_s`` (time passed in, randomness
passed in: sans-IO). A cookie is key id (4 bytes) + nonce (16) + AES-SIV of the
C2S and S2C keys, with the key id and AEAD number as associated data, so a cookie
cannot be moved to another key or algorithm. :meth:`ServerKeySet.to_bytes` /
:meth:`ServerKeySet.from_bytes` are the ``key-storage-path`` format (JSON, versioned,
parsed strictly); writing it atomically is the caller's job.
"""

from __future__ import annotations

import enum
import json
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .nts_extensions import AES_SIV_KEY_BYTES, AesSivCmac256, NtsError, max_placeholders
from .nts_ke_records import AEAD_AES_SIV_CMAC_256

__all__ = [
    "COOKIE_NONCE_BYTES",
    "CookieJar",
    "CookieKey",
    "JarState",
    "KeysetError",
    "NtsKeys",
    "ServerKeySet",
]

JAR_CAPACITY = 8
COOKIE_NONCE_BYTES = 16
_KEY_ID = struct.Struct(">I")
_NS = 1_000_000_000
_FORMAT = "ntpd-py-nts-keyset"
MAX_STALE_KEYS = 1024  # a stored file claiming more keys is corrupt, not a keyset
SESSION_CACHE_SIZE = 4096  # client AEADs kept by ServerKeySet.session_aead


@dataclass(frozen=True, slots=True)
class NtsKeys:
    """The keys of one key exchange (exported from TLS) and the AEAD they are for."""

    c2s: bytes
    s2c: bytes
    aead: int = AEAD_AES_SIV_CMAC_256


class JarState(enum.Enum):
    READY = "ready"  # keys and at least one cookie
    NEEDS_KEY_EXCHANGE = "needs-key-exchange"


class CookieJar:
    """The client's cookies for one source (see the module docstring)."""

    def __init__(self, capacity: int = JAR_CAPACITY) -> None:
        self.capacity = capacity
        self.keys: NtsKeys | None = None
        self._cookies: list[bytes] = []
        self._outstanding: bytes | None = None  # unique identifier of the request in flight
        self.naks = 0
        self.ignored_kods = 0

    @property
    def state(self) -> JarState:
        if self.keys is None or not self._cookies:
            return JarState.NEEDS_KEY_EXCHANGE
        return JarState.READY

    def __len__(self) -> int:
        return len(self._cookies)

    def install(self, keys: NtsKeys, cookies: tuple[bytes, ...] | list[bytes]) -> None:
        """A completed key exchange: its keys replace the old ones, and so do its cookies."""
        self.keys = keys
        self._cookies = list(cookies)[: self.capacity]
        self._outstanding = None

    def take(self, uid: bytes) -> tuple[bytes, int]:
        """The cookie for the next request (identified by ``uid``) and how many
        placeholders it should carry. The previous request's reply is given up."""
        if self.state is not JarState.READY:
            raise RuntimeError("no cookie: a key exchange is needed first")
        cookie = self._cookies.pop(0)
        wanted = self.capacity - 1 - len(self._cookies)
        self._outstanding = uid
        return cookie, min(wanted, max_placeholders(len(cookie)))

    def accept_reply(self, uid: bytes, cookies: tuple[bytes, ...]) -> bool:
        """An authenticated reply: True (its cookies kept) if it answers the outstanding
        request, False for a replay or a reply to a request given up."""
        if self._outstanding is None or uid != self._outstanding:
            return False
        self._outstanding = None
        room = self.capacity - len(self._cookies)
        self._cookies.extend(cookies[:room])
        return True

    def nak(self, uid: bytes) -> bool:
        """An NTS NAK echoing ``uid``: True (keys and cookies dropped) if ``uid`` is the
        outstanding request's, else False (ignored)."""
        if self._outstanding is None or uid != self._outstanding:
            return False
        self.naks += 1
        self.keys = None
        self._cookies.clear()
        self._outstanding = None
        return True

    def unauthenticated_kod(self) -> None:
        """A kiss-o'-death without authentication: counted, never acted upon."""
        self.ignored_kods += 1


class KeysetError(ValueError):
    """A stored keyset that cannot be used (corrupt, truncated, another format)."""


@dataclass(frozen=True, slots=True)
class CookieKey:
    key_id: int
    key: bytes


class ServerKeySet:
    """The server's cookie keys: the last is the primary, the others still open cookies."""

    def __init__(self, keys: list[CookieKey], rotated_at_ns: int,
                 rotation_interval_s: float = 86400.0, stale_key_count: int = 7) -> None:
        if not keys:
            raise ValueError("a keyset has at least one key")
        self._keys = list(keys)
        self._by_id = {k.key_id: AesSivCmac256(k.key) for k in keys}
        self._sessions: OrderedDict[bytes, AesSivCmac256] = OrderedDict()
        self.rotated_at_ns = rotated_at_ns
        self.rotation_interval_ns = int(rotation_interval_s * _NS)
        self.stale_key_count = stale_key_count

    @classmethod
    def generate(cls, random: Callable[[int], bytes], now_ns: int,
                 rotation_interval_s: float = 86400.0, stale_key_count: int = 7) -> ServerKeySet:
        key_id = _KEY_ID.unpack(random(4))[0]
        return cls([CookieKey(key_id, random(AES_SIV_KEY_BYTES))], now_ns,
                   rotation_interval_s, stale_key_count)

    @property
    def keys(self) -> tuple[CookieKey, ...]:
        return tuple(self._keys)

    @property
    def primary(self) -> CookieKey:
        return self._keys[-1]

    def session_aead(self, key: bytes) -> AesSivCmac256:
        """The AEAD for a client's C2S or S2C key from one of our cookies, cached.

        Building an AESSIV object costs ~5 us, more than one seal or open of a request;
        every cookie from one key exchange carries the same keys, so a client that polls
        again reuses them. The cache is this keyset's (emptied when it rotates, so keys
        from cookies of retired keys do not linger) and bounded (least recently used
        goes first), so many clients cannot grow it.
        """
        aead = self._sessions.get(key)
        if aead is not None:
            self._sessions.move_to_end(key)
            return aead
        aead = AesSivCmac256(key)
        self._sessions[key] = aead
        if len(self._sessions) > SESSION_CACHE_SIZE:
            self._sessions.popitem(last=False)
        return aead

    def rotate_if_due(self, now_ns: int, random: Callable[[int], bytes]) -> bool:
        """Make a new primary key if the interval has passed; True if it did.

        A clock that went backwards restarts the interval rather than rotating
        (or never rotating again)."""
        if now_ns < self.rotated_at_ns:
            self.rotated_at_ns = now_ns
            return False
        if now_ns - self.rotated_at_ns < self.rotation_interval_ns:
            return False
        key = CookieKey((self.primary.key_id + 1) & 0xFFFFFFFF, random(AES_SIV_KEY_BYTES))
        self._keys.append(key)
        self._by_id[key.key_id] = AesSivCmac256(key.key)
        while len(self._keys) > self.stale_key_count + 1:
            old = self._keys.pop(0)
            del self._by_id[old.key_id]
        self._sessions.clear()
        self.rotated_at_ns = now_ns
        return True

    def make_cookie(self, keys: NtsKeys, nonce: bytes) -> bytes:
        """A cookie for ``keys`` under the primary key (``nonce``: 16 random bytes)."""
        if len(nonce) != COOKIE_NONCE_BYTES:
            raise ValueError(f"a cookie nonce is {COOKIE_NONCE_BYTES} bytes")
        key_id = _KEY_ID.pack(self.primary.key_id)
        sealed = self._by_id[self.primary.key_id].seal(
            nonce, keys.c2s + keys.s2c, key_id + struct.pack(">H", keys.aead))
        return key_id + nonce + sealed

    def open_cookie(self, cookie: bytes, aead: int = AEAD_AES_SIV_CMAC_256) -> NtsKeys | None:
        """The keys inside a cookie, or None (unknown or stale key, forged, malformed)."""
        head = _KEY_ID.size + COOKIE_NONCE_BYTES
        if len(cookie) < head + 16:
            return None
        key_id = cookie[: _KEY_ID.size]
        siv = self._by_id.get(_KEY_ID.unpack(key_id)[0])
        if siv is None:
            return None
        try:
            plain = siv.open(cookie[_KEY_ID.size : head], cookie[head:],
                             key_id + struct.pack(">H", aead))
        except NtsError:
            return None
        if len(plain) != 2 * AES_SIV_KEY_BYTES:
            return None
        return NtsKeys(plain[:AES_SIV_KEY_BYTES], plain[AES_SIV_KEY_BYTES:], aead)

    def to_bytes(self) -> bytes:
        """The ``key-storage-path`` contents."""
        document = {
            "format": _FORMAT,
            "version": 1,
            "rotated_at_ns": self.rotated_at_ns,
            "keys": [{"id": k.key_id, "key": k.key.hex()} for k in self._keys],
        }
        return json.dumps(document, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, rotation_interval_s: float = 86400.0,
                   stale_key_count: int = 7) -> ServerKeySet:
        """Load a stored keyset (the interval and count come from the configuration);
        raise :class:`KeysetError` if it is not one."""
        try:
            document = json.loads(data)
            if not isinstance(document, dict) or document.get("format") != _FORMAT:
                raise KeysetError("not an ntpd-py NTS keyset")
            if document.get("version") != 1:
                raise KeysetError(f"keyset version {document.get('version')!r} is unknown")
            rotated = document["rotated_at_ns"]
            entries = document["keys"]
            if type(rotated) is not int or not isinstance(entries, list):
                raise KeysetError("malformed keyset")
            if not 0 < len(entries) <= MAX_STALE_KEYS:
                raise KeysetError(f"{len(entries)} keys in the keyset")
            keys = []
            for entry in entries:
                key_id, key_hex = entry["id"], entry["key"]
                if type(key_id) is not int or not 0 <= key_id <= 0xFFFFFFFF:
                    raise KeysetError("malformed key id")
                key = bytes.fromhex(key_hex)
                if len(key) != AES_SIV_KEY_BYTES:
                    raise KeysetError("key of the wrong length")
                keys.append(CookieKey(key_id, key))
            if len({k.key_id for k in keys}) != len(keys):
                raise KeysetError("duplicate key ids")
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, KeysetError):
                raise
            raise KeysetError(f"malformed keyset: {exc}") from None
        keyset = cls(keys[-(stale_key_count + 1):], rotated, rotation_interval_s, stale_key_count)
        return keyset
