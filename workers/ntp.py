"""The NTP source worker: one process per NTP server (or pool member).

A thin loop around :class:`ntpd_py.core.ntp_client.NtpClient`: it resolves the
server's name once (unprivileged), sends each request from a fresh socket
with a random source port, feeds kernel-timestamped replies to the client,
and forwards samples, unreachability and status to clock-control; poll advice
comes back the other way. With the simulated clock, local timestamps are
mapped onto the simulated clock through CLOCK_MONOTONIC.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ntpd_py.core.config import (
    Config,
    NtsPoolSourceConfig,
    NtsSourceConfig,
    PoolSourceConfig,
    ServerSourceConfig,
)
from ntpd_py.core.fsm import IllegalTransition
from ntpd_py.core.ntp_client import (
    ClientSettings,
    Demobilize,
    LocalTime,
    NtpClient,
    Publish,
    ReportUnreachable,
    Send,
    SetTimer,
)
from ntpd_py.core.ntp_source_state import NtpSourceEvent, NtpSourceState, next_state
from ntpd_py.core.nts_session import NtsSession, ReplyKind
from ntpd_py.core.packet import refid_for_address
from ntpd_py.core.worker_spec import nts_pool_member
from ntpd_py.ipc.messages import (
    Message,
    MsgType,
    PeerFailed,
    PeerFailReason,
    PollAdvice,
    SampleMsg,
    ServerAdvice,
    SourceStatus,
)
from ntpd_py.ipc.messages import Unreachable as UnreachableMsg
from ntpd_py.plumbing.scheduler import Now

from ._udp import ClientChannel
from .base import WorkerBase

if TYPE_CHECKING:  # pyOpenSSL is loaded by NTS sources only, on their first exchange
    from .nts_ke_client import KeSteps, KeWait

__all__ = ["NtpTask", "client_settings"]

RESOLVE_RETRY_NS = 30_000_000_000
# A key exchange runs inside the worker's loop (a generator resumed when its socket
# is ready; no thread), so the worker keeps answering its link and bus; it gives up
# after this long.
KE_TIMEOUT_S = 5.0
# While a key exchange waits to write (a TCP connect in progress), the loop looks
# again this often: its waits are on readable sockets only.
KE_WRITE_RECHECK_NS = 5_000_000
# Every source an NTP worker runs: plain, pool member, NTS, nts-pool member.
NtpSourceConfig = ServerSourceConfig | PoolSourceConfig | NtsSourceConfig | NtsPoolSourceConfig
KE_RETRY_MIN_NS = 10_000_000_000
KE_RETRY_MAX_NS = 3_600_000_000_000


def client_settings(
    config: Config,
    source: NtpSourceConfig,
    source_id: str,
) -> ClientSettings:
    defaults = config.source_defaults
    limits = source.poll_limits(defaults)
    local = frozenset(refid_for_address(s.socket_addr()[0]) for s in config.server)
    return ClientSettings(
        source_id=source_id,
        poll_min=limits.min,
        poll_max=limits.max,
        initial_poll=source.initial_poll(defaults),
        max_stratum=max(1, config.synchronization.local_stratum - 1),
        local_refids=local,
    )


class NtpTask(WorkerBase):
    def __init__(
        self,
        *,
        config: Config,
        source: NtpSourceConfig,
        worker_id: str,
        peer: str,
        bus: Any,
        link: Any,
        log: Any,
        sim: Any = None,
    ) -> None:
        super().__init__(worker_id, bus, link, log)
        self.client = NtpClient(client_settings(config, source, worker_id))
        self.host, self.port = self._split(source, peer)
        self.channel: ClientChannel | None = None
        self.sim = sim
        self.state = NtpSourceState.STARTING
        self.detail = ""
        self.resolved: str | None = None
        self._resolve_at = 0
        self._deadline: int | None = None
        # NTS: the NTP host/port come from the key exchange, which runs before resolving.
        self.nts: NtsSession | None = None
        self.ke_ca: str | None = None
        self._ke_backoff_ns = KE_RETRY_MIN_NS
        self._ke: KeSteps | None = None  # a key exchange in progress
        self._ke_wait: KeWait | None = None
        self._ke_recheck_ns = 0  # when a write wait is looked at again
        if isinstance(source, NtsSourceConfig | NtsPoolSourceConfig):
            self.nts = NtsSession(os.urandom)
            self.ke_ca = source.certificate_authority
            self.ke_host, self.ke_port = self.host, self.port

    @staticmethod
    def _split(
        source: NtpSourceConfig, peer: str
    ) -> tuple[str, int]:
        if isinstance(source, PoolSourceConfig):
            return peer, source.host_port()[1]
        return source.host_port()

    # -- Task ----------------------------------------------------------------------------

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self._abandon_key_exchange()

    def pollables(self) -> Sequence[Any]:
        items = self.base_pollables()
        if self.channel is not None and self.channel.fileno() >= 0:
            items.append(self.channel.fileno())
        wait = self._ke_wait
        if wait is not None and not wait.writable and wait.sock.fileno() >= 0:
            items.append(wait.sock.fileno())
        return items

    def next_deadline_ns(self) -> int | None:
        candidates = [self.base_deadline(), self._deadline]
        wait = self._ke_wait
        if wait is not None:
            candidates.append(self._ke_recheck_ns if wait.writable
                              else int(wait.deadline * 1e9) + 1)
        elif self.channel is None and self.state is not NtpSourceState.FAILED:
            candidates.append(self._resolve_at)
        return min(c for c in candidates if c is not None)

    def step(self, now: Now) -> None:
        self.drain_link(lambda message, fds: self.close_fds(fds))
        self.drain_bus({MsgType.POLL_ADVICE, MsgType.SERVER_ADVICE},
                       lambda m: self._advice(m, now), now)
        if (self.channel is None and self.state is not NtpSourceState.FAILED
                and now.mono_ns >= self._resolve_at):
            self._resolve(now)
        if self.channel is not None:
            actions: list[Any] = []
            sent = self.channel.sent
            for data, received in self.channel.receive():
                if sent is None:
                    continue
                if self.nts is not None:
                    verdict = self.nts.reply(data)
                    if verdict.kind is ReplyKind.NAK:
                        self._restart_key_exchange(now, "NTS NAK from the server")
                        break
                    if verdict.kind is not ReplyKind.AUTHENTICATED:
                        continue
                    data = data[:48]  # the authenticated header; extensions were checked
                actions += self.client.handle_reply(
                    data, self._local(sent), self._local(received)
                )
            if self.channel is None:  # NAK: a new key exchange comes first
                self.housekeeping(now, self._status)
                return
            if self._deadline is not None and now.mono_ns >= self._deadline:
                self._deadline = None
                actions += self.client.handle_timer(now.mono_ns)
            self._execute(actions, now)
        self.housekeeping(now, self._status)

    # -- internals ------------------------------------------------------------------------

    def _local(self, stamp: LocalTime) -> LocalTime:
        if self.sim is None:
            return stamp
        return LocalTime(realtime_ns=self.sim.local_ns(stamp.mono_ns), mono_ns=stamp.mono_ns)

    def _restart_key_exchange(self, now: Now, why: str) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = None
        self._deadline = None
        self._abandon_key_exchange()
        self._resolve_at = now.mono_ns
        self.detail = why
        self.limited.log(logging.INFO, "nts-rekey", now.mono_ns, "%s: %s", self.ke_host, why)

    def _abandon_key_exchange(self) -> None:
        if self._ke is not None:
            self._ke.close()  # its socket closes with it
        self._ke, self._ke_wait = None, None

    def _key_exchange(self, now: Now) -> bool:
        """Start or go on with the NTS-KE; True once it succeeded, False while it runs or
        after a failure (a retry scheduled with backoff)."""
        from .nts_ke_client import KeOutcome, key_exchange_steps

        assert self.nts is not None
        if self._ke is None:
            self._ke = key_exchange_steps(self.ke_host, self.ke_port, ca_file=self.ke_ca,
                                          timeout=KE_TIMEOUT_S)
            if self.state is NtpSourceState.STARTING:  # `ntpctl status` says what it waits for
                self.detail = f"NTS-KE with {self.ke_host}:{self.ke_port} in progress"
        try:
            self._ke_wait = self._ke.send(None)
            self._ke_recheck_ns = time.monotonic_ns() + KE_WRITE_RECHECK_NS
            return False  # waits for its socket
        except StopIteration as done:
            outcome = done.value
        self._ke, self._ke_wait = None, None
        if not isinstance(outcome, KeOutcome):
            detail = f"NTS-KE with {self.ke_host}:{self.ke_port} failed: {outcome.detail}"
            if self.state in (NtpSourceState.STARTING, NtpSourceState.WAITING):
                self._fire(NtpSourceEvent.RESOLVE_FAILED, now, detail)
            else:
                self.detail = detail
            self._resolve_at = now.mono_ns + self._ke_backoff_ns
            self._ke_backoff_ns = min(2 * self._ke_backoff_ns, KE_RETRY_MAX_NS)
            self.limited.log(logging.WARNING, "nts-ke", now.mono_ns, "%s", detail)
            self.status_now()
            return False
        self._ke_backoff_ns = KE_RETRY_MIN_NS
        self.nts.install(outcome.keys, tuple(outcome.response.cookies))
        self.host, self.port = outcome.ntp_host, outcome.ntp_port
        return True

    def _resolve(self, now: Now) -> None:
        if self.nts is not None and not self._key_exchange(now):
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            self._fire(NtpSourceEvent.RESOLVE_FAILED, now,
                       f"cannot resolve {self.host}: {exc.strerror}")
            self._resolve_at = now.mono_ns + RESOLVE_RETRY_NS
            self.limited.log(logging.WARNING, "resolve", now.mono_ns, "%s", self.detail)
            self.status_now()
            return
        address = str(infos[0][4][0])
        self.resolved = address
        self.channel = ClientChannel(address, self.port)
        if self.state in (NtpSourceState.STARTING, NtpSourceState.WAITING):
            self._fire(NtpSourceEvent.RESOLVED, now, "")
        else:
            self.detail = ""  # a new NTS key exchange while running
        self._deadline = now.mono_ns  # start the burst at once
        self.log.info("polling %s (%s) port %d", self.host, address, self.port)
        self.status_now()

    def _advice(self, message: Message, now: Now) -> None:
        if isinstance(message, PollAdvice) and message.source_id == self.worker_id:
            self._execute(self.client.advise_poll(message.poll_log2, now.mono_ns), now)
            self.status_now()
        elif (isinstance(message, ServerAdvice) and message.source_id == self.worker_id
              and self.nts is not None and nts_pool_member(self.worker_id) is not None):
            # clock-control counts this server already (another member of the pool
            # polls it): a new key exchange may name another one
            self._restart_key_exchange(now, f"a new key exchange for another server: "
                                            f"{message.reason}")
            self.status_now()

    def _execute(self, actions: list[Any], now: Now) -> None:
        assert self.channel is not None
        for action in actions:
            if isinstance(action, Send):
                if self.nts is None:
                    self.channel.send(action.data)
                elif self.nts.needs_key_exchange:
                    self._restart_key_exchange(now, "out of NTS cookies")
                    return
                else:
                    self.channel.send(self.nts.request(action.data))
            elif isinstance(action, SetTimer):
                self._deadline = action.deadline_mono_ns
            elif isinstance(action, Publish):
                self._fire(NtpSourceEvent.SAMPLE, now, "")
                self.send(SampleMsg.from_sample(action.sample))
                self.status_now()  # reach changed; rides with the sample (NTP samples are rare)
            elif isinstance(action, ReportUnreachable):
                self._fire(NtpSourceEvent.UNREACHABLE, now,
                           f"no reply to {action.unanswered_polls} polls")
                self.limited.log(
                    logging.WARNING, "unreachable", now.mono_ns, "%s: %s", self.host, self.detail
                )
                self.send(UnreachableMsg(source_id=self.worker_id, reason=self.detail))
                self._peer_failed("unreachable")
                self.status_now()
            elif isinstance(action, Demobilize):
                self._fire(NtpSourceEvent.DENIED, now,
                           f"server refused us (kiss {action.reason}); not polled again")
                self.log.error("%s: %s", self.host, self.detail)
                self.send(UnreachableMsg(source_id=self.worker_id, reason=self.detail))
                self._deadline = None
                self.channel.close()
                self._peer_failed("denied")
                self.status_now()

    def _fire(self, event: NtpSourceEvent, now: Now, detail: str) -> None:
        try:
            self.state = next_state(self.state, event, self.worker_id)
        except IllegalTransition as exc:
            # a bug, contained: the state and its detail stay as they were
            self.limited.log(logging.ERROR, "illegal-transition", now.mono_ns, "%s", exc)
            return
        self.detail = detail

    def _peer_failed(self, reason: PeerFailReason) -> None:
        # A pool member is replaced by the supervisor; a configured server stays ours.
        if self.worker_id.startswith("pool:") and self.link is not None and not self.link_closed:
            self.link.send(PeerFailed(worker_id=self.worker_id, reason=reason))

    def _status(self) -> SourceStatus:
        status = self.client.status()
        counters = {k: v for k, v in status.counters.items() if v}
        counters["unanswered_polls"] = status.unanswered_polls  # a gauge, for the metrics
        if self.channel is not None and self.channel.send_errors:
            counters["send_errors"] = self.channel.send_errors
        if self.bus_dropped:
            counters["bus_dropped"] = self.bus_dropped
        return SourceStatus(
            source_id=self.worker_id,
            kind="ntp",
            name=f"{self.host}:{self.port}",
            resolved=self.resolved,
            state=self.state.value,
            detail=self.detail,
            poll_log2=status.poll_log2,
            reach=status.reach,
            counters=counters,
            nts=self.nts is not None,
            authenticated=self.nts.authenticated if self.nts is not None else 0,
            cookies=self.nts.cookies if self.nts is not None else None,
        )
