"""The NTP server worker: answers clients from the clock state clock-control publishes.

The supervisor binds the sockets (port 123 needs privilege) and passes them
in; this process runs unprivileged. Each socket is served by batched
recvmmsg/sendmmsg (:mod:`._mmsg`) around a :class:`Responder`; the clock
state arrives from clock-control over this worker's own bus slot. Until the first state arrives, and
whenever clock-control says so, replies say "unsynchronized" (leap 3,
`local-stratum`). Counters go to clock-control every two seconds.

NTS (RFC 8915 §5): with a keyset (handed over by the supervisor at fork, replaced
by each `NtsKeyset` on the link when the keys rotate) requests longer than 48
bytes go to core/nts_server.NtsResponder: authenticated replies with fresh
cookies, NTS NAKs, drops; its counters join the server's (`nts_*`).

The replies carry this machine's CLOCK_REALTIME: with `clock = "observe"` or
`"simulated"` that is the real, unsteered clock.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

from ntpd_py.core.config import Config, KeysetConfig, ServerConfig
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.nts_cookies import KeysetError, ServerKeySet
from ntpd_py.core.nts_server import NtsResponder
from ntpd_py.core.timestamps import unix_ns_to_ntp64
from ntpd_py.ipc.channels import Channel
from ntpd_py.ipc.link import Link
from ntpd_py.ipc.messages import ClockStateMsg, Message, MsgType, NtsKeyset, ServerStats
from ntpd_py.plumbing.scheduler import Now

from ._mmsg import ServerBatchIO
from .base import WorkerBase
from .random_pool import RandomPool
from .status_view import PRECISION_LOG2

__all__ = ["ServerTask", "server_state_from"]

STATS_INTERVAL_NS = 2_000_000_000
STATS_REFRESH_NS = 60_000_000_000


def server_state_from(message: ClockStateMsg) -> ServerClockState:
    system = message.system
    if not system.synchronized:
        return ServerClockState.unsynchronized(PRECISION_LOG2, system.reference_id)
    reference_ns = message.realtime_ns
    if system.last_update_age_s is not None:
        reference_ns -= round(system.last_update_age_s * 1e9)
    return ServerClockState(
        synchronized=True,
        leap=LeapIndicator(system.leap),
        stratum=max(1, min(16, system.stratum)),
        precision_log2=system.precision_log2,
        root_delay_s=max(0.0, system.root_delay_s),
        root_dispersion_s=max(0.0, system.root_dispersion_s),
        reference_id=system.reference_id,
        reference_time_ntp=unix_ns_to_ntp64(reference_ns),
    )


class ServerTask(WorkerBase):
    def __init__(
        self,
        *,
        config: Config,
        sockets: list[tuple[ServerConfig, socket.socket]],
        worker_id: str,
        bus: Channel,
        state_feed: Channel,
        link: Link | None,
        log: logging.Logger,
        keyset: ServerKeySet | None = None,
    ) -> None:
        super().__init__(worker_id, bus, link, log)
        self.config = config
        self.state_feed = state_feed
        self._next_status_stats = 0
        self._next_stats_refresh = 0
        self._sent_stats: dict[str, dict[str, int]] = {}
        local_stratum = config.synchronization.local_stratum
        self.serving: list[tuple[ServerConfig, Responder, ServerBatchIO]] = []
        for server, sock in sockets:
            responder = Responder(
                server, local_stratum, ServerClockState.unsynchronized(PRECISION_LOG2)
            )
            io = ServerBatchIO(sock, responder)
            if keyset is not None:
                io.nts = NtsResponder(responder, keyset, RandomPool())
            self.serving.append((server, responder, io))
            log.info("serving NTP%s on %s", " and NTS" if keyset is not None else "",
                     server.listen)
            if keyset is not None and (why := io.nts_fast_path()) is not None:
                log.warning("NTS on %s takes the Python path (about 20,000 replies/s instead "
                            "of the C engine's 150,000+): %s", server.listen, why)

    def pollables(self) -> Sequence[Any]:
        return [*self.base_pollables(), self.state_feed, *(io.fd for _, _, io in self.serving)]

    def next_deadline_ns(self) -> int | None:
        return self.base_deadline()

    def step(self, now: Now) -> None:
        self.drain_link(lambda message, fds: self._on_link(message, fds, now))
        self._drain_state(now)
        for _, _, io in self.serving:
            io.handle_ready()
        self.housekeeping(now, lambda: None)
        if now.mono_ns >= self._next_status_stats:
            # Counters go to clock-control at most every 2 s while they change; an idle
            # server only refreshes them once a minute (a restarted clock-control forgot).
            refresh = now.mono_ns >= self._next_stats_refresh
            for server, responder, io in self.serving:
                counters = responder.counters()
                counters["receive_errors"] = io.receive_errors
                if io.nts is not None:
                    counters.update(io.nts.counters())
                if refresh or counters != self._sent_stats.get(server.listen):
                    self.send(ServerStats(listen=server.listen, counters=counters))
                    self._sent_stats[server.listen] = counters
            self._next_status_stats = now.mono_ns + STATS_INTERVAL_NS
            if refresh:
                self._next_stats_refresh = now.mono_ns + STATS_REFRESH_NS

    def _on_link(self, message: Message, fds: list[int], now: Now) -> None:
        self.close_fds(fds)  # nothing here travels with an fd
        if not isinstance(message, NtsKeyset):
            return
        keys = self.config.keyset or KeysetConfig()
        try:
            keyset = ServerKeySet.from_bytes(message.keyset, float(keys.key_rotation_interval),
                                             keys.stale_key_count)
        except KeysetError as exc:
            self.limited.log(logging.ERROR, "keyset", now.mono_ns,
                             "refused NTS keys from the supervisor: %s", exc)
            return
        self.install_keyset(keyset)

    def install_keyset(self, keyset: ServerKeySet) -> None:
        """New cookie keys (a rotation): cookies of the retired ones get an NTS NAK."""
        for _, _, io in self.serving:
            if io.nts is not None:
                io.nts.keyset = keyset
        self.log.info("NTS cookie keys updated (key id %d)", keyset.primary.key_id)

    def _drain_state(self, now: Now) -> None:
        latest: bytes | None = None
        while (item := self.state_feed.recv()) is not None:
            latest = item[1]
        if latest is None:
            return
        from ntpd_py.ipc.framing import MalformedMessage, decode

        try:
            message = decode(latest, {MsgType.CLOCK_STATE}, max_size=1 << 20)
        except MalformedMessage as exc:
            self.limited.log(
                logging.WARNING, "state", now.mono_ns, "dropped a malformed state: %s", exc
            )
            return
        assert isinstance(message, ClockStateMsg)
        state = server_state_from(message)
        for _, responder, _ in self.serving:
            responder.set_clock_state(state)
