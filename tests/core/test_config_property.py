"""Arbitrary TOML thrown at the loader gives a Config or a clean ConfigError, never a traceback."""

from __future__ import annotations

import datetime as dt
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.config import Config
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError

KEYS = [
    "source",
    "mode",
    "path",
    "delay",
    "interval",
    "precision",
    "stratum",
    "address",
    "count",
    "ignore",
    "ntp-version",
    "poll-interval-limits",
    "min",
    "max",
    "initial-poll-interval",
    "source-defaults",
    "synchronization",
    "minimum-agreeing-sources",
    "local-stratum",
    "single-step-panic-threshold",
    "startup-step-panic-threshold",
    "forward",
    "backward",
    "accumulated-step-panic-threshold",
    "reference-id",
    "warn-on-jump",
    "algorithm",
    "step-threshold",
    "server",
    "listen",
    "allowlist",
    "denylist",
    "filter",
    "action",
    "accept-ntp-versions",
    "require-nts",
    "rate-limiting-cutoff-ms",
    "observability",
    "log-level",
    "observation-path",
    "observation-permissions",
    "daemon",
    "clock",
    "user",
    "runtime-dir",
    "keyset",
    "nts-ke-server",
]
MODES = ["ptp", "server", "pool", "nts", "nts-pool", "sock", "pps", "gps", ""]

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from([*MODES, "inf", "/dev/ptp0", "0.0.0.0:123", "[::]:123", "10.0.0.0/8"]),
    st.booleans(),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.dates(),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8))


def _tables(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=6),
    )


values = st.recursive(scalars, _tables, max_leaves=25)
documents = st.dictionaries(keys, values, max_size=8)
ptp_like = st.fixed_dictionaries(
    {"mode": st.sampled_from(MODES), "path": st.one_of(st.text(max_size=12), scalars)},
    optional={k: values for k in ("delay", "interval", "precision", "stratum", "bogus")},
)


def _check(text: str) -> None:
    try:
        config = load_config_text(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.render().startswith("fuzz.toml")
    else:
        assert isinstance(config, Config)
        config.warnings()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents)
def test_arbitrary_documents(document: dict[str, Any]) -> None:
    _check(tomli_w.dumps(document))


@settings(max_examples=300, deadline=None)
@given(st.lists(ptp_like, min_size=1, max_size=4), documents)
def test_arbitrary_sources(sources: list[dict[str, Any]], rest: dict[str, Any]) -> None:
    rest = {k: v for k, v in rest.items() if k != "source"}
    _check(tomli_w.dumps({"source": sources, **rest}))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.text(min_size=1, max_size=5))
def test_corrupted_valid_document(position: int, junk: str) -> None:
    text = (
        '[[source]]\nmode = "ptp"\npath = "/dev/ptp0"\nprecision = 1e-7\n'
        "[synchronization]\nminimum-agreeing-sources = 1\n"
        'single-step-panic-threshold = { forward = 10, backward = "inf" }\n'
    )
    position %= len(text) + 1
    _check(text[:position] + junk + text[position:])
