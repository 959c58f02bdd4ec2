"""`ntpd-py simulate` as a user meets it: table, JSON, plot, progress, panic exit 70, bad files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[2] / "deploy" / "scenarios"
BIN = Path(sys.executable).parent
EXE = shutil.which("ntpd-py", path=str(BIN)) or "ntpd-py"


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "simulate", *args], capture_output=True, text=True, timeout=120)


def test_table_and_progress() -> None:
    result = simulate(str(SCENARIOS / "kvm-guest.toml"), "--duration", "240")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("scenario kvm-guest (seed 1): 240 s simulated")
    for label in ("time to |offset| < 1 ms", "time to |offset| < 1 µs", "RMS offset",
                  "max |offset|", "frequency error", "steps                       1",
                  "falseticker selected", "* /dev/ptp0"):
        assert label in out
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and "synchronized" in progress[-1]  # every simulated minute


def test_json_has_the_documented_keys() -> None:
    result = simulate(str(SCENARIOS / "ntp-only.toml"), "--duration", "600", "--seed", "3",
                      "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress with --json
    doc = json.loads(result.stdout)
    for key in ("time_to_1ms_s", "time_to_1us_s", "rms_offset_s", "max_abs_offset_s", "steps",
                "falseticker_selected_s", "scenario", "seed"):
        assert key in doc
    assert doc["scenario"] == "ntp-only" and doc["seed"] == 3 and doc["duration_s"] == 600
    assert doc["time_to_1us_s"] is None and doc["falseticker_selected_s"] == 0
    assert doc["rms_offset_s"] < 20e-6 and doc["steps"] == 1


def test_frequency_error_figures_are_present_and_sane() -> None:
    """ntp-only after convergence: the rate is smooth (issue 18), the offset still small."""
    result = simulate(str(SCENARIOS / "ntp-only.toml"), "--duration", "3000", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rms, peak, over = (doc["rms_freq_error_ppm"], doc["max_abs_freq_error_ppm"],
                       doc["freq_error_over_1ppm_fraction"])
    assert 0.0 < rms <= peak  # a real, noisy clock: never exactly 0
    assert peak < 1.0 and over == 0.0  # no second with the rate 1 ppm off
    assert rms <= 0.15  # 0.06 ppm over the full 20 000 s; the window here is 1500 s
    assert doc["rms_offset_s"] < 20e-6
    table = simulate(str(SCENARIOS / "ntp-only.toml"), "--duration", "600").stdout
    for label in ("RMS frequency error", "max |frequency error|", "|frequency error| > 1 ppm"):
        assert label in table


def test_panic_prints_the_message_and_exits_70() -> None:
    result = simulate(str(SCENARIOS / "panic.toml"))
    assert result.returncode == 70
    assert "panic: refusing to step the clock by -172800" in result.stderr
    assert "startup-step-panic-threshold" in result.stderr
    doc = json.loads(simulate(str(SCENARIOS / "panic.toml"), "--json").stdout)
    assert doc["panic"].startswith("refusing to step") and doc["steps"] == 0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "kvm.png"
    result = simulate(str(SCENARIOS / "kvm-guest.toml"), "--duration", "120", "--plot", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {out}" in result.stdout


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from ntpd_py.supervisor.cli import main; main()")
    result = subprocess.run(
        [sys.executable, "-c", code, "simulate", str(SCENARIOS / "kvm-guest.toml"), "--plot",
         str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 69
    assert "pip install 'ntpd-py[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_invalid_scenario_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\nduration = 60\n\n[[source]]\nmode = "ptp"\n'
                   'path = "/dev/ptp0"\n[source.sim]\nnoyse = 1e-9\n')
    result = simulate(str(bad))
    assert result.returncode == 78
    assert f"error: {bad}:9: source[0].sim.noyse: unknown key" in result.stderr
    missing = simulate(str(tmp_path / "nope.toml"))
    assert missing.returncode == 78 and "cannot read" in missing.stderr


def test_bad_duration() -> None:
    result = simulate(str(SCENARIOS / "kvm-guest.toml"), "--duration", "-5")
    assert result.returncode == 2 and "--duration" in result.stderr
