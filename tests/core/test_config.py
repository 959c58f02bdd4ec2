"""The configuration model: ntpd-rs keys, defaults, and every rejection with file/line/key/value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ntpd_py.core.config import (
    Config,
    PoolSourceConfig,
    PtpSourceConfig,
    ServerSourceConfig,
    StepThreshold,
)
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError, ConfigIssue

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"

# The example block of reference/ptp-time-sources.md, verbatim.
SEED_PTP_BLOCK = """\
[[source]]
mode = "ptp"
path = "/dev/ptp0"  # or any other PTP device file; mandatory parameter
delay = 0.00004     # optional, defaults to 0.0; may be used to set the delay to something close to the host's real root delay
interval = 2        # optional, defaults to 0 (1 second)
precision = 1e-7    # optional, defaults to 1 nanosecond
stratum = 1         # optional, defaults to 0; may be used to set the stratum to a value which
                    # makes more sense in the context of the network in which ntpd-rs operates.
"""


def load(text: str) -> Config:
    return load_config_text(text, "test.toml")


def errors(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert info.value.issues, "a ConfigError must carry at least one issue"
    return info.value.issues


def one_error(text: str) -> ConfigIssue:
    issues = errors(text)
    assert len(issues) == 1, [i.render() for i in issues]
    return issues[0]


PTP = '[[source]]\nmode = "ptp"\npath = "/dev/ptp0"\n'


# -- the PTP source -------------------------------------------------------------------


def test_seed_example_block_parses_to_exactly_its_values() -> None:
    config = load(SEED_PTP_BLOCK)
    (source,) = config.source
    assert isinstance(source, PtpSourceConfig)
    assert source.mode == "ptp"
    assert source.path == "/dev/ptp0"
    assert source.delay == 0.00004
    assert source.interval == 2
    assert source.interval_s == 4.0
    assert source.precision == 1e-7
    assert source.stratum == 1


def test_ptp_defaults() -> None:
    (source,) = load(PTP).source
    assert isinstance(source, PtpSourceConfig)
    assert source.delay == 0.0
    assert source.interval == 0
    assert source.interval_s == 1.0
    assert source.precision == 1e-9
    assert source.stratum == 0


def test_ptp_path_is_mandatory() -> None:
    issue = one_error('[[source]]\nmode = "ptp"\ninterval = 1\n')
    assert issue.key == "source[0].path"
    assert issue.line == 1
    assert "missing mandatory key" in issue.message
    assert issue.file == "test.toml"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("delay", "-0.001", "at least 0"),
        ("delay", "16", "less than 16"),
        ("delay", "16.5", "less than 16"),
        ("delay", '"1ms"', "expected a number"),
        ("interval", "-8", "at least -7"),
        ("interval", "18", "at most 17"),
        ("interval", "1.5", "expected an integer"),
        ("interval", '"1"', "expected an integer"),
        ("interval", "true", "expected an integer"),
        ("precision", "0", "greater than 0"),
        ("precision", "-1e-9", "greater than 0"),
        ("precision", "inf", "finite"),
        ("precision", "nan", "finite"),
        ("precision", '"1e-9"', "expected a number"),
        ("stratum", "-1", "at least 0"),
        ("stratum", "16", "at most 15"),
        ("stratum", "1.0", "expected an integer"),
        ("path", "5", "expected a string"),
        ("path", '"ptp0"', "absolute path"),
    ],
)
def test_ptp_key_rejections(key: str, value: str, expected: str) -> None:
    if key == "path":
        text, line = f'[[source]]\nmode = "ptp"\npath = {value}\n', 3
    else:
        text, line = PTP + f"{key} = {value}\n", 4
    issue = one_error(text)
    assert issue.key == f"source[0].{key}"
    assert expected in issue.message, issue.render()
    assert issue.value is not None
    assert issue.line == line
    assert issue.render().startswith(f"test.toml:{line}: source[0].{key} = ")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("delay", "15.999"),
        ("interval", "-7"),
        ("interval", "17"),
        ("stratum", "15"),
        ("precision", "1"),
        ("delay", "0"),
    ],
)
def test_ptp_boundary_values_accepted(key: str, value: str) -> None:
    (source,) = load(PTP + f"{key} = {value}\n").source
    assert math.isclose(float(getattr(source, key)), float(value))


def test_unknown_key_names_file_line_key_value_and_suggestion() -> None:
    issue = one_error(PTP + "precison = 1e-7\n")
    assert issue.key == "source[0].precison"
    assert issue.line == 4
    assert issue.value == "1e-07"
    assert "unknown key" in issue.message and "'precision'" in issue.message
    assert issue.render() == f"test.toml:4: source[0].precison = 1e-07: {issue.message}"


def test_duplicate_phc_path_rejected_even_when_spelled_differently() -> None:
    issue = one_error(PTP + '[[source]]\nmode = "ptp"\npath = "/dev//ptp0"\n')
    assert issue.key == "source[1].path"
    assert issue.line == 6
    assert "duplicate PHC path" in issue.message and "source[0]" in issue.message


def test_duplicate_reported_with_other_errors() -> None:
    issues = errors(PTP + "stratum = 99\n" + PTP)
    keys = {i.key for i in issues}
    assert keys == {"source[0].stratum", "source[1].path"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[[source]\nmode = 1\n", 1),
        ('a = "unterminated\n', 1),
        ("[synchronization]\nx = 1\nx = 2\n", 3),
        ("= 3\n", 1),
    ],
)
def test_broken_toml(text: str, line: int) -> None:
    issue = one_error(text)
    assert "not valid TOML" in issue.message
    assert issue.line == line
    assert issue.render().startswith(f"test.toml:{line}: not valid TOML")


# -- other source modes -----------------------------------------------------------------


def test_server_and_pool_sources_with_defaults() -> None:
    config = load(
        '[[source]]\nmode = "server"\naddress = "ntp.example.com"\n'
        '[[source]]\nmode = "pool"\naddress = "pool.example.com:1123"\n'
        'ignore = ["192.0.2.1"]\n'
    )
    server, pool = config.source
    assert isinstance(server, ServerSourceConfig) and isinstance(pool, PoolSourceConfig)
    assert server.host_port() == ("ntp.example.com", 123)
    assert pool.host_port() == ("pool.example.com", 1123)
    assert pool.count == 4
    assert server.poll_limits(config.source_defaults).min == 4
    assert server.poll_limits(config.source_defaults).max == 10
    assert server.initial_poll(config.source_defaults) == 4
    assert config.potential_source_count() == 5


def test_ipv6_addresses() -> None:
    config = load(
        '[[source]]\nmode = "server"\naddress = "[::1]:1234"\n'
        '[[source]]\nmode = "server"\naddress = "::1"\n'
    )
    assert [s.host_port() for s in config.source] == [("::1", 1234), ("::1", 123)]


def test_nts_source_is_accepted_by_run() -> None:
    config = load('[[source]]\nmode = "nts"\naddress = "nts.example.com"\n')
    assert config.source[0].mode == "nts"


def test_nts_pool_is_accepted_by_run() -> None:
    config = load('[[source]]\nmode = "nts-pool"\naddress = "nts.example.com"\ncount = 3\n')
    assert config.source[0].mode == "nts-pool"
    assert config.potential_source_count() == 3


def test_unknown_and_missing_mode() -> None:
    issues = errors('[[source]]\nmode = "gps"\n[[source]]\naddress = "x"\n')
    assert [i.key for i in issues] == ["source[0].mode", "source[1]"]
    assert "unknown mode" in issues[0].message and "ptp" in issues[0].message
    assert "missing key 'mode'" in issues[1].message


def test_ntpv5_is_refused() -> None:
    issue = one_error('[[source]]\nmode = "server"\naddress = "a"\nntp-version = 5\n')
    assert "NTPv5" in issue.message


def test_poll_limits_checked() -> None:
    issue = one_error(
        "[source-defaults]\npoll-interval-limits = { min = 8, max = 6 }\n"
        "initial-poll-interval = 7\n"
    )
    assert "min (8) must not be greater than max (6)" in issue.message
    # An initial interval outside the limits is clamped into them, as ntpd-rs does.
    config = load('[source-defaults]\ninitial-poll-interval = 12\n'
                  '[[source]]\nmode = "server"\naddress = "192.0.2.1"\n')
    assert config.source[0].initial_poll(config.source_defaults) == 10  # type: ignore[union-attr]


# -- synchronization, server, observability, daemon -------------------------------------------


def test_synchronization_defaults_match_ntpd_rs() -> None:
    sync = load("").synchronization
    assert sync.minimum_agreeing_sources == 3
    assert sync.single_step_panic_threshold == StepThreshold(forward=1000.0, backward=1000.0)
    assert sync.startup_step_panic_threshold == StepThreshold(forward=None, backward=86400.0)
    assert sync.accumulated_step_panic_threshold is None
    assert sync.local_stratum == 16
    assert sync.reference_id == "XNON"
    assert sync.warn_on_jump is True
    assert sync.algorithm.step_threshold == 0.010
    assert sync.algorithm.maximum_frequency_steer == 495e-6
    assert sync.algorithm.delay_outlier_threshold == 5.0


@pytest.mark.parametrize(
    ("value", "forward", "backward"),
    [
        ("10", 10.0, 10.0),
        ('"inf"', None, None),
        ('{ forward = "inf", backward = 5 }', None, 5.0),
        ('{ forward = 1.5, backward = "inf" }', 1.5, None),
    ],
)
def test_panic_threshold_forms(value: str, forward: float | None, backward: float | None) -> None:
    sync = load(f"[synchronization]\nsingle-step-panic-threshold = {value}\n").synchronization
    assert sync.single_step_panic_threshold == StepThreshold(forward=forward, backward=backward)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-1", "non-negative"),
        ('"forever"', '"inf"'),
        ("{ forward = 1, backward = 2, sideways = 3 }", "unknown key"),
        ('{ forward = "soon" }', '"inf"'),
        ("true", "seconds"),
    ],
)
def test_panic_threshold_rejections(value: str, expected: str) -> None:
    issue = one_error(f"[synchronization]\nsingle-step-panic-threshold = {value}\n")
    assert issue.key == "synchronization.single-step-panic-threshold"
    assert issue.line == 2
    assert expected in issue.message


def test_accumulated_threshold_zero_means_disabled() -> None:
    sync = load("[synchronization]\naccumulated-step-panic-threshold = 0\n").synchronization
    assert sync.accumulated_step_panic_threshold is None
    sync = load("[synchronization]\naccumulated-step-panic-threshold = 60\n").synchronization
    assert sync.accumulated_step_panic_threshold == 60.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "[synchronization]\nminimum-agreeing-sources = 0\n",
            "synchronization.minimum-agreeing-sources",
        ),
        ("[synchronization]\nlocal-stratum = 17\n", "synchronization.local-stratum"),
        ('[synchronization]\nreference-id = "TOOLONG"\n', "synchronization.reference-id"),
        (
            "[synchronization.algorithm]\nstep-threshold = -1\n",
            "synchronization.algorithm.step-threshold",
        ),
        (
            "[synchronization.algorithm]\nmaximum-frequency-steer = 0.01\n",
            "synchronization.algorithm.maximum-frequency-steer",
        ),
        ('[observability]\nlog-level = "loud"\n', "observability.log-level"),
        (
            '[observability]\nmetrics-exporter-listen = "localhost"\n',
            "observability.metrics-exporter-listen",
        ),
        (
            "[observability]\nobservation-permissions = 0o1777\n",
            "observability.observation-permissions",
        ),
        ('[daemon]\nclock = "real"\n', "daemon.clock"),
        ('[daemon]\nruntime-dir = "run"\n', "daemon.runtime-dir"),
        ('[daemon]\nusr = "x"\n', "daemon.usr"),
        ('[[server]]\nlisten = "0.0.0.0"\n', "server[0].listen"),
        (
            '[[server]]\nlisten = "0.0.0.0:123"\naccept-ntp-versions = [2]\n',
            "server[0].accept-ntp-versions[0]",
        ),
        ('[[server]]\nlisten = "0.0.0.0:123"\nrequire-nts = "always"\n', "server[0].require-nts"),
        (
            '[[server]]\nlisten = "0.0.0.0:123"\ndenylist = { filter = ["nope"], action = "deny" }\n',
            "server[0].denylist.filter",
        ),
        (
            '[[server]]\nlisten = "0.0.0.0:123"\nallowlist = { filter = [], action = "drop" }\n',
            "server[0].allowlist.action",
        ),
        ("[[server]]\nrate-limiting-cutoff-ms = 10\n", "server[0].listen"),
        ("[synchronisation]\n", "synchronisation"),
        ("source = 3\n", "source"),
    ],
)
def test_other_rejections_name_the_key(text: str, key: str) -> None:
    issue = one_error(text)
    assert issue.key == key, issue.render()
    assert issue.line is not None


def test_every_nts_setting_runs() -> None:
    load('[keyset]\nkey-storage-path = "/x"\n[[nts-ke-server]]\nlisten = "0.0.0.0:4460"\n'
         'certificate-chain-path = "/c.pem"\nprivate-key-path = "/k.pem"\n'
         '[[source]]\nmode = "nts-pool"\naddress = "pool.example.org"\n')


def test_server_defaults() -> None:
    (server,) = load('[[server]]\nlisten = "[::]:123"\n').server
    assert server.socket_addr() == ("::", 123)
    assert server.rate_limiting_cache_size == 0
    assert server.rate_limiting_cutoff_ms == 0
    assert server.accept_ntp_versions == [3, 4]
    assert server.allowlist is None and server.denylist is None


def test_daemon_and_observability_defaults() -> None:
    config = load("")
    assert config.daemon.user == "ntpd-py" and config.daemon.group == "ntpd-py"
    assert config.daemon.runtime_dir == "/run/ntpd-py"
    assert config.daemon.state_dir == "/var/lib/ntpd-py"
    assert config.daemon.clock == "system"
    # Off unless set (ntpd-rs's exporter is a separate service, off by default).
    assert config.observability.metrics_exporter_listen is None
    on = load('[observability]\nmetrics-exporter-listen = "127.0.0.1:9975"\n')
    assert on.observability.metrics_exporter_listen == "127.0.0.1:9975"
    assert config.control_socket_path() == "/run/ntpd-py/observe"


def test_every_error_reported_at_once() -> None:
    issues = errors(PTP + "stratum = 99\nprecision = 0\n[daemon]\nclock = 3\n[bogus]\n")
    assert {i.key for i in issues} == {
        "source[0].stratum",
        "source[0].precision",
        "daemon.clock",
        "bogus",
    }


# -- warnings -------------------------------------------------------------------------


def test_warning_fewer_sources_than_minimum() -> None:
    config = load('[[source]]\nmode = "server"\naddress = "a"\n')
    (warning,) = config.warnings()
    assert "minimum-agreeing-sources = 3" in warning and "1 potential" in warning


def test_warning_ptp_only_with_too_high_minimum() -> None:
    config = load(PTP)
    (warning,) = config.warnings()
    assert "PTP-only" in warning and "set minimum-agreeing-sources = 1" in warning
    assert load(PTP + "[synchronization]\nminimum-agreeing-sources = 1\n").warnings() == []


def test_warning_no_sources() -> None:
    assert "no [[source]]" in load("").warnings()[0]


# -- shipped examples -------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_examples_are_valid(path: Path) -> None:
    config = load_config_text(path.read_text(), str(path))
    assert config.source, f"{path.name} configures no source"
    assert config.warnings() == []


def test_expected_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.toml")}
    assert {"ntp.toml", "kvm-guest.toml", "aws-ena.toml", "server.toml"} <= names


def test_kvm_and_aws_examples_hold_their_phcs() -> None:
    kvm = load_config_text((EXAMPLES / "kvm-guest.toml").read_text())
    assert [s.path for s in kvm.ptp_sources()] == ["/dev/ptp_kvm"]
    aws = load_config_text((EXAMPLES / "aws-ena.toml").read_text())
    assert [s.path for s in aws.ptp_sources()] == ["/dev/ptp0", "/dev/ptp1"]


# -- hostile files (issue #17: a deep file raised RecursionError in validate) -----------


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 5000 + "]" * 5000,
        "a = " + "{b = " * 5000 + "1" + "}" * 5000,
        "[daemon]\nuser = " + "[" * 40 + "1" + "]" * 40,
        "source = " + "[{b = " * 400 + "1" + "}]" * 400,
    ],
    ids=["arrays-5000", "inline-tables-5000", "arrays-40-in-a-key", "mixed-400"],
)
def test_deep_nesting_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "deep.toml")
    assert len(info.value.issues) == 1
    assert "nested more than 32 levels deep" in info.value.issues[0].render()


def test_nesting_within_the_limit_is_validated_normally() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("[daemon]\nuser = " + "[" * 10 + "1" + "]" * 10, "ok.toml")
    assert "daemon.user" in info.value.issues[0].render()


def test_a_huge_value_is_shown_cut() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f'[daemon]\nuser = ["{"x" * 100_000}"]', "big.toml")
    rendered = info.value.issues[0].render()
    assert "daemon.user" in rendered and len(rendered) < 400


def test_too_many_values_is_one_config_error() -> None:
    # 250 000 unknown keys took 17 s and 480 MB to explain one by one
    text = "".join(f"k{i} = {i}\n" for i in range(25_000))
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "many.toml")
    assert len(info.value.issues) == 1
    assert "more than 20000 keys and values" in info.value.issues[0].render()
