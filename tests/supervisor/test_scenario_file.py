"""`[daemon.simulation] scenario` is read like the configuration: never blocks, names the key."""

import logging
import os
from pathlib import Path

import pytest
from ntpd_py.supervisor.setup import StartupError, _load_world


def test_a_fifo_scenario_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "world.toml"
    os.mkfifo(fifo)
    with pytest.raises(StartupError) as err:
        _load_world(str(fifo), logging.getLogger("t"))
    assert err.value.code == 78
    assert f'[daemon.simulation] scenario = "{fifo}"' in str(err.value)
    assert "FIFO" in str(err.value)


def test_a_missing_scenario_names_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(StartupError) as err:
        _load_world(str(missing), logging.getLogger("t"))
    assert err.value.code == 78
    assert "scenario" in str(err.value) and "no such file" in str(err.value)


def test_a_binary_scenario_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(StartupError) as err:
        _load_world(str(bad), logging.getLogger("t"))
    assert "not valid UTF-8" in str(err.value)
