"""ntpctl's peek at two keys finds the socket the full configuration model names."""

from __future__ import annotations

from pathlib import Path

import pytest
from ntpd_py.core.errors import ConfigError
from ntpd_py.supervisor.config_file import load_config_file, peek_control_paths

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
BODIES = [
    "",
    '[daemon]\nruntime-dir = "/tmp/x/run"\n',
    '[observability]\nobservation-path = "/var/run/ntpd-rs/observe"\n',
    '[observability]\nobservation-path = "/srv/ctl.sock"\n[daemon]\nruntime-dir = "/srv/run"\n',
    '[observability]\nobservation-path = ""\n[daemon]\nruntime-dir = "/srv/run/"\n',
]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_examples(path: Path) -> None:
    config = load_config_file(str(path))
    assert peek_control_paths(str(path)) == (config.control_socket_path(),
                                             config.daemon.runtime_dir)


@pytest.mark.parametrize("body", BODIES)
def test_variants(write_config, body: str) -> None:
    path = str(write_config(body))
    config = load_config_file(path)
    assert peek_control_paths(path) == (config.control_socket_path(),
                                        config.daemon.runtime_dir)


@pytest.mark.parametrize("body", [
    "[daemon\n",
    '[daemon]\nruntime-dir = "relative"\n',
    "[daemon]\nruntime-dir = 3\n",
    "observability = 3\n",
    "[observability]\nobservation-path = 1\n",
])
def test_a_problem_in_those_keys_is_the_full_loaders_error(write_config, body: str) -> None:
    path = str(write_config(body))
    with pytest.raises(ConfigError) as full:
        load_config_file(path)
    with pytest.raises(ConfigError) as peeked:
        peek_control_paths(path)
    assert [i.render() for i in peeked.value.issues] == [i.render() for i in full.value.issues]


def test_other_mistakes_are_left_to_validate(write_config) -> None:
    path = str(write_config('[daemon]\nruntime-dir = "/srv/run"\n[bogus]\n'))
    with pytest.raises(ConfigError):
        load_config_file(path)
    assert peek_control_paths(path) == ("/srv/run/observe", "/srv/run")
