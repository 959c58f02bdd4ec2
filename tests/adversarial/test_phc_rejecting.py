"""A PHC whose every poll is rejected says so: `ntpctl status` and one warning, end to end.

The simulated world's `time-backwards` fault makes the system time go back
between the readings of every PTP_SYS_OFFSET_EXTENDED poll (as a broken
clocksource would). The worker keeps polling, rejects each poll, and reports
state "rejecting" with the reason and the count instead of "running". What it
measured, and the CPU/RSS of the daemon's processes while every poll is
rejected, is recorded (`figures`).
"""

from __future__ import annotations

import time

import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import load_pids, phc_config
from tests.adversarial.load import measure
from tests.integration.daemon import Daemon, wait_for

pytestmark = pytest.mark.integration

SCENARIO = """
[scenario]
name = "phc-time-backwards"
duration = 60
seed = 3

[local-clock]
offset = 0.001

[[source]]
mode = "ptp"
path = "/dev/ptp0"
interval = -2
precision = 5e-8

[source.sim]
noise = 5e-8
time-backwards = 1.0
"""

BODY = phc_config(source_extra="interval = -2\n")


def test_a_phc_whose_polls_are_all_rejected_shows_rejecting_and_warns_once(
        figures: Figures) -> None:
    daemon = Daemon(BODY)
    scenario = daemon.dir / "scenario.toml"
    scenario.write_text(SCENARIO)
    daemon.write_config(BODY, daemon._daemon_table +
                        f'[daemon.simulation]\nscenario = "{scenario}"\n')
    with daemon:
        started_at = time.monotonic()

        def rejecting() -> dict[str, object] | None:
            document = daemon.status() or {}
            for source in document.get("sources", []):
                if source["source_id"] == "ptp:/dev/ptp0" and source["worker_state"] == (
                        "rejecting"):
                    return dict(source)
            return None

        source = wait_for(rejecting, 30, "the PHC source to say rejecting")
        rejecting_after_s = time.monotonic() - started_at
        assert "system time went backwards between readings" in str(source["detail"])
        assert "polls in a row)" in str(source["detail"])
        pids = load_pids(daemon, {"PTP worker": "ptp:/dev/ptp0"})
        during = measure(pids, 1.0)
        time.sleep(2)  # with the measurement: 12 more rejected polls at 4 per second
        text = daemon.ctl("status").stdout
        counters = (rejecting() or {}).get("counters", {})
        log = daemon.log()
        warnings = [line for line in log.splitlines() if "rejecting every poll" in line]
        clock = (daemon.status() or {}).get("clock", {})
        assert isinstance(counters, dict)
        figures.record(
            scenario="a PHC whose every poll is rejected",
            attacker="hostile or broken time source (system time goes back within each poll)",
            load=f"a PHC polled every 0.25 s (interval = -2) for "
                 f"{time.monotonic() - started_at:.0f} s, each poll inconsistent (simulated)",
            outcome=f"source said rejecting after {rejecting_after_s:.1f} s; "
                    f"{counters.get('error:stepped', 0)} polls rejected, "
                    f"{counters.get('samples')} samples; {len(warnings)} warning(s) logged; "
                    f"synchronized: {bool(clock.get('synchronized'))}",
            after=during)
        assert "rejecting: system time went backwards between readings" in text, text
        assert isinstance(counters, dict) and counters.get("error:stepped", 0) >= 12
        assert counters.get("samples") == 0
        assert len(warnings) == 1, warnings  # once, then at most once a minute
        assert "WARNING" in warnings[0]
        assert not (daemon.status() or {}).get("clock", {}).get("synchronized")
