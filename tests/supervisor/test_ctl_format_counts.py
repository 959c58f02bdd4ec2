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
