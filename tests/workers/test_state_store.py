"""StateStore: the quick snapshot is authenticated and validated; save errors are rate-limited."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ntpd_py.core.config import Config
from ntpd_py.core.saved_state import DriftPrior
from ntpd_py.plumbing.scheduler import Now
from ntpd_py.workers.clock_control_setup import _initial_state
from ntpd_py.workers.state_store import StateStore

S = 1_000_000_000
KEY = b"k" * 32
STATE = {"frequency": 1e-6, "frequency_uncertainty": 1e-8, "steps": 1}


def _store(tmp_path: Path, key: bytes | None = KEY, first_start: bool = False) -> StateStore:
    return StateStore(str(tmp_path), str(tmp_path), logging.getLogger("test"), key=key,
                      first_start=first_start)


def test_round_trip_with_the_same_key(tmp_path: Path) -> None:
    _store(tmp_path).save_quick(STATE, 100 * S, force=True)
    assert _store(tmp_path).load_quick(101 * S) == STATE


def test_a_file_not_signed_with_this_daemons_key_is_discarded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _store(tmp_path, key=b"x" * 32).save_quick(STATE, 100 * S, force=True)
    with caplog.at_level(logging.INFO):
        assert _store(tmp_path).load_quick(101 * S) is None
    [record] = [r for r in caplog.records if "clock-control.state" in r.getMessage()]
    assert record.levelno == logging.WARNING and "not written by this daemon" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO):  # the first clock-control of a daemon: expected, info
        assert _store(tmp_path, first_start=True).load_quick(101 * S) is None
    assert [r.levelno for r in caplog.records] == [logging.INFO]


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # one bit of the state
    lambda b: bytes([b[0] ^ 1]) + b[1:],  # one bit of the MAC
    lambda b: b[:20],  # truncated
    lambda b: b"",
    lambda b: b"\xff" * 5000,
])
def test_a_rewritten_file_is_discarded(tmp_path: Path, mutate) -> None:
    store = _store(tmp_path)
    store.save_quick(STATE, 100 * S, force=True)
    path = Path(store.quick_path)
    path.write_bytes(mutate(path.read_bytes()))
    assert store.load_quick(101 * S) is None


def test_cannot_save_is_logged_once_then_once_a_minute_with_a_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(str(tmp_path / "gone"), str(tmp_path / "gone"), logging.getLogger("t"))
    with caplog.at_level(logging.WARNING):
        for second in range(130):  # every second for 130 s, as clock-control does
            store.save_quick(STATE, second * S)
            store.save_drift_text("x", second * S, force=True)
    quick = [r.getMessage() for r in caplog.records if "cannot save" in r.getMessage()]
    drift = [r.getMessage() for r in caplog.records if "cannot write drift" in r.getMessage()]
    assert len(quick) == 3 and len(drift) == 3  # at 0 s, 60 s and 120 s
    assert "59 since last report" in quick[1] and "59 since last report" in drift[1]


def _config(tmp_path: Path) -> Config:
    return Config.model_validate({"daemon": {"runtime-dir": str(tmp_path),
                                             "state-dir": str(tmp_path)}})


def test_a_signed_but_invalid_state_is_discarded_naming_the_field(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    (tmp_path / "drift").write_text("+12.000000 0.010000\n")
    store.save_quick({"version": 1, "frequency": -2e-3}, 100 * S, force=True)
    with caplog.at_level(logging.INFO):
        saved = _initial_state(store, Now(101 * S, 0), _config(tmp_path), logging.getLogger("t"))
    assert saved == DriftPrior(pytest.approx(12e-6), pytest.approx(1e-8))
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert store.quick_path in warning and "discarding" in warning


def test_a_drift_file_beyond_the_steering_limit_is_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "drift").write_text("+499.000000 0.010000\n")
    with caplog.at_level(logging.WARNING):
        saved = _initial_state(_store(tmp_path), Now(S, 0), _config(tmp_path),
                               logging.getLogger("t"))
    assert saved is None
    assert "maximum-frequency-steer" in caplog.text and "drift" in caplog.text
