"""`ntpd-py validate` summaries: one line per source and server, thresholds, paths."""

from __future__ import annotations

import json

from ntpd_py.core.config_load import load_config_text
from ntpd_py.supervisor.summary import config_summary_json, config_summary_lines

CONFIG = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
[[source]]
mode = "pool"
address = "pool.example:123"
count = 3
[[source]]
mode = "server"
address = "127.0.0.1:1123"
[[server]]
listen = "127.0.0.1:1234"
rate-limiting-cutoff-ms = 100
[synchronization]
single-step-panic-threshold = { forward = 10, backward = 20 }
accumulated-step-panic-threshold = 100
[observability]
observation-path = "/run/x/observe"
"""


def test_each_source_and_server_gets_a_line() -> None:
    config = load_config_text(CONFIG)
    lines = config_summary_lines(config, "/etc/ntpd-py/ntp.toml")
    assert lines[0] == "configuration OK: /etc/ntpd-py/ntp.toml"
    # A pool counts as up to `count` sources: 1 + 3 + 1 potential.
    assert lines[2].startswith("sources: 3 configured, 5 potential;")
    assert lines[3].startswith("  [0] ptp     /dev/ptp0  every 1 s (interval 0)")
    assert lines[4] == "  [1] pool    pool.example:123 (up to 3 servers)  poll 2^4..2^10 s, initial 2^4 s"
    assert lines[5] == "  [2] server  127.0.0.1:1123  poll 2^4..2^10 s, initial 2^4 s"
    rate = next(line for line in lines if line.startswith("serving NTP"))
    assert "rate limit 100 ms" in rate and "versions 3,4" in rate


def test_thresholds_show_asymmetry_and_infinity() -> None:
    lines = config_summary_lines(load_config_text(CONFIG), "x")
    panic = next(line for line in lines if line.startswith("panic thresholds"))
    assert "single step forward 10 s / backward 20 s" in panic
    assert "accumulated 100 s" in panic
    plain = config_summary_lines(load_config_text('[[source]]\nmode = "ptp"\npath = "/dev/ptp0"\n'),
                                 "x")
    panic = next(line for line in plain if line.startswith("panic thresholds"))
    assert "accumulated off" in panic and "forward inf" in panic


def test_observe_clock_and_control_socket_are_named() -> None:
    config = load_config_text(CONFIG + '[daemon]\nclock = "observe"\n')
    lines = config_summary_lines(config, "x")
    assert lines[1] == "clock: observe (computes and reports, never steers)"
    assert lines[-1].startswith(f"control socket: {config.control_socket_path()} (mode 0")


def test_json_summary_is_the_whole_config_and_serializable() -> None:
    config = load_config_text(CONFIG)
    doc = config_summary_json(config, "x", ["a warning"])
    assert (doc["schema"], doc["ok"], doc["warnings"]) == (1, True, ["a warning"])
    assert doc["config"]["source"][1]["address"] == "pool.example:123"
    assert json.loads(json.dumps(doc)) == doc
