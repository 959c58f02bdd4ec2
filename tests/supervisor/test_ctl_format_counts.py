"""`ntpctl` shows the drop counts of issue #17: refused control requests, link drops."""

from __future__ import annotations

from ntpd_py.ipc.messages import CtlReply, ProcessInfo
from ntpd_py.supervisor.ctl_format import reply_json, text_output
from ntpd_py.workers.metrics_render import families


def _reply() -> CtlReply:
    proc = ProcessInfo(worker_id="ptp:/dev/ptp0", role="ptp", pid=42, user="nobody",
                       state="running", uptime_s=3.0, restarts=0, rss_bytes=None,
                       cpu_percent=None, link_malformed=2, link_dropped=7)
    return CtlReply(ok=True, processes=[proc], ipc={"ctl-rate-limited": 12, "stale": 1})


def test_text_and_json_show_refused_requests_and_link_drops() -> None:
    reply = _reply()
    text = text_output(reply, "status")
    assert "ctl-rate-limited 12" in text and "stale 1" in text
    assert "7 link frames dropped, 2 link frames malformed" in text
    assert "7 link frames dropped" in text_output(reply, "workers")
    document = reply_json(reply, "status")
    assert document["ipc_dropped"]["ctl-rate-limited"] == 12
    assert document["processes"][0]["link_dropped"] == 7


def test_metrics_carry_link_drops_and_refusals() -> None:
    by_name = {f.name: f for f in families(_reply(), version="x", step_threshold_s=None,
                                           data_age_s=0.0)}
    (sample,) = [s for s in by_name["ntpd_py_ipc_link_dropped"].samples
                 if s.name.endswith("_total")]
    assert sample.value == 7
    refused = [s for s in by_name["ntpd_py_ipc_dropped"].samples
               if s.labels.get("reason") == "ctl-rate-limited"]
    assert refused and refused[0].value == 12


def test_nts_server_and_key_exchange_counters_in_status_and_metrics() -> None:
    reply = CtlReply(ok=True, servers={
        "127.0.0.1:123": {"received": 10, "accepted": 9, "nts_received": 6, "nts_accepted": 4,
                          "nts_nak": 1, "nts_dropped": 1},
        "nts-ke 127.0.0.1:4460": {"accepted": 5, "completed": 3, "refused_full": 2,
                                  "timed_out": 1, "failed": 1, "errors_sent": 0,
                                  "open_connections": 0}})
    text = text_output(reply, "status")
    assert "NTS received 6, authenticated 4, NAK 1" in text and "dropped 1" in text
    assert ("NTS-KE 127.0.0.1:4460: key exchanges completed 3, accepted 5, refused (all "
            "slots taken) 2, timed out 1, failed 1") in text
    assert "Server nts-ke" not in text  # not shown as an NTP server's counters
    by_name = {f.name: f for f in families(reply, version="x", step_threshold_s=None,
                                           data_age_s=0.0)}
    (nak,) = [s for s in by_name["ntp_server_nts_nak_packets"].samples
              if s.name.endswith("_total")]
    assert nak.value == 1 and nak.labels == {"listen_address": "127.0.0.1:123"}
