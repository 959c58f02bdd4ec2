"""Scenario files: the shipped ones load, and mistakes are errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.sim.scenario import SimPtpSource, SimServerSource, load_scenario_text

SCENARIOS = Path(__file__).resolve().parents[3] / "deploy" / "scenarios"
MINIMAL = """
[scenario]
name = "t"
duration = 60

[[source]]
mode = "ptp"
path = "/dev/ptp0"
"""


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_scenario_text(text, "s.toml")
    return [i.render() for i in caught.value.issues]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    scenario = load_scenario_text(path.read_text(), str(path))
    assert scenario.scenario.name == path.stem


def test_expected_scenarios_are_shipped() -> None:
    names = {p.stem for p in SCENARIOS.glob("*.toml")}
    assert {"kvm-guest", "kvm-guest-1us", "aws-ena", "ntp-only", "cold-start", "panic",
            "ntp-lan-3h"} <= names
    assert {"kvm-guest-rl", "kvm-guest-rl-1us", "kvm-guest-asym", "aws-ena-basic",
            "ptp-kvm-precise", "noisy-host"} <= names  # issue 18's reading-level models


def test_minimal_scenario_and_defaults() -> None:
    s = load_scenario_text(MINIMAL)
    src = s.source[0]
    assert isinstance(src, SimPtpSource) and src.precision == 1e-9 and src.sim.noise == 0.0
    assert s.synchronization.minimum_agreeing_sources == 3  # ntpd-py's default
    assert s.measure_from_s(60.0) == 30.0
    assert s.scenario.start_ns() == 1_768_435_200 * 10**9  # 2026-01-15T00:00:00Z


def test_server_source_keeps_ntpd_py_keys() -> None:
    s = load_scenario_text(MINIMAL.replace('mode = "ptp"\npath = "/dev/ptp0"',
                                           'mode = "server"\naddress = "192.0.2.1:123"\n'
                                           'poll-interval-limits = { min = 4, max = 6 }\n'
                                           '[source.sim]\nerror = 0.05'))
    src = s.source[0]
    assert isinstance(src, SimServerSource) and src.sim.error == 0.05
    assert src.poll_limits(s.source_defaults).max == 6


def test_unknown_key_names_file_line_and_key() -> None:
    found = issues(MINIMAL + "[source.sim]\nnoyse = 1e-9\n")
    assert found == ["s.toml:10: source[0].sim.noyse: unknown key"]


def test_unknown_key_in_an_ntpd_py_table() -> None:
    found = issues(MINIMAL + "[synchronization]\nminimum-agreing-sources = 1\n")
    assert any("synchronization.minimum-agreing-sources: unknown key" in f for f in found)


@pytest.mark.parametrize(("extra", "key"), [
    ('[local-clock]\nfrequency = "fast"\n', "local-clock.frequency"),
    ("[local-clock]\nfrequency = 1.0\n", "local-clock.frequency"),
    ("[source.sim]\nread-failure = 2.0\n", "source[0].sim.read-failure"),
])
def test_bad_values(extra: str, key: str) -> None:
    assert any(key in f for f in issues(MINIMAL + extra))


def test_missing_and_bad_tables() -> None:
    assert any("scenario" in f and "missing" in f for f in issues('[[source]]\nmode = "ptp"\npath = "/dev/ptp0"\n'))
    assert any("source" in f for f in issues('[scenario]\nname = "x"\nduration = 1\n'))
    assert any("mode" in f for f in issues(MINIMAL.replace('"ptp"', '"pool"')))
    assert any("not valid TOML" in f for f in issues("[scenario\n"))
    assert any("twice" in f for f in issues(MINIMAL + '[[source]]\nmode = "ptp"\npath = "/dev/ptp0"\n'))
    assert any("start-time" in f for f in issues(MINIMAL.replace("duration = 60", 'duration = 60\nstart-time = "yesterday"')))
