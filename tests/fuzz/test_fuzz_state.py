"""Fuzzing the saved-state restore (hypothesis, bounded; in the default test run).

Whatever clock-control reads back — arbitrary nested values, or a real export
with one field replaced by anything (NaN, inf, huge ints, wrong types,
negative variances) — restoring either succeeds with a controller that then
handles samples without raising, or is rejected cleanly (``rejected_state``).
Every crash found here becomes a regression test in tests/core/test_saved_state.py.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ntpd_py.core.controller import ClockController
from ntpd_py.core.controller_state import StepBounds
from ntpd_py.core.events import SourceKind
from ntpd_py.workers.state_store import StateStore

from tests.core.test_controller import Harness, run_phc, sync

PTP = "/dev/ptp0"
CONFIG = sync(**{"minimum-agreeing-sources": 1, "single-step-panic-threshold": 0.5})
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _export() -> dict[str, Any]:
    h = Harness(CONFIG)
    h.ctl.add_source(PTP, SourceKind.PTP, poll_log2=0)
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=0, poll_limits=(0, 4))
    for _ in range(20):
        h.sample(PTP, SourceKind.PTP, noise=50e-9)
        h.sample("ntp", SourceKind.NTP, noise=20e-6, delay=200e-6)
        h.advance(1.0)
    run_phc(h, 2, noise=50e-9)
    state = h.ctl.export_state().to_wire()
    assert set(state["sources"]) == {PTP, "ntp"}
    return json.loads(json.dumps(state))


REAL = _export()

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1e-12, 1e308, -1e308, 5e-324, 490e-6, -1.0, 2**63, -(2**63)]),
    st.text(max_size=8), st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.integers()),
                                            inner, max_size=6)),
    max_leaves=30,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


PATHS = _paths(REAL)


def _exercise(saved: Any, bounds: StepBounds | None = None) -> None:
    """Restore ``saved``; if accepted, the controller must keep working on real samples."""
    h = Harness(CONFIG)
    h.advance(5.0)  # the saved state is from "a few seconds ago" of the same boot
    h.ctl = ClockController(CONFIG, saved=saved, bounds=bounds, **h.now())
    h.ctl.add_source(PTP, SourceKind.PTP, poll_log2=0)
    h.ctl.add_source("ntp", SourceKind.NTP, poll_log2=0, poll_limits=(0, 4))
    for _ in range(6):
        h.sample(PTP, SourceKind.PTP, noise=50e-9)
        h.sample("ntp", SourceKind.NTP, noise=20e-6, delay=200e-6)
        h.advance(1.0)
    h.ctl.system_snapshot(now_mono_ns=h.clock.mono_ns(h.t))
    h.ctl.source_snapshots(now_mono_ns=h.clock.mono_ns(h.t))
    json.dumps(h.ctl.export_state().to_wire())  # and what it would save next is sane again
    if h.ctl.rejected_state is not None:
        assert h.ctl.steerer.base_freq == 0.0 or h.ctl.steerer.steps >= 1
    if bounds is not None:
        assert h.ctl.steerer.steps >= bounds.steps
        assert h.ctl.steerer.accumulated_s >= bounds.accumulated_s


@FUZZ
@given(values)
def test_arbitrary_values_restore_or_are_rejected(saved: Any) -> None:
    _exercise(saved)


@FUZZ
@given(st.sampled_from(PATHS), values)
def test_a_real_export_with_one_field_replaced(path: tuple[Any, ...], value: Any) -> None:
    saved = copy.deepcopy(REAL)
    target = saved
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _exercise(saved, StepBounds(1, 0.05, True))


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(REAL)), values, max_size=4))
def test_a_real_export_with_several_keys_replaced(replaced: dict[str, Any]) -> None:
    _exercise({**copy.deepcopy(REAL), **replaced})


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_in_the_state_file_are_discarded(store_dir: Path, data: bytes) -> None:
    store = StateStore(str(store_dir), str(store_dir), logging.getLogger("fuzz"), key=b"k" * 32)
    Path(store.quick_path).write_bytes(data)
    assert store.load_quick(10**12) is None
