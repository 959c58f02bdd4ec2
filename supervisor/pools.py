"""Pool sources: resolve names without privilege and keep `count` healthy peers.

For each `mode = "pool"` source the supervisor keeps a
:class:`ntpd_py.core.ntp_pool.PoolManager`. Names are resolved by a
short-lived child that drops privileges before calling getaddrinfo (DNS
answers are network input: root never parses them) and writes the addresses
to a pipe. A peer that its worker reports unreachable or refused (DENY/RSTR),
or that clock-control reports as a persistent falseticker, is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from ntpd_py.core.config import NTP_PORT, Config, PoolSourceConfig
from ntpd_py.core.ntp_pool import (
    PeerFailure,
    PoolAction,
    PoolManager,
    PoolTimer,
    Resolve,
    StartPeer,
    StopPeer,
)
from ntpd_py.plumbing.logutil import RateLimitedLog

__all__ = ["Pools"]

RESOLVE_TIMEOUT_NS = 15_000_000_000


@dataclass
class _Resolver:
    pid: int
    fd: int
    deadline_ns: int
    data: bytes = b""


@dataclass
class _Pool:
    index: int
    source: PoolSourceConfig
    manager: PoolManager
    resolver: _Resolver | None = None
    members: list[str] = field(default_factory=list)


def _resolve_in_child(host: str, port: int, write_fd: int, drop: Callable[[], None]) -> None:
    code = 1
    try:
        # Keep nothing of the supervisor's (bus endpoints, server sockets, links): this
        # process parses DNS answers.
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, 65536)
        drop()
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        addresses = [[str(info[4][0]), int(info[4][1])] for info in infos]
        os.write(write_fd, json.dumps(addresses).encode()[:60000])
        code = 0
    except BaseException:
        code = 1
    finally:
        os._exit(code)


class Pools:
    def __init__(self, config: Config, drop: Callable[[], None], log: logging.Logger) -> None:
        self.log = log
        # per pool: a pool whose peers keep failing, or a name that keeps not resolving,
        # is logged once, then at most once a minute with the count (supervisor loop)
        self.limited = RateLimitedLog(log)
        self._drop = drop
        self.pools: dict[int, _Pool] = {}
        for index, source in enumerate(config.source):
            if isinstance(source, PoolSourceConfig):
                manager = PoolManager(source.count, source.ignore)
                self.pools[index] = _Pool(index, source, manager)

    def members(self) -> dict[int, list[str]]:
        return {index: list(pool.members) for index, pool in self.pools.items()}

    def start(self, now_ns: int) -> None:
        for pool in self.pools.values():
            self._act(pool, pool.manager.start(now_ns), now_ns)

    def start_one(self, index: int, now_ns: int) -> None:
        pool = self.pools[index]
        self._act(pool, pool.manager.start(now_ns), now_ns)

    def fds(self) -> list[int]:
        return [p.resolver.fd for p in self.pools.values() if p.resolver is not None]

    def next_deadline_ns(self) -> int | None:
        deadlines = [p.manager.next_deadline_ns for p in self.pools.values()]
        deadlines += [p.resolver.deadline_ns for p in self.pools.values() if p.resolver]
        found = [d for d in deadlines if d is not None]
        return min(found) if found else None

    def step(self, ready: set[int], now_ns: int) -> bool:
        """Read resolvers, run timers; True when the member set changed."""
        before = self.members()
        for pool in self.pools.values():
            resolver = pool.resolver
            if resolver is not None and (resolver.fd in ready or now_ns >= resolver.deadline_ns):
                self._read(pool, resolver, now_ns)
            due = pool.manager.next_deadline_ns
            if due is not None and now_ns >= due:
                self._act(pool, pool.manager.handle_timer(now_ns), now_ns)
        self.limited.flush(now_ns)
        return self.members() != before

    def peer_failed(self, worker_id: str, reason: str, now_ns: int) -> bool:
        for pool in self.pools.values():
            for ip in pool.members:
                if worker_id == f"pool:{pool.source.address}/{ip}":
                    failure = {"unreachable": PeerFailure.UNREACHABLE,
                               "falseticker": PeerFailure.FALSETICKER}.get(reason,
                                                                          PeerFailure.DENIED)
                    port = pool.source.host_port()[1]
                    self.limited.log(logging.WARNING, f"replace:{pool.index}", now_ns,
                                     "pool %s: replacing %s (%s)", pool.source.address, ip,
                                     reason)
                    self._act(pool, pool.manager.peer_failed((ip, port), failure, now_ns),
                              now_ns)
                    return True
        return False

    def _read(self, pool: _Pool, resolver: _Resolver, now_ns: int) -> None:
        try:
            while chunk := os.read(resolver.fd, 65536):
                resolver.data += chunk
        except BlockingIOError:
            if now_ns < resolver.deadline_ns:
                return
        done = now_ns >= resolver.deadline_ns
        os.close(resolver.fd)
        if done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(resolver.pid, signal.SIGKILL)
        pool.resolver = None
        try:
            addresses = [(str(a), int(p)) for a, p in json.loads(resolver.data or b"[]")]
        except (ValueError, TypeError):
            addresses = []
        if not addresses:
            self.limited.log(logging.WARNING, f"resolve:{pool.index}", now_ns,
                             "pool %s: could not resolve%s; retrying later",
                             pool.source.address, " (timed out)" if done else "")
            self._act(pool, pool.manager.handle_resolve_failed(now_ns), now_ns)
        else:
            self.log.info("pool %s resolved to %d address(es)", pool.source.address,
                          len(addresses))
            self._act(pool, pool.manager.handle_resolved(addresses, now_ns), now_ns)

    def _act(self, pool: _Pool, actions: list[PoolAction], now_ns: int) -> None:
        for action in actions:
            if isinstance(action, Resolve) and pool.resolver is None:
                host, port = pool.source.host_port()
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                pid = os.fork()
                if pid == 0:
                    os.close(read_fd)
                    signal.set_wakeup_fd(-1)
                    _resolve_in_child(host, port or NTP_PORT, write_fd, self._drop)
                os.close(write_fd)
                os.set_blocking(read_fd, False)
                pool.resolver = _Resolver(pid, read_fd, now_ns + RESOLVE_TIMEOUT_NS)
            elif isinstance(action, StartPeer):
                pool.members.append(action.address[0])
            elif isinstance(action, StopPeer) and action.address[0] in pool.members:
                pool.members.remove(action.address[0])
            elif isinstance(action, PoolTimer):
                pass
