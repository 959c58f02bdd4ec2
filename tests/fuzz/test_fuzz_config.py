"""Bounded fuzzing of the configuration loader (hypothesis, in the default test run).

Whatever a file holds — arbitrary text or bytes, nesting thousands deep,
example configurations with values swapped for arbitrary TOML values or
with their text cut and spliced — loading it gives a Config or a ConfigError
with short, rendered issues; nothing else (issue #17: a deep file raised an
uncaught RecursionError in `validate`, and SIGHUP with it stopped the daemon).
Every crash found here becomes a regression test in tests/core/test_config*.py.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.config import Config
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.errors import ConfigError
from ntpd_py.supervisor.config_file import load_config_file

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
EXAMPLE_TEXTS = [p.read_text() for p in sorted(EXAMPLES.glob("*.toml"))]
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHORT = settings(FUZZ, max_examples=60)


def _check_outcome(load: Any, *args: Any) -> None:
    try:
        result = load(*args)
    except ConfigError as exc:
        assert exc.issues, "a ConfigError must name at least one issue"
        for issue in exc.issues:
            text = issue.render()
            assert isinstance(text, str) and 0 < len(text) < 2000, text[:300]
        return
    assert isinstance(result, Config)


@FUZZ
@given(st.text(max_size=2000))
def test_arbitrary_text(text: str) -> None:
    _check_outcome(load_config_text, text, "fuzz.toml")


@SHORT
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_through_the_file_loader(data: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        os.write(fd, data)
        os.close(fd)
        _check_outcome(load_config_file, path)
    finally:
        os.unlink(path)


@SHORT
@given(
    depth=st.integers(1, 5000),
    opener=st.sampled_from(["[", "{a = ", "[{b = "]),
    key=st.sampled_from(["x", "source", "daemon.user", "observability.log-level",
                         "synchronization.minimum-agreeing-sources"]),
)
def test_deep_nesting(depth: int, opener: str, key: str) -> None:
    closer = {"[": "]", "{a = ": "}", "[{b = ": "}]"}[opener]
    text = f"{key} = " + opener * depth + "1" + closer * depth + "\n"
    _check_outcome(load_config_text, text, "deep.toml")


_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 1, 1))
    | st.sampled_from(["ptp", "server", "pool", "nts", "/dev/ptp0", "0.0.0.0:123", "[::]:123",
                       "system", "observe", "simulated", "info", "ntpd-py", ""])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


@FUZZ
@given(data=st.data())
def test_example_configs_with_values_replaced(data: st.DataObject) -> None:
    document = tomllib.loads(data.draw(st.sampled_from(EXAMPLE_TEXTS)))
    for _ in range(data.draw(st.integers(1, 4))):
        paths = _paths(document)
        if not paths:
            document[data.draw(st.text(min_size=1, max_size=12))] = data.draw(_VALUES)
            continue
        path = data.draw(st.sampled_from(paths))
        parent: Any = document
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_VALUES)
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):
        return  # not representable as TOML (tomli_w refuses it): no file to load
    _check_outcome(load_config_text, text, "mutated.toml")


@FUZZ
@given(data=st.data())
def test_example_configs_with_text_spliced(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(EXAMPLE_TEXTS))
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 40)))
        insert = data.draw(st.text(max_size=20) | st.sampled_from(
            ["[", "]", "{", "}", '"', "'''", "\n[[source]]\n", " = ", "\x00", "\\u0000", "#"]))
        text = text[:start] + insert + text[end:]
    _check_outcome(load_config_text, text, "spliced.toml")
