"""The metrics the exporter serves, built from one `ntpctl status` reply (CtlReply).

Names follow ntpd-rs's exporter where the meaning is the same, so its
dashboards keep working: `ntp_uptime_seconds`, `ntp_system_*`,
`ntp_source_*` (labels `name`, `address`, `id`) and
`ntp_server_*_packets_total` (label `listen_address`). What only ntpd-py has
is under `ntpd_py_*`: the per-process table (restarts, memory, CPU seconds),
IPC frames dropped or malformed, the PHC read method and reading window per
source, the selection state, and the worker's own event counters.

:func:`families` is a pure function of the reply (and the two configuration
values it needs), so tests can check every metric without sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ntpd_py.ipc.messages import CtlReply, SourceView
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
)

__all__ = ["SOURCE_LABELS", "Metric", "families"]

Metric = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily | StateSetMetricFamily

SOURCE_LABELS = ["name", "address", "id"]
PROCESS_LABELS = ["worker_id", "role"]
SERVER_COUNTERS = {  # ntpd-rs's names for the server counters it has
    "received": ("ntp_server_received_packets", "Number of incoming received packets"),
    "accepted": ("ntp_server_accepted_packets", "Number of packets accepted"),
    "denied": ("ntp_server_denied_packets", "Number of denied packets"),
    "ignored": ("ntp_server_ignored_packets", "Number of packets ignored"),
    "rate_limited": ("ntp_server_rate_limited_packets", "Number of rate limited packets"),
    "response_send_errors": (
        "ntp_server_response_send_errors",
        "Number of packets where there was an error responding",
    ),
    "nts_received": ("ntp_server_nts_received_packets", "Number of incoming NTS packets"),
    "nts_accepted": ("ntp_server_nts_accepted_packets", "Number of NTS packets accepted"),
    "nts_denied": ("ntp_server_nts_denied_packets", "Number of denied NTS packets"),
    "nts_rate_limited": ("ntp_server_nts_rate_limited_packets",
                         "Number of rate limited NTS packets"),
    "nts_nak": ("ntp_server_nts_nak_packets", "Number of NTS nak responses to packets"),
}
SELECTION_STATES = {
    "*": "selected",
    "+": "combined",
    "-": "not_combined",
    "x": "falseticker",
    "~": "too_variable",
    "?": "unusable",
}
# Worker counters that are not monotonic (so not exported as *_total).
NOT_COUNTERS = {"readings_per_sample", "unanswered_polls"}


def _labels(src: SourceView) -> list[str]:
    return [src.name, src.resolved or src.name, src.source_id]


def _gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, unit=unit)


def _system(reply: CtlReply, step_threshold_s: float | None) -> Iterator[Metric]:
    assert reply.clock is not None
    system = reply.clock.system
    yield _gauge(
        "ntp_system_accumulated_steps",
        "Accumulated amount of seconds that the system needed to jump the time",
        system.accumulated_steps_s,
        "seconds",
    )
    yield _gauge(
        "ntp_system_accumulated_steps_threshold",
        "Threshold for the accumulated step amount at which the NTP daemon will exit "
        "(or -1 if no threshold was set)",
        -1.0 if step_threshold_s is None else step_threshold_s,
        "seconds",
    )
    yield _gauge("ntp_system_leap_indicator", "Leap second warning (0 none, 3 unsynchronized)",
                 system.leap)
    yield _gauge("ntp_system_root_delay", "Distance to the closest root time source",
                 system.root_delay_s, "seconds")
    yield _gauge("ntp_system_root_dispersion", "Estimate of how precise our time is",
                 system.root_dispersion_s, "seconds")
    yield _gauge("ntp_system_stratum", "Stratum of our clock", system.stratum)
    yield _gauge("ntpd_py_system_synchronized", "1 if the clock is synchronized",
                 int(system.synchronized))
    if system.offset_s is not None:
        yield _gauge("ntpd_py_system_offset", "Combined offset estimate (reference - local)",
                     system.offset_s, "seconds")
    if system.offset_uncertainty_s is not None:
        yield _gauge("ntpd_py_system_offset_uncertainty", "1-sigma uncertainty of the offset",
                     system.offset_uncertainty_s, "seconds")
    yield _gauge("ntpd_py_system_frequency_ppm", "Frequency correction in force (ppm)",
                 system.frequency_ppm)
    yield _gauge("ntpd_py_system_frequency_uncertainty_ppm",
                 "1-sigma uncertainty of the frequency (ppm)", system.frequency_uncertainty_ppm)
    yield CounterMetricFamily("ntpd_py_system_steps", "Clock steps since the state began",
                              value=system.steps)
    if system.last_update_age_s is not None:
        yield _gauge("ntpd_py_system_last_update_age", "Time since the last clock update",
                     system.last_update_age_s, "seconds")


def _source_gauges(sources: list[SourceView]) -> Iterator[Metric]:
    # (name, help, unit, value getter) for ntpd-rs's per-source gauges.
    table: list[tuple[str, str, str, Callable[[SourceView], float | None]]] = [
        ("ntp_source_poll_interval", "Time between polls of the source", "seconds",
         lambda s: 2.0**s.poll_log2),
        ("ntp_source_offset", "Offset between the upstream source and system time", "seconds",
         lambda s: s.offset_s),
        ("ntp_source_delay", "Current round-trip delay to the upstream source", "seconds",
         lambda s: s.delay_s),
        ("ntp_source_uncertainty", "Estimated error of the source clock", "seconds",
         lambda s: s.uncertainty_s),
        ("ntp_source_root_delay", "Root delay reported by the source", "seconds",
         lambda s: s.root_delay_s),
        ("ntp_source_root_dispersion", "Root dispersion reported by the source", "seconds",
         lambda s: s.root_dispersion_s),
        ("ntp_source_unanswered_polls", "Polls without a reply since the last one answered",
         "", lambda s: s.counters.get("unanswered_polls") if s.kind == "ntp" else None),
        ("ntp_source_nts_cookies_available", "NTS cookies left for the source", "",
         lambda s: s.cookies),
        ("ntpd_py_source_reach", "Reachability register (8 bits, last poll in bit 0)", "",
         lambda s: s.reach),
        ("ntpd_py_source_stratum", "Stratum of the source", "", lambda s: s.stratum),
        ("ntpd_py_source_last_sample_age", "Time since the last sample", "seconds",
         lambda s: s.last_sample_age_s),
        ("ntpd_py_source_phc_window", "System-clock window of the PHC reading used", "seconds",
         lambda s: s.last_window_s),
    ]
    for name, doc, unit, get in table:
        family = GaugeMetricFamily(name, doc, labels=SOURCE_LABELS, unit=unit)
        for src in sources:
            value = get(src)
            if value is not None:
                family.add_metric(_labels(src), value)
        yield family


def _source_other(sources: list[SourceView]) -> Iterator[Metric]:
    state = StateSetMetricFamily(
        "ntpd_py_source_selection", "Selection state (chrony's * + - x ~ ?)",
        labels=SOURCE_LABELS,
    )
    method = InfoMetricFamily(
        "ntpd_py_source_phc_read", "PHC read method in use (ioctl)", labels=SOURCE_LABELS
    )
    dropped = CounterMetricFamily(
        "ntpd_py_source_ipc_dropped", "Frames from this source's worker dropped by clock-control",
        labels=SOURCE_LABELS,
    )
    events = CounterMetricFamily(
        "ntpd_py_source_events", "The source worker's own counters (polls, readings, errors…)",
        labels=[*SOURCE_LABELS, "event"],
    )
    for src in sources:
        current = SELECTION_STATES.get(src.state, "unusable")
        state.add_metric(_labels(src), {s: s == current for s in SELECTION_STATES.values()})
        if src.method is not None:
            method.add_metric(_labels(src), {"method": src.method})
        dropped.add_metric(_labels(src), src.ipc_dropped)
        for key, value in sorted(src.counters.items()):
            if key not in NOT_COUNTERS:
                events.add_metric([*_labels(src), key], value)
    yield from (state, method, dropped, events)


def _servers(reply: CtlReply) -> Iterator[Metric]:
    ours: dict[str, CounterMetricFamily] = {}
    theirs = {
        key: CounterMetricFamily(name, doc, labels=["listen_address"])
        for key, (name, doc) in SERVER_COUNTERS.items()
    }
    for listen, counters in sorted(reply.servers.items()):
        for key, value in counters.items():
            family = theirs.get(key)
            if family is None:
                family = ours.get(key)
                if family is None:
                    name = f"ntpd_py_server_{key.replace(':', '_')}"
                    ours[key] = family = CounterMetricFamily(
                        name, f"Server counter {key}", labels=["listen_address"]
                    )
            family.add_metric([listen], value)
    yield from theirs.values()
    yield from ours.values()


def _processes(reply: CtlReply) -> Iterator[Metric]:
    up = GaugeMetricFamily("ntpd_py_process_up", "1 if the process is running",
                           labels=PROCESS_LABELS)
    restarts = CounterMetricFamily("ntpd_py_process_restarts", "Restarts by the supervisor",
                                   labels=PROCESS_LABELS)
    rss = GaugeMetricFamily("ntpd_py_process_resident_memory", "Resident memory",
                            labels=PROCESS_LABELS, unit="bytes")
    cpu = CounterMetricFamily("ntpd_py_process_cpu_seconds", "User and system CPU time",
                              labels=PROCESS_LABELS)
    malformed = CounterMetricFamily(
        "ntpd_py_ipc_link_malformed", "Malformed frames the supervisor got on this link",
        labels=PROCESS_LABELS,
    )
    link_dropped = CounterMetricFamily(
        "ntpd_py_ipc_link_dropped", "Frames the supervisor refused on this link (rate cap)",
        labels=PROCESS_LABELS,
    )
    for proc in reply.processes:
        labels = [proc.worker_id, proc.role]
        up.add_metric(labels, int(proc.pid is not None and proc.state == "running"))
        restarts.add_metric(labels, proc.restarts)
        if proc.rss_bytes is not None:
            rss.add_metric(labels, proc.rss_bytes)
        if proc.cpu_seconds is not None:
            cpu.add_metric(labels, proc.cpu_seconds)
        if proc.role != "supervisor":
            malformed.add_metric(labels, proc.link_malformed)
            link_dropped.add_metric(labels, proc.link_dropped)
    dropped = CounterMetricFamily("ntpd_py_ipc_dropped", "Bus frames dropped by clock-control",
                                  labels=["reason"])
    for reason, count in sorted(reply.ipc.items()):
        dropped.add_metric([reason], count)
    yield from (up, restarts, rss, cpu, malformed, link_dropped, dropped)


def families(
    reply: CtlReply, *, version: str, step_threshold_s: float | None, data_age_s: float
) -> Iterator[Metric]:
    """Every metric family for one reply."""
    uptime = next((p.uptime_s for p in reply.processes if p.role == "supervisor"), None)
    family = GaugeMetricFamily(
        "ntp_uptime", "Time that the daemon has been running",
        labels=["version", "build_commit", "build_commit_date"], unit="seconds",
    )
    if uptime is not None:
        family.add_metric([version, "unknown", "unknown"], uptime)
    yield family
    if reply.clock is not None:
        yield from _system(reply, step_threshold_s)
        sources = list(reply.clock.sources)
        yield from _source_gauges(sources)
        yield from _source_other(sources)
    yield from _servers(reply)
    yield from _processes(reply)
    yield _gauge("ntpd_py_exporter_data_age", "Age of the data served", data_age_s, "seconds")

