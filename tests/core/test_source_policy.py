"""Clock-control's source and panic decisions, without processes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.actions import AdvisePoll, Panic, SetFrequency, Step
from ntpd_py.core.source_policy import (
    FalsetickerJudge,
    PanicDecision,
    diff_sources,
    on_panic,
    steering_allowed,
)

ids = st.sampled_from(["ptp:/dev/ptp0", "ntp:a:123", "ntp:b:123", "pool:p#1", "pool:p#2"])
source_sets = st.dictionaries(ids, st.integers(0, 3))  # an int stands for an entry's settings


def test_a_changed_entry_starts_afresh_and_a_gone_one_is_forgotten() -> None:
    change = diff_sources({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2, "d": 1})
    assert change.removed == ("b", "c")
    assert change.forgotten == ("c",)
    assert change.added == ("b", "d")


@given(source_sets, source_sets)
def test_applying_the_diff_to_the_old_set_gives_the_new_one(old: dict[str, int],
                                                           new: dict[str, int]) -> None:
    change = diff_sources(old, new)
    result = {k: v for k, v in old.items() if k not in change.removed}
    result.update({k: new[k] for k in change.added})
    assert result == new
    assert set(change.forgotten) == set(old) - set(new)
    assert not set(change.removed) & {k for k in old if new.get(k) == old[k]}  # kept intact
    assert diff_sources(new, new) == diff_sources({}, {})


def test_a_pool_member_is_replaced_once_after_its_streak() -> None:
    judge = FalsetickerJudge(replace_after=3)
    views = [("pool:p#1", "x"), ("ntp:a:123", "x"), ("pool:p#2", "*")]
    assert judge.judge(views) == []
    assert judge.judge(views) == []
    assert judge.judge(views) == ["pool:p#1"]  # a configured server is never replaced
    assert judge.judge(views) == []  # named once, not at every update after


def test_a_streak_is_reset_by_one_good_update() -> None:
    judge = FalsetickerJudge(replace_after=2)
    assert judge.judge([("pool:p#1", "x")]) == []
    assert judge.judge([("pool:p#1", "+")]) == []
    assert judge.judge([("pool:p#1", "x")]) == []
    assert judge.judge([("pool:p#1", "x")]) == ["pool:p#1"]


def test_panic_decisions() -> None:
    assert on_panic("exit", False) is PanicDecision.EXIT
    assert on_panic("exit", True) is PanicDecision.EXIT
    assert on_panic("stop-steering", False) is PanicDecision.STOP_STEERING
    assert on_panic("stop-steering", True) is PanicDecision.ALREADY_STOPPED


def test_nothing_reaches_the_clock_after_steering_stopped() -> None:
    step, freq = Step(offset_ns=5), SetFrequency(freq=1e-6)
    assert steering_allowed(step, False) and steering_allowed(freq, False)
    assert not steering_allowed(step, True) and not steering_allowed(freq, True)
    assert not steering_allowed(AdvisePoll(source_id="ntp:a:123", poll_log2=4), False)
    assert not steering_allowed(Panic(message="refused"), False)
