"""The supervisor preloads what the configured roles need, and only that."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from ntpd_py.supervisor.preload import preload_for_roles
preload_for_roles({roles!r}, {simulated!r})
print(json.dumps({{m: m in sys.modules for m in {modules!r}}}))
"""
WATCHED = ["ntpd_py.workers.ptp", "ntpd_py.workers.clock_control", "prometheus_client",
           "http.server", "ssl", "ntpd_py.plumbing.sim_world"]


def _loaded(roles: list[str], simulated: bool) -> dict[str, bool]:
    code = PROBE.format(roles=roles, simulated=simulated, modules=WATCHED)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    loaded: dict[str, bool] = json.loads(out.stdout)
    return loaded


def test_without_metrics_the_http_stack_and_ssl_stay_out() -> None:
    loaded = _loaded(["clock-control", "ptp", "ntp", "server"], simulated=False)
    assert loaded["ntpd_py.workers.ptp"] and loaded["ntpd_py.workers.clock_control"]
    assert not loaded["prometheus_client"] and not loaded["http.server"]
    assert not loaded["ssl"]  # http.client would pull in ssl and libcrypto
    assert not loaded["ntpd_py.plumbing.sim_world"]


def test_metrics_role_and_simulated_clock_load_their_modules() -> None:
    loaded = _loaded(["clock-control", "metrics"], simulated=True)
    assert loaded["prometheus_client"] and loaded["http.server"]
    assert loaded["ntpd_py.plumbing.sim_world"]


def test_the_supervisor_itself_loads_no_http_stack() -> None:
    # Binding the exporter's socket must not drag http.server (and ssl) into the
    # process every child is forked from.
    code = ("import json, sys\n"
            "import ntpd_py.supervisor.cli, ntpd_py.supervisor.daemon, ntpd_py.supervisor.main\n"
            "import ntpd_py.supervisor.setup, ntpd_py.supervisor.metrics_listen\n"
            "print(json.dumps([m for m in ('ssl', 'http.server', 'http.client') "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []
