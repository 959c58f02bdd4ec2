"""Human and JSON summaries of a validated configuration (`ntpd-py validate`)."""

from __future__ import annotations

from typing import Any

from ntpd_py.core.config import (
    Config,
    NtsPoolSourceConfig,
    NtsSourceConfig,
    PoolSourceConfig,
    PtpSourceConfig,
    ServerSourceConfig,
    StepThreshold,
)

__all__ = ["config_summary_json", "config_summary_lines"]

_CLOCK_TEXT = {
    "system": "system (steers CLOCK_REALTIME; needs CAP_SYS_TIME)",
    "observe": "observe (computes and reports, never steers)",
    "simulated": "simulated (steers a simulated clock)",
}


def _seconds(value: float | None) -> str:
    return "inf" if value is None else f"{value:g} s"


def _threshold(value: StepThreshold) -> str:
    if value.forward == value.backward:
        return _seconds(value.forward)
    return f"forward {_seconds(value.forward)} / backward {_seconds(value.backward)}"


def _source_line(config: Config, index: int) -> str:
    source = config.source[index]
    defaults = config.source_defaults
    if isinstance(source, PtpSourceConfig):
        return (
            f"  [{index}] ptp     {source.path}  every {_seconds(source.interval_s)} "
            f"(interval {source.interval}), precision {source.precision:g} s, "
            f"delay {source.delay:g} s, stratum {source.stratum}"
        )
    assert isinstance(source, ServerSourceConfig | PoolSourceConfig | NtsSourceConfig
                      | NtsPoolSourceConfig)
    lim = source.poll_limits(defaults)
    poll = f"poll 2^{lim.min}..2^{lim.max} s, initial 2^{source.initial_poll(defaults)} s"
    if isinstance(source, NtsPoolSourceConfig):
        return (f"  [{index}] nts-pool {source.address} (NTS-KE, up to {source.count} servers)"
                f"  {poll}")
    if isinstance(source, NtsSourceConfig):
        return f"  [{index}] nts     {source.address} (NTS-KE)  {poll}"
    if isinstance(source, PoolSourceConfig):
        return f"  [{index}] pool    {source.address} (up to {source.count} servers)  {poll}"
    return f"  [{index}] server  {source.address}  {poll}"


def config_summary_lines(config: Config, path: str) -> list[str]:
    sync = config.synchronization
    lines = [
        f"configuration OK: {path}",
        f"clock: {_CLOCK_TEXT[config.daemon.clock]}",
        f"sources: {len(config.source)} configured, {config.potential_source_count()} potential; "
        f"minimum-agreeing-sources = {sync.minimum_agreeing_sources}",
    ]
    lines += [_source_line(config, i) for i in range(len(config.source))]
    for server in config.server:
        rate = (
            f"rate limit {server.rate_limiting_cutoff_ms} ms ({server.rate_limiting_cache_size} "
            "clients)"
            if server.rate_limiting_cutoff_ms
            else "no rate limit"
        )
        versions = ",".join(str(v) for v in server.accept_ntp_versions)
        lines.append(f"serving NTP on {server.listen} (versions {versions}, {rate})")
    accumulated = _seconds(sync.accumulated_step_panic_threshold)
    lines += [
        f"panic thresholds: startup {_threshold(sync.startup_step_panic_threshold)}; "
        f"single step {_threshold(sync.single_step_panic_threshold)}; "
        f"accumulated {accumulated if sync.accumulated_step_panic_threshold else 'off'}",
        f"control socket: {config.control_socket_path()} "
        f"(mode {config.observability.observation_permissions:04o}); "
        f"runtime {config.daemon.runtime_dir}; state {config.daemon.state_dir}; "
        f"user {config.daemon.user}:{config.daemon.group}",
    ]
    return lines


def config_summary_json(config: Config, path: str, warnings: list[str]) -> dict[str, Any]:
    return {
        "schema": 1,
        "ok": True,
        "path": path,
        "warnings": warnings,
        "config": config.model_dump(mode="json", by_alias=True),
    }
