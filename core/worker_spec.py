"""Which processes a configuration asks for: one WorkerSpec per child.

Built from a validated Config (and, for pools, the addresses a resolver
returned). A spec's `fingerprint` covers exactly the settings that child
depends on, so a reload restarts only the children whose settings changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ntpd_py.core.config import (
    Config,
    NtsKeServerConfig,
    NtsPoolSourceConfig,
    NtsSourceConfig,
    PoolSourceConfig,
    PpsSourceConfig,
    PtpSourceConfig,
    ServerConfig,
    ServerSourceConfig,
    SockSourceConfig,
)

__all__ = ["Role", "WorkerSpec", "build_specs", "nts_pool_member", "source_id_for"]

NTS_POOL_PREFIX = "nts-pool:"

Role = Literal["clock-control", "ptp", "ntp", "server", "metrics", "sock", "pps", "nts-ke"]


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: str
    role: Role
    fingerprint: str
    source: (PtpSourceConfig | ServerSourceConfig | PoolSourceConfig | SockSourceConfig
             | PpsSourceConfig | NtsSourceConfig | NtsPoolSourceConfig | None) = None
    # For an NTP worker: the address it talks to (a pool member's resolved IP).
    peer: str | None = None
    servers: tuple[ServerConfig, ...] = field(default_factory=tuple)
    server_index: int = 0  # which set of SO_REUSEPORT sockets a server process gets
    nts_ke: NtsKeServerConfig | None = None  # the [[nts-ke-server]] an nts-ke worker serves

    @property
    def is_source(self) -> bool:
        return self.role in ("ptp", "ntp", "sock", "pps")


def _fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_id_for(
    source: (PtpSourceConfig | ServerSourceConfig | PoolSourceConfig | SockSourceConfig
             | PpsSourceConfig | NtsSourceConfig | NtsPoolSourceConfig),
    peer: str | None = None,
    member: int = 1,
) -> str:
    if isinstance(source, PtpSourceConfig):
        return f"ptp:{source.path}"
    if isinstance(source, SockSourceConfig):
        return f"sock:{source.path}"
    if isinstance(source, PpsSourceConfig):
        return f"pps:{source.path}"
    if isinstance(source, PoolSourceConfig):
        return f"pool:{source.address}/{peer}"
    if isinstance(source, NtsSourceConfig):
        return f"nts:{source.address}"
    if isinstance(source, NtsPoolSourceConfig):
        return f"{NTS_POOL_PREFIX}{source.address}#{member}"
    return f"ntp:{source.address}"


def build_specs(
    config: Config, pool_members: dict[int, list[str]] | None = None
) -> list[WorkerSpec]:
    """Every child the configuration asks for, clock-control first."""
    pool_members = pool_members or {}
    daemon = config.daemon.model_dump()
    sync = config.synchronization.model_dump()
    defaults = config.source_defaults.model_dump()
    specs = [WorkerSpec("clock-control", "clock-control", _fingerprint(sync, daemon))]
    for index, source in enumerate(config.source):
        dumped = source.model_dump()
        if isinstance(source, PtpSourceConfig):
            specs.append(
                WorkerSpec(
                    source_id_for(source),
                    "ptp",
                    _fingerprint(dumped, daemon["clock"], daemon["simulation"]),
                    source,
                )
            )
        elif isinstance(source, SockSourceConfig):
            specs.append(WorkerSpec(source_id_for(source), "sock", _fingerprint(dumped), source))
        elif isinstance(source, PpsSourceConfig):
            specs.append(WorkerSpec(source_id_for(source), "pps", _fingerprint(dumped), source))
        elif isinstance(source, PoolSourceConfig):
            for member in pool_members.get(index, [])[: source.count]:
                specs.append(
                    WorkerSpec(
                        source_id_for(source, member),
                        "ntp",
                        _fingerprint(dumped, defaults, member),
                        source,
                        member,
                    )
                )
        elif isinstance(source, NtsPoolSourceConfig):
            # Each member makes its own key exchange with the pool's NTS-KE server, which
            # names the NTP server it is to use; clock-control counts a server once.
            for number in range(1, source.count + 1):
                specs.append(WorkerSpec(source_id_for(source, member=number), "ntp",
                                        _fingerprint(dumped, defaults, number), source,
                                        source.address))
        elif isinstance(source, ServerSourceConfig | NtsSourceConfig):
            specs.append(
                WorkerSpec(
                    source_id_for(source),
                    "ntp",
                    _fingerprint(dumped, defaults),
                    source,
                    source.address,
                )
            )
    if config.server:
        servers = tuple(config.server)
        count = config.daemon.server_processes
        fingerprint = _fingerprint([s.model_dump() for s in servers], count)
        for index in range(count):
            worker_id = "server" if count == 1 else f"server#{index + 1}"
            specs.append(WorkerSpec(worker_id, "server", fingerprint, servers=servers,
                                    server_index=index))
    for ke in config.nts_ke_server:
        specs.append(WorkerSpec(f"nts-ke:{ke.listen}", "nts-ke",
                                _fingerprint(ke.model_dump()), nts_ke=ke))
    listen = config.observability.metrics_exporter_listen
    if listen is not None:
        inputs = (listen, config.control_socket_path(), sync["accumulated_step_panic_threshold"])
        specs.append(WorkerSpec("metrics", "metrics", _fingerprint(*inputs)))
    return specs


def nts_pool_member(source_id: str) -> tuple[str, int] | None:
    """(pool, member number) of an nts-pool member's source id; None for other sources."""
    if not source_id.startswith(NTS_POOL_PREFIX):
        return None
    pool, _, number = source_id.rpartition("#")
    return (pool, int(number)) if number.isdigit() and pool else None
