"""The metrics worker: an unprivileged process serving Prometheus/OpenMetrics over HTTP.

Started by the supervisor only when `[observability] metrics-exporter-listen`
is set. Once a second it asks clock-control for the same status `ntpctl
status` shows (a DEALER on the control socket, so it never blocks on it) and
keeps the latest reply; HTTP scrapes, served from a background thread
(:mod:`.metrics_http`), render that reply (:mod:`.metrics_render`). When
clock-control has not answered for `STALE_NS` a scrape gets 503, as
ntpd-rs's exporter answers 500 when the daemon does not.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from ntpd_py.ipc.channels import Channel
from ntpd_py.ipc.link import Link
from ntpd_py.ipc.messages import CtlReply, CtlRequest, Message, MsgType
from ntpd_py.plumbing.scheduler import LocalClock, Now
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from .base import WorkerBase
from .metrics_http import MetricsServer, bind_listener
from .metrics_render import Metric, families

__all__ = ["MetricsTask"]

QUERY_INTERVAL_NS = 1_000_000_000
STALE_NS = 5_000_000_000
BIND_RETRY_NS = 10_000_000_000


def _version() -> str:
    try:
        return importlib.metadata.version("ntpd-py")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()  # read in the supervisor, before any privilege drop


class _Collector(Collector):
    def __init__(self, task: MetricsTask) -> None:
        self._task = task

    def collect(self) -> Iterator[Metric]:
        yield from self._task.metric_families()


class MetricsTask(WorkerBase):
    def __init__(
        self,
        *,
        worker_id: str,
        control: Channel,
        link: Link | None,
        log: logging.Logger,
        listen: str,
        listener: Any = None,
        step_threshold_s: float | None = None,
        clock: LocalClock,
    ) -> None:
        super().__init__(worker_id, control, link, log)
        self.listen = listen
        self.step_threshold_s = step_threshold_s
        self.server: MetricsServer | None = None
        self._clock = clock
        self._latest: tuple[CtlReply, int] | None = None  # swapped whole: read by the HTTP thread
        self._next_query = 0
        self._asked_ns: int | None = None  # an unanswered request is outstanding since
        self._next_bind = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if listener is not None:
            self._serve(listener)

    # -- Task ----------------------------------------------------------------------------

    def pollables(self) -> Sequence[Any]:
        return self.base_pollables()

    def next_deadline_ns(self) -> int | None:
        query = self._next_query
        if self._asked_ns is not None:
            query = max(query, self._asked_ns + STALE_NS + 1)
        deadlines = [self.base_deadline(), query]
        if self.server is None:
            deadlines.append(self._next_bind)
        return min(deadlines)

    def step(self, now: Now) -> None:
        self.drain_link(lambda message, fds: self.close_fds(fds))
        self.drain_bus({MsgType.CTL_REPLY}, lambda m: self._on_reply(m, now), now)
        if now.mono_ns >= self._next_query and (
            self._asked_ns is None or now.mono_ns - self._asked_ns > STALE_NS
        ):
            # One request at a time: while clock-control is away they would only queue up.
            self.send(CtlRequest(command="status"))
            self._asked_ns = now.mono_ns
            self._next_query = now.mono_ns + QUERY_INTERVAL_NS
        if self.server is None and now.mono_ns >= self._next_bind:
            self._bind(now)
        if self.server is not None:
            self.server.flush_log(now.mono_ns)
        self.housekeeping(now, lambda: None)

    # -- internals ------------------------------------------------------------------------

    def _on_reply(self, message: Message, now: Now) -> None:
        self._asked_ns = None
        if isinstance(message, CtlReply) and message.ok:
            self._latest = (message, now.mono_ns)

    def _bind(self, now: Now) -> None:
        try:
            sock = bind_listener(self.listen)
        except OSError as exc:
            self._next_bind = now.mono_ns + BIND_RETRY_NS
            self.limited.log(
                logging.ERROR,
                "bind",
                now.mono_ns,
                "metrics-exporter-listen = %s: cannot listen: %s; retrying every %.0f s",
                self.listen,
                exc.strerror,
                BIND_RETRY_NS / 1e9,
            )
            return
        self._serve(sock)

    def _serve(self, sock: Any) -> None:
        self.server = MetricsServer(sock, self.render, self.log)
        self.server.start()
        host, port = self.server.address
        self.log.info("serving metrics on http://%s/metrics", f"[{host}]:{port}"
                      if ":" in host else f"{host}:{port}")

    def _mono(self) -> int:
        return self._clock.now().mono_ns

    def metric_families(self) -> Iterator[Metric]:
        latest = self._latest
        if latest is None:
            return iter(())
        reply, at = latest
        return families(
            reply,
            version=VERSION,
            step_threshold_s=self.step_threshold_s,
            data_age_s=max(0.0, (self._mono() - at) / 1e9),
        )

    def render(self, accept: str) -> tuple[int, str, bytes]:
        """One scrape (called from the HTTP thread)."""
        latest = self._latest
        age_ns = None if latest is None else self._mono() - latest[1]
        if age_ns is None or age_ns > STALE_NS:
            since = "yet" if age_ns is None else f"for {age_ns / 1e9:.0f} s"
            body = f"ntpd-py: clock-control has not answered {since}\n".encode()
            return 503, "text/plain; charset=utf-8", body
        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
