"""Host-side checks of the e2e report: the two truth definitions and the figures built on them.

No guest is booted: the records are written here the way tests/vm/phc_truth.py
writes them in the guest, so what is checked is the arithmetic the e2e verdict
rests on (which truth record counts, how the second definition is formed, and
that a daemon's figures come from its own window of a shared boot record).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from .e2e_report import load, steady_figures, window_calibration
from .phc_truth import narrow_quarter_median, narrowest

NS = 1_000_000_000


def test_narrowest_is_the_smallest_window_and_the_first_of_equals() -> None:
    readings = [(100, 90, 50), (200, 195, 20), (300, 280, 20), (400, 300, 90)]
    assert narrowest(readings) == (200, 195, 20)


def test_narrow_quarter_median_takes_the_median_offset_of_the_narrowest_quarter() -> None:
    # 8 readings: the narrowest quarter is the 2 with windows 10 and 11, offsets 4 and 8
    readings = [(1000 + i, 1000 + i - off, w) for i, (off, w) in enumerate(
        [(4, 10), (100, 40), (8, 11), (-50, 30), (70, 25), (3, 12), (60, 50), (9, 13)])]
    assert narrow_quarter_median(readings) == 6  # (4 + 8) // 2
    # 25 readings: the quarter is 7; an odd count gives its middle value
    many = [(0, -(k * 10), 100 + k) for k in range(25)]
    assert narrow_quarter_median(many) == 30  # offsets 0, 10, …, 60


def _boot(tmp_path: Path) -> Path:
    """A boot with two daemons one after the other, each with its own events and summary."""
    truth = []
    for t in range(0, 200):
        mono = t * NS
        # first daemon (0..100 s): narrowest-midpoint error 10 ns, quarter median 4 ns;
        # second (100..200 s): −20 and −14 ns
        err, err_q = (10, 4) if t < 100 else (-20, -14)
        truth.append({"k": "s", "mono": mono, "raw": mono, "rr": 0, "rrw": 10, "epoch": 1,
                      "kernel": [0.0, 10001, 64], "real": mono, "err": err, "w": 300,
                      "err_q": err_q, "rd": [[0, 300], [err_q - err, 320]]})
    (tmp_path / "truth.jsonl").write_text("\n".join(json.dumps(r) for r in truth) + "\n")
    plan = {"window_s": 40.0}
    for daemon, launch in (("chrony", 0), ("ntpd-py", 100)):
        sub = tmp_path / daemon
        sub.mkdir()
        end = (launch + 90) * NS
        (sub / "events.jsonl").write_text(json.dumps({"mono": end, "what": "steady-end"}) + "\n")
        (sub / "summary.json").write_text(json.dumps(
            {"plan": plan, "launch_mono": launch * NS, "floor": {"sd_ns": 5.0}}))
    return tmp_path


def test_each_daemon_is_measured_on_its_own_window_of_the_shared_truth(tmp_path: Path) -> None:
    boot = _boot(tmp_path)
    first = load("chrony", boot / "chrony", 0.0, boot / "truth.jsonl")
    second = load("ntpd-py", boot / "ntpd-py", 0.0, boot / "truth.jsonl")
    a, b = steady_figures(first), steady_figures(second)
    assert a["complete"] and b["complete"]
    assert a["n_window"] == 41 and b["n_window"] == 41  # 50..90 s and 150..190 s, inclusive
    assert a["rms_ns"] == pytest.approx(10.0) and a["mean_ns"] == pytest.approx(10.0)
    assert b["rms_ns"] == pytest.approx(20.0) and b["mean_ns"] == pytest.approx(-20.0)
    # the second definition and the gap between the two, per daemon
    assert a["quarter"]["rms_ns"] == pytest.approx(4.0)
    assert b["quarter"]["mean_ns"] == pytest.approx(-14.0)
    assert a["definition_gap"]["mean_ns"] == pytest.approx(6.0)
    assert b["definition_gap"]["mean_ns"] == pytest.approx(-6.0)
    assert math.isclose(b["quarter"]["sd_ns"] or 0.0, 0.0, abs_tol=1e-9)


def test_window_calibration_takes_the_floor_phase_slope_and_corrects_every_daemon_alike(
        tmp_path: Path) -> None:
    """Floor phase: error = line + (−0.2)·(window − 500) + small noise; the calibration finds
    the slope with the clock's line removed, and a daemon's corrected errors refer to the
    floor's median window."""
    rnd = random.Random(3)
    truth = []
    for t in range(40):
        w = 500 + rnd.choice((-80, -40, 0, 40, 80))
        err = 1000 + 50 * t - 0.2 * (w - 500) + rnd.gauss(0, 1)  # drifting 50 ns/s
        truth.append({"k": "s", "mono": t * NS, "err": round(err), "w": w, "epoch": 1})
    for t in range(40, 80):  # the daemon's steady window: error 7 ns at a 580 ns window
        truth.append({"k": "s", "mono": t * NS, "err": 7, "w": 580, "err_q": 7, "epoch": 1})
    (tmp_path / "truth.jsonl").write_text("\n".join(json.dumps(r) for r in truth) + "\n")
    sub = tmp_path / "ntpd-py"
    sub.mkdir()
    (sub / "events.jsonl").write_text("\n".join(json.dumps(e) for e in (
        {"mono": 0, "what": "floor-start"}, {"mono": 79 * NS, "what": "steady-end"})) + "\n")
    (sub / "summary.json").write_text(json.dumps(
        {"plan": {"floor_s": 39.0, "window_s": 30.0}, "launch_mono": 40 * NS}))
    run = load("ntpd-py", sub, 0.0, tmp_path / "truth.jsonl")
    cal = window_calibration(run)
    assert cal is not None and cal.n == 40
    assert cal.slope == pytest.approx(-0.2, abs=0.02)
    assert cal.ref_window_ns == 500
    assert cal.floor_sd_ns < 2.0 < cal.floor_raw_sd_ns
    fig = steady_figures(run, cal)["window_corrected"]
    # 7 − slope·(580 − 500): the narrower-than-usual reading's error taken to the reference
    assert fig["mean_ns"] == pytest.approx(7 - cal.slope * 80, abs=1e-6)
    assert fig["sd_ns"] == pytest.approx(0.0, abs=1e-9)


def test_the_daemons_config_takes_the_experiment_options() -> None:
    """`e2e --debug-log --algorithm '…'`: ntpd-py's config in the guest carries both, and
    loads (the run loader, as the daemon in the guest would)."""
    import tomllib

    from ntpd_py.core.config_load import load_config_text

    from .e2e_ntpd import config_text

    text = config_text(5e-8, 2, 11123, "debug", "initial-wander = 1e-11")
    document = tomllib.loads(text)
    assert document["observability"]["log-level"] == "debug"
    assert document["synchronization"]["algorithm"] == {"initial-wander": 1e-11}
    assert load_config_text(text).synchronization.algorithm.initial_wander == 1e-11
    assert "algorithm" not in tomllib.loads(config_text(5e-8, 2, 11123))["synchronization"]


def test_freq_glitch_reports_a_persistent_step_and_white_noise_apart() -> None:
    """tests/vm/freq_glitch.py's figures: white noise has lag-1 step autocorrelation
    near -0.5, a phase that only steps (and stays) near 0."""
    from .freq_glitch import _report

    rng = random.Random(3)
    white = [rng.gauss(0.0, 5.0) for _ in range(400)]
    steps, level = [], 0.0
    for i in range(400):
        if i % 2 == 0:
            level += rng.gauss(0.0, 25.0)
        steps.append(level)
    white_line, step_line = _report("w", white), _report("s", steps)

    def lag1(line: str) -> float:
        return float(line.split("lag-1 autocorrelation of steps ")[1].split("\n")[0])

    assert lag1(white_line) < -0.4 and abs(lag1(step_line)) < 0.2
    assert "leftover phase sd" in white_line
