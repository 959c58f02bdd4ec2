"""The exporter's metrics: ntpd-rs's names and labels, ntpd-py's own, both text formats."""

from __future__ import annotations

import pytest
from ntpd_py.ipc.messages import (
    ClockStateMsg,
    CtlReply,
    ProcessInfo,
    SourceView,
    SystemView,
)
from ntpd_py.plumbing.scheduler import Now
from ntpd_py.workers.metrics import STALE_NS, MetricsTask
from ntpd_py.workers.metrics_render import families
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry

SYSTEM = SystemView(synchronized=True, clock_backend="simulated", offset_s=2e-8,
                    offset_uncertainty_s=1e-7, frequency_ppm=-20.0,
                    frequency_uncertainty_ppm=0.05, stratum=2, reference_id=0x7F000001,
                    root_delay_s=1e-3, root_dispersion_s=2e-4, leap=0, precision_log2=-23,
                    steps=1, accumulated_steps_s=0.05, last_update_age_s=0.5,
                    reference_time_ns=None)


def _view(**changes: object) -> SourceView:
    base = dict(source_id="ptp:/dev/ptp0", kind="ptp", name="/dev/ptp0", resolved="/dev/ptp0",
                state="*", worker_state="running", detail="", offset_s=1e-8, uncertainty_s=5e-8,
                delay_s=4e-7, last_offset_s=2e-8, poll_log2=0, reach=255, samples=10,
                last_sample_age_s=0.2, stratum=0, reference_id=5, root_delay_s=0.0,
                root_dispersion_s=0.0, method="extended", last_window_s=4e-7,
                counters={"polls": 10, "readings": 250, "readings_per_sample": 25,
                          "error:io": 2}, ipc_dropped=3)
    base.update(changes)
    return SourceView(**base)  # type: ignore[arg-type]


NTP = _view(source_id="ntp:127.0.0.1:123", kind="ntp", name="127.0.0.1:123",
            resolved="127.0.0.1", state="x", method=None, last_window_s=None, poll_log2=4,
            reach=0o17, counters={"requests": 7, "unanswered_polls": 2})
STARTING = _view(source_id="ntp:b:123", kind="ntp", name="b:123", resolved=None, state="?",
                 offset_s=None, uncertainty_s=None, delay_s=None, root_delay_s=None,
                 root_dispersion_s=None, method=None, last_window_s=None, counters={})


def _proc(worker_id: str, role: str, pid: int | None = 10, **changes: object) -> ProcessInfo:
    base = dict(worker_id=worker_id, role=role, pid=pid, user="ntpd-py", state="running",
                uptime_s=12.5, restarts=0, rss_bytes=30 << 20, cpu_percent=1.0,
                cpu_seconds=0.75, link_malformed=0)
    base.update(changes)
    return ProcessInfo(**base)  # type: ignore[arg-type]


REPLY = CtlReply(
    ok=True,
    clock=ClockStateMsg(mono_ns=1, realtime_ns=2, system=SYSTEM, sources=[_view(), NTP, STARTING]),
    processes=[_proc("supervisor", "supervisor", user="root"),
               _proc("clock-control", "clock-control"),
               _proc("ptp:/dev/ptp0", "ptp", restarts=2, link_malformed=1),
               _proc("ntp:b:123", "ntp", pid=None, state="backoff", rss_bytes=None,
                     cpu_seconds=None)],
    ipc={"rate-limited": 4, "unknown-sender": 1},
    servers={"127.0.0.1:123": {"received": 9, "accepted": 8, "denied": 1, "ignored": 0,
                               "rate_limited": 0, "response_send_errors": 0, "malformed": 3}},
)


class _Fixed:
    def __init__(self, reply: CtlReply) -> None:
        self.reply = reply

    def collect(self):  # type: ignore[no-untyped-def]
        yield from families(self.reply, version="0.1.0", step_threshold_s=None, data_age_s=0.5)


def _scrape(reply: CtlReply, openmetrics: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(reply))  # type: ignore[arg-type]
    text = (generate_om if openmetrics else generate_latest)(registry).decode()
    parse = parse_openmetrics if openmetrics else parse_text
    samples = {}
    for family in parse(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _src(source_id: str, name: str, address: str) -> tuple[tuple[str, str], ...]:
    return (("address", address), ("id", source_id), ("name", name))


PTP_LABELS = _src("ptp:/dev/ptp0", "/dev/ptp0", "/dev/ptp0")
NTP_LABELS = _src("ntp:127.0.0.1:123", "127.0.0.1:123", "127.0.0.1")


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics"])
def test_ntpd_rs_names_and_labels(openmetrics: bool) -> None:
    got = _scrape(REPLY, openmetrics)
    uptime = (("build_commit", "unknown"), ("build_commit_date", "unknown"), ("version", "0.1.0"))
    assert got[("ntp_uptime_seconds", uptime)] == 12.5
    assert got[("ntp_system_stratum", ())] == 2
    assert got[("ntp_system_leap_indicator", ())] == 0
    assert got[("ntp_system_root_delay_seconds", ())] == pytest.approx(1e-3)
    assert got[("ntp_system_root_dispersion_seconds", ())] == pytest.approx(2e-4)
    assert got[("ntp_system_accumulated_steps_seconds", ())] == pytest.approx(0.05)
    assert got[("ntp_system_accumulated_steps_threshold_seconds", ())] == -1
    assert got[("ntp_source_offset_seconds", PTP_LABELS)] == pytest.approx(1e-8)
    assert got[("ntp_source_uncertainty_seconds", PTP_LABELS)] == pytest.approx(5e-8)
    assert got[("ntp_source_delay_seconds", PTP_LABELS)] == pytest.approx(4e-7)
    assert got[("ntp_source_poll_interval_seconds", NTP_LABELS)] == 16
    assert got[("ntp_source_unanswered_polls", NTP_LABELS)] == 2
    assert ("ntp_source_unanswered_polls", PTP_LABELS) not in got  # NTP only
    listen = (("listen_address", "127.0.0.1:123"),)
    assert got[("ntp_server_received_packets_total", listen)] == 9
    assert got[("ntp_server_accepted_packets_total", listen)] == 8
    assert got[("ntp_server_denied_packets_total", listen)] == 1
    assert got[("ntp_server_response_send_errors_total", listen)] == 0
    assert got[("ntpd_py_server_malformed_total", listen)] == 3


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics"])
def test_ntpd_py_own_metrics(openmetrics: bool) -> None:
    got = _scrape(REPLY, openmetrics)
    ptp = (("role", "ptp"), ("worker_id", "ptp:/dev/ptp0"))
    ntp = (("role", "ntp"), ("worker_id", "ntp:b:123"))
    assert got[("ntpd_py_process_restarts_total", ptp)] == 2
    assert got[("ntpd_py_process_resident_memory_bytes", ptp)] == 30 << 20
    assert got[("ntpd_py_process_cpu_seconds_total", ptp)] == 0.75
    assert got[("ntpd_py_process_up", ptp)] == 1 and got[("ntpd_py_process_up", ntp)] == 0
    assert ("ntpd_py_process_cpu_seconds_total", ntp) not in got  # not running: no value
    assert got[("ntpd_py_ipc_link_malformed_total", ptp)] == 1
    assert got[("ntpd_py_ipc_dropped_total", (("reason", "rate-limited"),))] == 4
    assert got[("ntpd_py_source_ipc_dropped_total", PTP_LABELS)] == 3
    assert got[("ntpd_py_source_phc_window_seconds", PTP_LABELS)] == pytest.approx(4e-7)
    assert got[("ntpd_py_source_phc_read_info", (*PTP_LABELS[:2], ("method", "extended"),
                                                 PTP_LABELS[2]))] == 1
    assert got[("ntpd_py_source_events_total", (*PTP_LABELS[:1], ("event", "error:io"),
                                                *PTP_LABELS[1:]))] == 2
    # a gauge among the worker counters is not exported as a counter
    assert not any(k[0] == "ntpd_py_source_events_total" and ("event", "readings_per_sample")
                   in k[1] for k in got)
    state = "ntpd_py_source_selection"
    assert got[(state, (*NTP_LABELS[:2], NTP_LABELS[2], (state, "falseticker")))] == 1
    assert got[(state, (*NTP_LABELS[:2], NTP_LABELS[2], (state, "selected")))] == 0
    assert got[("ntpd_py_system_synchronized", ())] == 1
    assert got[("ntpd_py_exporter_data_age_seconds", ())] == 0.5


def test_a_source_without_data_has_no_offset() -> None:
    got = _scrape(REPLY, False)
    starting = _src("ntp:b:123", "b:123", "b:123")  # unresolved: the name is the address
    assert ("ntp_source_offset_seconds", starting) not in got
    assert got[("ntp_source_poll_interval_seconds", starting)] == 1


class _Clock:
    def __init__(self) -> None:
        self.mono = 10**12

    def now(self) -> Now:
        return Now(self.mono, 0)


def test_exporter_answers_503_until_clock_control_answers_and_when_it_stops() -> None:
    clock = _Clock()
    task = MetricsTask(worker_id="metrics", control=None, link=None,
                       log=__import__("logging").getLogger("t"), listen="127.0.0.1:1",
                       clock=clock)
    code, _, body = task.render("")
    assert code == 503 and b"not answered yet" in body
    task._on_reply(REPLY, clock.now())
    code, content_type, body = task.render("application/openmetrics-text; version=1.0.0")
    assert code == 200 and content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF") and b"ntp_system_stratum 2" in body
    code, content_type, body = task.render("text/plain")
    assert code == 200 and content_type.startswith("text/plain") and b"# EOF" not in body
    clock.mono += STALE_NS + 1
    code, _, body = task.render("")
    assert code == 503 and b"has not answered for 5 s" in body


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics"])
def test_a_sock_source_has_ntpd_rs_source_metrics_and_its_drops(openmetrics: bool) -> None:
    path = "/run/chrony.ttyS0.sock"
    sock = _view(source_id=f"sock:{path}", kind="sock", name=path, resolved=None, state="*",
                 offset_s=2e-4, uncertainty_s=1e-3, delay_s=0.0, method=None,
                 last_window_s=None, poll_log2=0, reach=0,
                 counters={"samples": 40, "drop:wrong-magic": 2, "drop:stale": 1,
                           "overflow": 5})
    reply = REPLY.model_copy(update={"clock": ClockStateMsg(
        mono_ns=1, realtime_ns=2, system=SYSTEM, sources=[sock])})
    got = _scrape(reply, openmetrics)
    labels = _src(f"sock:{path}", path, path)
    assert got[("ntp_source_offset_seconds", labels)] == pytest.approx(2e-4)
    assert got[("ntp_source_uncertainty_seconds", labels)] == pytest.approx(1e-3)
    assert got[("ntp_source_poll_interval_seconds", labels)] == 1
    assert ("ntp_source_unanswered_polls", labels) not in got  # NTP only
    for event, count in (("drop:wrong-magic", 2), ("drop:stale", 1), ("overflow", 5),
                         ("samples", 40)):
        key = tuple(sorted((*labels, ("event", event))))
        assert got[("ntpd_py_source_events_total", key)] == count
