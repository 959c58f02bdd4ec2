"""The source list clock-control needs, derived from the running WorkerSpecs."""

from __future__ import annotations

from collections.abc import Iterable

from ntpd_py.core.config import (
    Config,
    NtsPoolSourceConfig,
    NtsSourceConfig,
    PoolSourceConfig,
    PpsSourceConfig,
    PtpSourceConfig,
    ServerSourceConfig,
    SockSourceConfig,
)
from ntpd_py.core.pps_source import pps_poll_log2
from ntpd_py.core.sock_source import SOCK_POLL_MAX, SOCK_POLL_MIN
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.ipc.messages import SourceEntry, SourceSet

__all__ = ["source_set"]


def source_set(config: Config, specs: Iterable[WorkerSpec]) -> SourceSet:
    entries = []
    server_workers: list[str] = []
    listens: dict[str, None] = {}
    for spec in specs:
        if spec.role == "server":
            server_workers.append(spec.worker_id)
            listens.update((server.listen, None) for server in spec.servers)
        if spec.role == "nts-ke" and spec.nts_ke is not None:  # its counters, as a server's
            server_workers.append(spec.worker_id)
            listens[f"nts-ke {spec.nts_ke.listen}"] = None
        source = spec.source
        if isinstance(source, PtpSourceConfig):
            entries.append(
                SourceEntry(
                    source_id=spec.worker_id,
                    kind="ptp",
                    name=source.path,
                    poll_log2=source.interval,
                    poll_min=source.interval,
                    poll_max=source.interval,
                )
            )
        elif isinstance(source, SockSourceConfig):
            # The feeder sets the pace (gpsd: once a second); the worker reports the
            # spacing of its samples as their poll, within core/sock_source.py's bounds.
            entries.append(
                SourceEntry(
                    source_id=spec.worker_id,
                    kind="sock",
                    name=source.path,
                    poll_log2=0,
                    poll_min=SOCK_POLL_MIN,
                    poll_max=SOCK_POLL_MAX,
                )
            )
        elif isinstance(source, PpsSourceConfig):
            poll = pps_poll_log2(source.period)  # one sample per pulse
            entries.append(SourceEntry(source_id=spec.worker_id, kind="pps", name=source.path,
                                       poll_log2=poll, poll_min=poll, poll_max=poll))
        elif isinstance(source, ServerSourceConfig | PoolSourceConfig | NtsSourceConfig
                        | NtsPoolSourceConfig):
            limits = source.poll_limits(config.source_defaults)
            if isinstance(source, NtsPoolSourceConfig):
                name = spec.worker_id.removeprefix("nts-pool:")  # the pool name and member
            elif spec.peer in (None, source.address):
                name = source.address
            else:
                name = f"{source.address} ({spec.peer})"
            entries.append(
                SourceEntry(
                    source_id=spec.worker_id,
                    kind="ntp",
                    name=name,
                    poll_log2=source.initial_poll(config.source_defaults),
                    poll_min=limits.min,
                    poll_max=limits.max,
                )
            )
    return SourceSet(sources=entries, server_workers=server_workers,
                     server_listens=list(listens))
