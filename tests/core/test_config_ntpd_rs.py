"""ntpd-rs configuration snippets: what ntpd-rs accepts works here, what it refuses is refused.

One table per outcome. Each row is a snippet as an ntpd-rs user writes it
(docs/man/ntp.toml.5.md, the shipped example files, a chrony migrant's
habits) and what ntpd-py must make of it: accepted with the same meaning,
refused with an error naming file, key and value, or accepted with a
warning that names a key ntpd-py ignores.
"""

from __future__ import annotations

import pytest
from ntpd_py.core.config import Config, PoolSourceConfig, ServerSourceConfig, StepThreshold
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError

FILE = "ntp.toml"

# ntpd-rs's own default ntp.toml (its repository root), as shipped.
NTPD_RS_DEFAULT = """\
[observability]
# Other values include trace, debug, warn and error
log-level = "info"
observation-path = "/var/run/ntpd-rs/observe"

# uses the pool.ntp.org project servers
[[source]]
mode = "pool"
address = "ntpd-rs.pool.ntp.org"
count = 4

[synchronization]
single-step-panic-threshold = 1800
startup-step-panic-threshold = { forward="inf", backward = 1800 }
#accumulated-step-panic-threshold = 1800
#minimum-agreeing-sources = 3
"""


def load(text: str) -> Config:
    return load_config_text(text, FILE)


def _ntp(config: Config, index: int = 0) -> ServerSourceConfig | PoolSourceConfig:
    source = config.source[index]
    assert isinstance(source, ServerSourceConfig | PoolSourceConfig)
    return source


def test_ntpd_rs_default_file_is_accepted_without_warnings_about_keys() -> None:
    config = load(NTPD_RS_DEFAULT)
    assert config.observability.observation_path == "/var/run/ntpd-rs/observe"
    assert config.synchronization.startup_step_panic_threshold == StepThreshold(
        forward=None, backward=1800.0)
    assert config.ignored_keys() == []


# -- accepted, with ntpd-rs's meaning ------------------------------------------------------

SERVER = '[[source]]\nmode = "server"\naddress = "192.0.2.1"\n'


def _poll(config: Config) -> tuple[int, int, int]:
    source = _ntp(config)
    limits = source.poll_limits(config.source_defaults)
    return limits.min, limits.max, source.initial_poll(config.source_defaults)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        # chrony's `minpoll 6`, without initial-poll-interval: initial 4 is clamped up to 6
        ("[source-defaults]\npoll-interval-limits = { min = 6, max = 10 }\n" + SERVER, (6, 10, 6)),
        ("[source-defaults]\npoll-interval-limits = { min = 0, max = 3 }\n" + SERVER, (0, 3, 3)),
        # each side of a source's own limits is optional; the other comes from the defaults
        (SERVER + "poll-interval-limits = { min = 6 }\n", (6, 10, 6)),
        (SERVER + "poll-interval-limits = { max = 5 }\n", (4, 5, 4)),
        (SERVER + "poll-interval-limits = {}\n", (4, 10, 4)),
        (SERVER + "poll-interval-limits = { max = 8 }\ninitial-poll-interval = 9\n", (4, 8, 8)),
        ("[source-defaults]\ninitial-poll-interval = 7\n"
         + SERVER + "poll-interval-limits = { min = 2, max = 3 }\n", (2, 3, 3)),
    ],
)
def test_poll_interval_snippets(snippet: str, expected: tuple[int, int, int]) -> None:
    assert _poll(load(snippet)) == expected


@pytest.mark.parametrize(
    ("key", "value", "forward", "backward"),
    [
        ("startup-step-panic-threshold", "{ backward = 1800 }", None, 1800.0),
        ("startup-step-panic-threshold", "{ forward = 10 }", 10.0, None),
        ("single-step-panic-threshold", "{ backward = 1800 }", None, 1800.0),
        ("single-step-panic-threshold", "{ forward = 5 }", 5.0, None),
        ("single-step-panic-threshold", "{}", None, None),
        ("startup-step-panic-threshold", '{ forward = "inf", backward = 86400 }', None, 86400.0),
    ],
)
def test_panic_threshold_missing_side_is_unlimited(
    key: str, value: str, forward: float | None, backward: float | None
) -> None:
    sync = load(f"[synchronization]\n{key} = {value}\n").synchronization
    threshold = getattr(sync, key.replace("-", "_"))
    assert threshold == StepThreshold(forward=forward, backward=backward)
    if forward is None:
        assert threshold.allows(1e9)
    if backward is None:
        assert threshold.allows(-1e9)


@pytest.mark.parametrize("count", [1, 64, 65, 200])
def test_pool_count_has_no_upper_bound(count: int) -> None:
    config = load(f'[[source]]\nmode = "pool"\naddress = "pool.example"\ncount = {count}\n')
    source = config.source[0]
    assert isinstance(source, PoolSourceConfig) and source.count == count
    big = [w for w in config.warnings() if "count" in w]
    assert bool(big) == (count > 64)


@pytest.mark.parametrize(
    "address",
    ["ntpd-rs.pool.ntp.org", "time.example:123", "192.0.2.1", "[2001:db8::1]:123", "2001:db8::1",
     "localhost", "time_server.lan."],
)
def test_addresses_ntpd_rs_accepts(address: str) -> None:
    config = load(f'[[source]]\nmode = "server"\naddress = "{address}"\n')
    assert _ntp(config).address == address


def test_filter_lists_ntpd_rs_accepts() -> None:
    config = load('[[server]]\nlisten = "0.0.0.0:123"\n'
                  '[server.denylist]\nfilter = ["192.0.2.0/24", "2001:db8::/32"]\naction = "deny"\n'
                  '[server.allowlist]\nfilter = []\naction = "ignore"\n')
    server = config.server[0]
    assert server.denylist is not None and len(server.denylist.networks()) == 2
    assert server.allowlist is not None and server.allowlist.filter == []


# -- refused, as ntpd-rs refuses them: file, key and value named ------------------------------


@pytest.mark.parametrize(
    ("snippet", "key", "value", "message"),
    [
        ('[[source]]\nmode = "server"\naddress = ":invalid:ipv6:123"\n',
         "source[0].address", '":invalid:ipv6:123"', "not a valid IPv6 address"),
        ('[[source]]\nmode = "pool"\naddress = "bad host!"\n',
         "source[0].address", '"bad host!"', "neither an IP address nor a valid host name"),
        ('[[server]]\nlisten = "0.0.0.0:123"\n[server.denylist]\naction = "deny"\n',
         "server[0].denylist.filter", None, "missing mandatory key"),
        ('[[server]]\nlisten = "0.0.0.0:123"\n[server.allowlist]\naction = "ignore"\n',
         "server[0].allowlist.filter", None, "missing mandatory key"),
        ('[[server]]\nlisten = "0.0.0.0:123"\n[server.denylist]\nfilter = ["192.0.2.7"]\n'
         'action = "deny"\n',
         "server[0].denylist.filter", '["192.0.2.7"]', '"192.0.2.7/32"'),
        ('[[server]]\nlisten = "0.0.0.0:123"\n[server.allowlist]\nfilter = ["2001:db8::1"]\n'
         'action = "deny"\n',
         "server[0].allowlist.filter", '["2001:db8::1"]', '"2001:db8::1/128"'),
        ('[[source]]\nmode = "csptp"\naddress = "ptp.example"\n',
         "source[0].mode", '"csptp"', "not supported yet"),
        ('[[source]]\nmode = "server"\naddress = "192.0.2.1"\n'
         "poll-interval-limits = { min = 11 }\n",
         "source[0].poll-interval-limits", None, "min (11) must not be greater than max (10)"),
        ('[[source]]\nmode = "server"\naddress = "192.0.2.1"\n'
         "poll-interval-limits = { min = 4, sideways = 1 }\n",
         "source[0].poll-interval-limits.sideways", "1", "unknown key"),
    ],
)
def test_refused_like_ntpd_rs(snippet: str, key: str, value: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(snippet)
    issues = info.value.issues
    assert len(issues) == 1, [i.render() for i in issues]
    issue = issues[0]
    assert issue.key == key
    if value is not None:
        assert issue.value == value
    assert message in issue.message
    rendered = issue.render()
    assert rendered.startswith(f"{FILE}:") and key in rendered


# -- accepted but ignored: a warning names the key --------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "named"),
    [
        ("[observability]\nansi-colors = true\n", "[observability] ansi-colors"),
        ('[observability]\nlog-path-metrics-exporter = "/var/log/ntpd-rs/metrics.log"\n',
         "[observability] log-path-metrics-exporter"),
        (SERVER + 'ntp-version = "auto"\n', 'source[0].ntp-version = "auto"'),
        ('[[source]]\nmode = "pool"\naddress = "pool.example"\nntp-version = "auto"\n',
         'source[0].ntp-version = "auto"'),
        ('[[source]]\nmode = "nts"\naddress = "nts.example"\nenable-srv-resolution = true\n',
         "source[0].enable-srv-resolution = true"),
        ('[[source]]\nmode = "nts-pool"\naddress = "pool.example"\ncount = 2\n'
         'enable-srv-resolution = true\n', "source[0].enable-srv-resolution = true"),
    ],
)
def test_ignored_keys_are_named_in_a_warning(snippet: str, named: str) -> None:
    config = load(snippet)
    ignored = config.ignored_keys()
    assert len(ignored) == 1 and ignored[0].startswith(named)
    assert ignored[0] in config.warnings()


@pytest.mark.parametrize(
    "snippet",
    [
        # what ntpd-py does anyway: no warning
        "[observability]\nansi-colors = false\n",
        SERVER + "ntp-version = 4\n",
        # implemented: a step is logged as a warning (true) or as information (false)
        "[synchronization]\nwarn-on-jump = false\n",
        "[synchronization]\nwarn-on-jump = true\n",
        '[[source]]\nmode = "nts"\naddress = "nts.example"\nenable-srv-resolution = false\n',
    ],
)
def test_keys_that_act_as_in_ntpd_rs_do_not_warn(snippet: str) -> None:
    assert load(snippet).ignored_keys() == []


def test_unused_algorithm_keys_are_warned_about_only_when_set() -> None:
    from ntpd_py.core.config_load import load_config_text

    plain = load_config_text("[synchronization.algorithm]\nstep-threshold = 0.01\n", "f.toml")
    assert not [n for n in plain.warnings() if "is ignored" in n]
    text = ("[synchronization.algorithm]\nsteer-offset-threshold = 3.0\n"
            "precision-hysteresis = 8\n")
    notes = load_config_text(text, "f.toml").warnings()
    assert any("steer-offset-threshold = 3.0 is ignored" in n for n in notes), notes
    assert any("precision-hysteresis = 8 is ignored" in n for n in notes), notes
