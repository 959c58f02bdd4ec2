"""The NTS-KE worker: one unprivileged process per `[[nts-ke-server]]`.

A thin loop around :class:`~ntpd_py.workers.nts_ke_server.KeServer`. The supervisor
bound the TCP listener and read the certificate chain and private key (files this
process's uid cannot read); all three, and the cookie keyset, come at fork
(plumbing/nts_handover.py); rotated keys come over the link (`NtsKeyset`). Each
wake-up does a bounded amount of TLS work (the server accepts at most 64 clients and
advances only the ready connections); a client that is slow, silent or half-open
loses its slot at `key-exchange-timeout-ms`, and clients beyond
`concurrent-connections` are closed at accept. The counters go to clock-control as a
server's do (`ntpctl status`, metrics), under the label ``nts-ke <listen>``.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Sequence
from typing import Any

from ntpd_py.core.config import KeysetConfig, NtsKeServerConfig
from ntpd_py.core.nts_cookies import KeysetError, ServerKeySet
from ntpd_py.ipc.messages import Message, NtsKeyset, ServerStats
from ntpd_py.plumbing.scheduler import Now

from .base import WorkerBase
from .nts_ke_server import KeServer, server_context

__all__ = ["NtsKeTask", "stats_label"]

STATS_INTERVAL_NS = 2_000_000_000


def stats_label(ke: NtsKeServerConfig) -> str:
    return f"nts-ke {ke.listen}"


class NtsKeTask(WorkerBase):
    def __init__(
        self,
        *,
        ke: NtsKeServerConfig,
        keys: KeysetConfig,
        worker_id: str,
        bus: Any,
        link: Any,
        log: logging.Logger,
        listener: socket.socket,
        chain_pem: bytes,
        key_pem: bytes,
        keyset: ServerKeySet,
    ) -> None:
        super().__init__(worker_id, bus, link, log)
        self.ke = ke
        self.keys = keys
        self.keyset = keyset
        self.server = KeServer(
            None, server_context(chain_pem, key_pem), lambda: self.keyset, listener=listener,
            max_connections=ke.concurrent_connections,
            timeout_s=ke.key_exchange_timeout_ms / 1000, ntp_server=ke.ntp_server,
            ntp_port=ke.ntp_port)
        self.label = stats_label(ke)
        self._next_stats = 0
        self._sent: dict[str, int] = {}
        log.info("serving NTS-KE on %s (at most %d at once, %d ms each)", ke.listen,
                 ke.concurrent_connections, ke.key_exchange_timeout_ms)

    def close(self) -> None:
        self.server.close()

    def pollables(self) -> Sequence[Any]:
        return [*self.base_pollables(), self.server.fileno()]

    def next_deadline_ns(self) -> int | None:
        base = self.base_deadline()
        nearest = self.server.next_deadline_s()
        if nearest is not None:
            base = min(base, int(nearest * 1e9) + 1)
        return min(base, self._next_stats) if self._next_stats else base

    def step(self, now: Now) -> None:
        self.drain_link(lambda message, fds: self._on_link(message, fds, now))
        self.drain_bus(set(), lambda message: None, now)
        self.server.step(0.0)
        self.housekeeping(now, lambda: None)
        if now.mono_ns >= self._next_stats:
            counters = {k: int(v) for k, v in dataclasses.asdict(self.server.stats).items()}
            counters["open_connections"] = self.server.open_connections
            if counters != self._sent:
                self.send(ServerStats(listen=self.label, counters=counters))
                self._sent = counters
            self._next_stats = now.mono_ns + STATS_INTERVAL_NS

    def _on_link(self, message: Message, fds: list[int], now: Now) -> None:
        self.close_fds(fds)
        if not isinstance(message, NtsKeyset):
            return
        try:
            self.keyset = ServerKeySet.from_bytes(
                message.keyset, float(self.keys.key_rotation_interval), self.keys.stale_key_count)
        except KeysetError as exc:
            self.limited.log(logging.ERROR, "keyset", now.mono_ns,
                             "refused NTS keys from the supervisor: %s", exc)
            return
        self.log.info("NTS cookie keys updated (key id %d)", self.keyset.primary.key_id)
