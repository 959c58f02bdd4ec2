"""`ntpd-py validate` and `ntpctl validate` as a user meets them: exit codes, text, JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(args[0], path=str(BIN)) or args[0]
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_validate_shipped_examples(path: Path) -> None:
    result = run("ntpd-py", "validate", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"configuration OK: {path}")
    assert "warning" not in result.stderr


def test_validate_summary_lists_sources() -> None:
    result = run("ntpd-py", "validate", "-c", str(EXAMPLES / "aws-ena.toml"))
    lines = result.stdout.splitlines()
    assert any(
        "ptp" in line and "/dev/ptp0" in line and "precision 1e-07 s" in line for line in lines
    )
    assert any("/dev/ptp1" in line for line in lines)
    assert any("server" in line and "169.254.169.123" in line for line in lines)
    assert len(lines) <= 24, "the summary must fit one screen"


def test_validate_errors_exit_78_and_list_every_problem(write_config) -> None:
    path = write_config('[[source]]\nmode = "ptp"\nprecision = -1\nfoo = 1\n')
    result = run("ntpd-py", "validate", "-c", str(path))
    assert result.returncode == 78
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert f"error: {path}:1: source[0].path: missing mandatory key" in errors
    assert any(f"{path}:3: source[0].precision = -1:" in e for e in errors)
    assert any(f"{path}:4: source[0].foo = 1: unknown key" in e for e in errors)
    assert "configuration invalid: 3 errors" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_warnings_do_not_fail(write_config) -> None:
    path = write_config('[[source]]\nmode = "ptp"\npath = "/dev/ptp0"\n')
    result = run("ntpd-py", "validate", "-c", str(path))
    assert result.returncode == 0
    assert "warning: PTP-only configuration" in result.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    result = run("ntpd-py", "validate", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 78
    assert f"{tmp_path / 'nope.toml'}: no such file" in result.stderr


def test_validate_not_utf8(write_config, tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b'[daemon]\nuser = "\xff"\n')
    result = run("ntpd-py", "validate", "-c", str(path))
    assert result.returncode == 78 and "not valid UTF-8" in result.stderr


def test_validate_json(write_config) -> None:
    good = run("ntpd-py", "validate", "--json", "-c", str(EXAMPLES / "kvm-guest.toml"))
    document = json.loads(good.stdout)
    assert good.returncode == 0 and document["ok"] is True and document["schema"] == 1
    assert document["config"]["source"][0]["path"] == "/dev/ptp_kvm"
    bad = run(
        "ntpd-py", "validate", "--json", "-c", str(write_config('[daemon]\nclock = "real"\n'))
    )
    document = json.loads(bad.stdout)
    assert bad.returncode == 78 and document["ok"] is False
    (error,) = document["errors"]
    assert error["key"] == "daemon.clock" and error["line"] == 2 and error["value"] == '"real"'


def test_ntpctl_validate_is_the_same(write_config) -> None:
    result = run("ntpctl", "validate", "-c", str(EXAMPLES / "ntp.toml"))
    assert result.returncode == 0 and result.stdout.startswith("configuration OK")
    result = run("ntpctl", "validate", "-c", str(write_config("[bogus]\n")))
    assert result.returncode == 78
