"""`mode = "sock"` and `mode = "pps"`: ntpd-rs's keys checked with file/line/key errors.

Both sources run (issue #21 stage 2), so valid tables load; the models themselves are
checked directly for what a valid table means.
"""

from __future__ import annotations

import math

import pytest
from ntpd_py.core import config as model
from ntpd_py.core.config import PpsSourceConfig, SockSourceConfig
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError, ConfigIssue


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "ntp.toml")
    return info.value.issues


# ntpd-rs's docs/guide/gps-pps.md examples, verbatim keys
GPS_GUIDE_SOCK = '[[source]]\nmode = "sock"\npath = "/run/ntpd-rs/chrony.ttyAMA0.sock"\nprecision = 1e-3\n'
GPS_GUIDE_PPS = '[[source]]\nmode = "pps"\npath = "/dev/pps0"\nprecision = 1e-7\nperiod = 0.1\n'
OLD_GUIDE_SOCK = '[[source]]\nmode = "sock"\npath = "/run/chrony.ttyAMA0.sock"\nmeasurement_noise_estimate = 1e-6\n'


@pytest.mark.parametrize("text", [GPS_GUIDE_SOCK, OLD_GUIDE_SOCK])
def test_valid_sock_tables_load(text: str) -> None:
    config = load_config_text(text, "ntp.toml")
    (source,) = config.source
    assert isinstance(source, SockSourceConfig)
    assert source.path.endswith(".sock")


def test_a_valid_pps_table_loads() -> None:
    config = load_config_text(GPS_GUIDE_PPS, "ntp.toml")
    (source,) = config.source
    assert isinstance(source, PpsSourceConfig)
    assert (source.path, source.period) == ("/dev/pps0", 0.1)


def test_models_keep_the_values() -> None:
    sock = SockSourceConfig.model_validate(
        {"mode": "sock", "path": "/run/chrony.ttyS0.sock", "precision": 1e-3})
    assert sock.precision_s == 1e-3 and sock.accuracy == 0.0
    old = SockSourceConfig.model_validate(
        {"mode": "sock", "path": "/run/x.sock", "measurement_noise_estimate": 1e-6})
    assert math.isclose(old.precision_s, 1e-3)
    pps = PpsSourceConfig.model_validate(
        {"mode": "pps", "path": "/dev/pps0", "precision": 1e-7, "period": 0.1, "edge": "clear",
         "accuracy": 1e-6})
    assert (pps.period, pps.edge, pps.accuracy, pps.precision_s) == (0.1, "clear", 1e-6, 1e-7)
    assert PpsSourceConfig.model_validate(
        {"mode": "pps", "path": "/dev/pps0", "precision": 1e-7}).period == 1.0


def test_pps_does_not_count_towards_agreeing_sources() -> None:
    pps = PpsSourceConfig.model_validate({"mode": "pps", "path": "/dev/pps0", "precision": 1e-7})
    sock = SockSourceConfig.model_validate({"mode": "sock", "path": "/s", "precision": 1e-3})
    config = model.Config.model_construct(source=[pps, sock])
    assert config.potential_source_count() == 1


@pytest.mark.parametrize(("body", "key", "line", "words"), [
    ('mode = "sock"\npath = "/run/x.sock"\n', "source[0]", None, "missing key 'precision'"),
    ('mode = "sock"\npath = "run/x.sock"\nprecision = 1e-3\n', "source[0].path", 3,
     "absolute path"),
    ('mode = "sock"\nprecision = 1e-3\n', "source[0].path", None, "missing"),
    ('mode = "sock"\npath = "/s"\nprecision = 0.0\n', "source[0].precision", 4, "greater than 0"),
    ('mode = "sock"\npath = "/s"\nprecision = nan\n', "source[0].precision", 4, ""),
    ('mode = "sock"\npath = "/s"\nprecision = "1ms"\n', "source[0].precision", 4, "number"),
    ('mode = "sock"\npath = "/s"\nprecision = 1e-3\naccuracy = -1.0\n', "source[0].accuracy",
     5, "greater than 0"),
    ('mode = "sock"\npath = "/s"\nprecision = 1e-3\nmeasurement_noise_estimate = 1e-6\n',
     "source[0]", None, "not both"),
    ('mode = "sock"\npath = "/s"\nprecision = 1e-3\nperiod = 1.0\n', "source[0].period", 5,
     "unknown key"),
    ('mode = "pps"\npath = "/dev/pps0"\nprecision = 1e-7\nperiod = 0.0\n', "source[0].period",
     5, "greater than 0"),
    ('mode = "pps"\npath = "/dev/pps0"\nprecision = 1e-7\nedge = "both"\n', "source[0].edge",
     5, "assert"),
    ('mode = "pps"\npath = "/dev/pps0"\nmeasurement-noise-estimate = 1e-14\n',
     "source[0].measurement-noise-estimate", 4, "unknown key"),
])
def test_bad_keys_are_named_with_file_and_line(body: str, key: str, line: int | None,
                                               words: str) -> None:
    (issue,) = issues("[[source]]\n" + body)
    assert issue.file == "ntp.toml"
    assert issue.key == key, issue.render()
    if line is not None:
        assert issue.line == line, issue.render()
    assert words in issue.message, issue.render()


def test_a_socket_or_device_path_may_appear_once() -> None:
    text = (GPS_GUIDE_PPS + '[[source]]\nmode = "pps"\npath = "/dev/../dev/pps0"\n'
            'precision = 1e-7\n')
    (issue,) = issues(text)
    assert issue.key == "source[1].path"
    assert "already used by source[0]" in issue.message


def test_every_refclock_mode_is_wired() -> None:
    assert set(model.UNWIRED_MODES) == set()
    assert set(model.UNWIRED_MODES) <= set(model.SUPPORTED_MODES)
