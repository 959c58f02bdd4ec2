"""Pure supervisor logic: restart backoff, reload diffs, specs from a configuration."""

from __future__ import annotations

from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.worker_spec import build_specs, nts_pool_member
from ntpd_py.supervisor.policy import (
    BACKOFF_CAP_NS,
    BACKOFF_START_NS,
    STABLE_AFTER_NS,
    RestartState,
    backoff_ns,
)
from ntpd_py.supervisor.reload import plan_reload
from ntpd_py.supervisor.sources import source_set

S = 1_000_000_000
CONFIG = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
[[source]]
mode = "ptp"
path = "/dev/ptp1"
interval = -2
[[source]]
mode = "server"
address = "127.0.0.1:1123"
[[server]]
listen = "127.0.0.1:1234"
"""


def test_backoff_doubles_and_caps() -> None:
    assert backoff_ns(1) == BACKOFF_START_NS
    assert backoff_ns(2) == 2 * BACKOFF_START_NS
    assert backoff_ns(50) == BACKOFF_CAP_NS
    assert all(backoff_ns(n) <= backoff_ns(n + 1) for n in range(1, 40))


def test_restart_state_resets_after_a_stable_run() -> None:
    state = RestartState()
    state.on_start(0)
    assert state.on_exit(S) == S + BACKOFF_START_NS
    state.on_start(2 * S)
    assert state.on_exit(3 * S) == 3 * S + 2 * BACKOFF_START_NS
    state.on_start(4 * S)
    at = 4 * S + STABLE_AFTER_NS
    assert state.on_exit(at) == at + BACKOFF_START_NS
    assert state.restarts == 3


def test_specs_one_per_source_plus_control_and_server() -> None:
    specs = build_specs(load_config_text(CONFIG))
    assert [s.worker_id for s in specs] == [
        "clock-control", "ptp:/dev/ptp0", "ptp:/dev/ptp1", "ntp:127.0.0.1:1123", "server"]
    assert [s.role for s in specs] == ["clock-control", "ptp", "ptp", "ntp", "server"]


def test_pool_expands_to_members() -> None:
    config = load_config_text('[[source]]\nmode = "pool"\naddress = "p.example"\ncount = 2\n')
    specs = build_specs(config, {0: ["192.0.2.1", "192.0.2.2", "192.0.2.3"]})
    assert [s.worker_id for s in specs[1:]] == ["pool:p.example/192.0.2.1",
                                                "pool:p.example/192.0.2.2"]
    assert specs[1].peer == "192.0.2.1"


def test_nts_pool_expands_to_count_members_each_its_own_worker() -> None:
    config = load_config_text('[[source]]\nmode = "nts-pool"\naddress = "nts.example"\n'
                              'count = 3\n')
    members = [s for s in build_specs(config) if s.role == "ntp"]
    ids = [s.worker_id for s in members]
    assert ids == [f"nts-pool:nts.example#{n}" for n in (1, 2, 3)]
    assert len({s.fingerprint for s in members}) == 3
    assert [nts_pool_member(i) for i in ids] == [("nts-pool:nts.example", n) for n in (1, 2, 3)]
    assert nts_pool_member("nts:nts.example") is None
    assert nts_pool_member("pool:p.example/192.0.2.1") is None
    entries = source_set(config, build_specs(config)).sources
    assert [e.name for e in entries] == [f"nts.example#{n}" for n in (1, 2, 3)]


def test_reload_restarts_only_changed_workers() -> None:
    old = build_specs(load_config_text(CONFIG))
    new_text = CONFIG.replace("interval = -2", "interval = -1").replace(
        'address = "127.0.0.1:1123"', 'address = "127.0.0.1:1124"')
    plan = plan_reload(old, build_specs(load_config_text(new_text)))
    assert set(plan.stop) == {"ptp:/dev/ptp1", "ntp:127.0.0.1:1123"}
    assert {s.worker_id for s in plan.start} == {"ptp:/dev/ptp1", "ntp:127.0.0.1:1124"}
    assert set(plan.keep) == {"clock-control", "ptp:/dev/ptp0", "server"}
    assert not plan_reload(old, old).changed


def test_sync_change_restarts_clock_control_only() -> None:
    old = build_specs(load_config_text(CONFIG))
    new = build_specs(load_config_text(CONFIG + "[synchronization]\nminimum-agreeing-sources = 1\n"))
    plan = plan_reload(old, new)
    assert plan.stop == ("clock-control",)


def test_source_set_describes_sources() -> None:
    config = load_config_text(CONFIG)
    message = source_set(config, build_specs(config))
    entries = {e.source_id: e for e in message.sources}
    assert entries["ptp:/dev/ptp1"].poll_log2 == -2 and entries["ptp:/dev/ptp1"].kind == "ptp"
    ntp = entries["ntp:127.0.0.1:1123"]
    assert (ntp.poll_log2, ntp.poll_min, ntp.poll_max) == (4, 4, 10)
