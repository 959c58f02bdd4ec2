"""Who the NTP server answers, and how often: access lists and the rate-limit table.

:class:`AccessPolicy` implements ``[[server]]`` ``denylist``/``allowlist``
(ntpd-rs order: a denylist match first, then "not in the allowlist"); the
decision per client address is cached in a bounded dict (cleared when full),
so a packet costs one lookup. IPv4-mapped IPv6 addresses (IPv4 clients of a
dual-stack socket) are matched as IPv4.

:class:`RateLimiter` is ntpd-rs's table: ``rate-limiting-cache-size`` slots
indexed by the hash of the client address, each slot holding one address and
the time of its last request; a request sooner than
``rate-limiting-cutoff-ms`` after the previous one from the same address is
limited. A collision overwrites the slot, so it can only miss a limit, never
invent one. Bounded memory and O(1) per packet. The first limited request of
an episode gets a kiss, later ones in the same episode are dropped (see
:mod:`ntpd_py.core.ntp_server`).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from .config import FilterList

__all__ = [
    "ACCESS_CACHE_MAX",
    "ALLOW",
    "DENY",
    "IGNORE",
    "LIMIT_DROP",
    "LIMIT_KISS",
    "LIMIT_OK",
    "AccessPolicy",
    "RateLimiter",
]

ALLOW, DENY, IGNORE = 0, 1, 2
LIMIT_OK, LIMIT_KISS, LIMIT_DROP = 0, 1, 2
ACCESS_CACHE_MAX = 65536
_V4_MAPPED = bytes(10) + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class _Net:
    width: int  # 4 or 16 bytes
    network: int
    mask: int


def _compile(filters: FilterList | None) -> tuple[_Net, ...]:
    if filters is None:
        return ()
    return tuple(
        _Net(net.max_prefixlen // 8, int(net.network_address), int(net.netmask))
        for net in (ipaddress.ip_network(item, strict=False) for item in filters.filter)
    )


def _action(filters: FilterList | None) -> int:
    return DENY if filters is not None and filters.action == "deny" else IGNORE


def _matches(nets: tuple[_Net, ...], client: bytes) -> bool:
    value = int.from_bytes(client, "big")
    return any(n.width == len(client) and value & n.mask == n.network for n in nets)


class AccessPolicy:
    """``denylist``/``allowlist``: ALLOW, DENY (send a DENY kiss) or IGNORE (drop)."""

    def __init__(self, allowlist: FilterList | None, denylist: FilterList | None) -> None:
        self._deny = _compile(denylist)
        self._allow = _compile(allowlist)
        self._has_allowlist = allowlist is not None
        self._deny_action = _action(denylist)
        self._allow_action = _action(allowlist)
        self.active = bool(self._deny) or self._has_allowlist
        self._cache: dict[bytes, int] = {}

    def decide(self, client: bytes) -> int:
        """``client``: the packed source address (4 or 16 bytes)."""
        decision = self._cache.get(client)
        if decision is None:
            addr = client[12:] if len(client) == 16 and client[:12] == _V4_MAPPED else client
            if self._deny and _matches(self._deny, addr):
                decision = self._deny_action
            elif self._has_allowlist and not _matches(self._allow, addr):
                decision = self._allow_action
            else:
                decision = ALLOW
            if len(self._cache) >= ACCESS_CACHE_MAX:
                self._cache.clear()
            self._cache[client] = decision
        return decision


class RateLimiter:
    """The per-address request spacing check (off when size or cutoff is 0)."""

    def __init__(self, cache_size: int, cutoff_ms: int) -> None:
        size = cache_size if cutoff_ms > 0 else 0
        self.size = size
        self.active = size > 0
        self._cutoff_ns = cutoff_ms * 1_000_000
        self._keys: list[bytes | None] = [None] * size
        self._times: list[int] = [0] * size
        self._kissed = bytearray(size)
        # The poll (log2 s) a RATE kiss asks for: the cutoff, rounded up, at least 1 s.
        self.kiss_poll = max(0, min(17, math.ceil(math.log2(cutoff_ms / 1000)))) if size else 0

    def check(self, client: bytes, now_ns: int) -> int:
        """LIMIT_OK, LIMIT_KISS (limited: answer with a kiss) or LIMIT_DROP (kissed already)."""
        # bytes hashes are salted per process (PYTHONHASHSEED), so a client cannot
        # aim collisions at another client's slot.
        index = hash(client) % self.size
        keys = self._keys
        limited = keys[index] == client and now_ns - self._times[index] < self._cutoff_ns
        keys[index] = client
        self._times[index] = now_ns
        if not limited:
            self._kissed[index] = 0
            return LIMIT_OK
        if self._kissed[index]:
            return LIMIT_DROP
        self._kissed[index] = 1
        return LIMIT_KISS
