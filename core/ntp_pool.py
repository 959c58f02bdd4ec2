"""Sans-IO manager of a `mode = "pool"` source: which resolved addresses to use.

The worker resolves the pool name (getaddrinfo is I/O) when the manager
returns :class:`Resolve` and hands the result to
:meth:`PoolManager.handle_resolved`. The manager keeps up to ``count`` peers,
skips the ``ignore`` list and addresses already in use, and replaces a peer
reported through :meth:`PoolManager.peer_failed`:

* ``UNREACHABLE`` (the client's :class:`~ntpd_py.core.ntp_client.ReportUnreachable`)
  and ``FALSETICKER`` (the algorithm's verdict): the address is avoided for
  ``retry_after_ns`` (default one hour), then may be used again;
* ``DENIED`` (a DENY or RSTR kiss): the address is never used again by this
  manager.

A replacement comes from the addresses of the last resolution that were not
used yet; when there are none the manager asks for a new resolution, with an
exponential back-off (``resolve_backoff_*``) while the pool stays short.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .units import NS_PER_S

__all__ = [
    "PeerFailure",
    "PoolAction",
    "PoolManager",
    "PoolTimer",
    "Resolve",
    "StartPeer",
    "StopPeer",
]


Address = tuple[str, int]


class PeerFailure(enum.StrEnum):
    UNREACHABLE = "unreachable"
    FALSETICKER = "falseticker"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class StartPeer:
    address: Address


@dataclass(frozen=True, slots=True)
class StopPeer:
    address: Address
    reason: PeerFailure


@dataclass(frozen=True, slots=True)
class Resolve:
    """Resolve the pool name now and call :meth:`PoolManager.handle_resolved`."""


@dataclass(frozen=True, slots=True)
class PoolTimer:
    """Call :meth:`PoolManager.handle_timer` at this CLOCK_MONOTONIC instant."""

    deadline_mono_ns: int


PoolAction = StartPeer | StopPeer | Resolve | PoolTimer


def _canonical(address: Address) -> Address:
    host, port = address
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return host, port


class PoolManager:
    """Keeps ``count`` usable peers out of what a pool name resolves to."""

    def __init__(
        self,
        count: int,
        ignore: Iterable[str] = (),
        retry_after_ns: int = 3600 * NS_PER_S,
        resolve_backoff_min_ns: int = 60 * NS_PER_S,
        resolve_backoff_max_ns: int = 3600 * NS_PER_S,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self._ignore = {str(ipaddress.ip_address(item)) for item in ignore}
        self._retry_after_ns = retry_after_ns
        self._backoff_min_ns = resolve_backoff_min_ns
        self._backoff_max_ns = resolve_backoff_max_ns
        self._backoff_ns = resolve_backoff_min_ns
        self._active: list[Address] = []
        self._spare: list[Address] = []
        self._avoid_until: dict[Address, int] = {}
        self._denied: set[Address] = set()
        self._next_resolve_ns: int | None = None

    @property
    def active(self) -> tuple[Address, ...]:
        return tuple(self._active)

    @property
    def next_deadline_ns(self) -> int | None:
        return self._next_resolve_ns

    def start(self, now_mono_ns: int) -> list[PoolAction]:
        self._next_resolve_ns = None
        return [Resolve()]

    def _usable(self, address: Address, now_mono_ns: int) -> bool:
        if address[0] in self._ignore or address in self._denied or address in self._active:
            return False
        until = self._avoid_until.get(address)
        if until is not None and now_mono_ns < until:
            return False
        self._avoid_until.pop(address, None)
        return True

    def _fill(self, now_mono_ns: int) -> list[PoolAction]:
        actions: list[PoolAction] = []
        while len(self._active) < self.count and self._spare:
            address = self._spare.pop(0)
            if self._usable(address, now_mono_ns):
                self._active.append(address)
                actions.append(StartPeer(address))
        if len(self._active) < self.count:
            deadline = now_mono_ns + self._backoff_ns
            self._backoff_ns = min(2 * self._backoff_ns, self._backoff_max_ns)
            self._next_resolve_ns = deadline
            actions.append(PoolTimer(deadline))
        else:
            self._backoff_ns = self._backoff_min_ns
            self._next_resolve_ns = None
        return actions

    def handle_resolved(self, addresses: Sequence[Address], now_mono_ns: int) -> list[PoolAction]:
        """The pool name resolved to ``addresses`` (in the resolver's order)."""
        seen: set[Address] = set()
        self._spare = []
        for address in map(_canonical, addresses):
            if address not in seen:
                seen.add(address)
                self._spare.append(address)
        return self._fill(now_mono_ns)

    def handle_resolve_failed(self, now_mono_ns: int) -> list[PoolAction]:
        self._spare = []
        return self._fill(now_mono_ns)

    def peer_failed(
        self, address: Address, reason: PeerFailure, now_mono_ns: int
    ) -> list[PoolAction]:
        """Stop a peer and replace it; unknown addresses are ignored."""
        address = _canonical(address)
        if address not in self._active:
            return []
        self._active.remove(address)
        if reason is PeerFailure.DENIED:
            self._denied.add(address)
        else:
            self._avoid_until[address] = now_mono_ns + self._retry_after_ns
        actions: list[PoolAction] = [StopPeer(address, reason)]
        if not any(self._usable(a, now_mono_ns) for a in self._spare):
            self._next_resolve_ns = None
            return [*actions, Resolve()]
        return actions + self._fill(now_mono_ns)

    def handle_timer(self, now_mono_ns: int) -> list[PoolAction]:
        due = self._next_resolve_ns
        if due is None:
            return []
        if now_mono_ns < due:
            return [PoolTimer(due)]
        self._next_resolve_ns = None
        return [Resolve()]
