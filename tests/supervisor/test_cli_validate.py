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


# -- files that are not configurations (issue #17) --------------------------------------


def _hostile(tmp_path: Path, kind: str) -> str:
    import os

    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes: reading it must not block
    elif kind == "directory":
        path.mkdir()
    elif kind == "invalid-utf8":
        path.write_bytes(b'[daemon]\nuser = "\xff\xfe"\n')
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "deep":
        path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    elif kind == "huge":
        path.write_bytes(b"# " + b"x" * (2 * 1024 * 1024) + b"\n")
    elif kind == "many-errors":
        path.write_text("".join(f"key{i} = {i}\n" for i in range(5000)))
    else:
        return kind  # a device path
    return str(path)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("fifo", "is a FIFO"),
        ("directory", "is a directory"),
        ("invalid-utf8", "not valid UTF-8"),
        ("binary", "not valid UTF-8"),
        ("deep", "nested more than 32 levels deep"),
        ("huge", "larger than 1 MiB"),
        ("many-errors", "and 4980 more errors"),
        ("/dev/zero", "is a character device"),
    ],
)
def test_validate_any_file_exits_78_quickly_with_short_output(
    tmp_path: Path, kind: str, reason: str
) -> None:
    import time

    path = _hostile(tmp_path, kind)
    started = time.monotonic()
    result = run("ntpd-py", "validate", "-c", path)
    assert time.monotonic() - started < 10
    assert result.returncode == 78, result.stderr[-500:]
    assert reason in result.stderr
    assert "Traceback" not in result.stderr
    # bounded output: the file's path (whose length depends on where pytest puts
    # tmp_path) is counted as one character wherever it appears
    output = (result.stdout + result.stderr).replace(path, "P")
    assert len(output) < 4096


def test_load_config_file_turns_a_loader_bug_into_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ntpd_py.core.errors import ConfigError
    from ntpd_py.supervisor import config_file

    def broken(text: str, filename: str) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(config_file, "load_config_text", broken)
    path = tmp_path / "ntp.toml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        config_file.load_config_file(str(path))
    assert "internal error" in str(info.value) and "ZeroDivisionError" in str(info.value)


def test_validate_warns_about_an_observation_path_in_a_shared_directory(write_config) -> None:
    path = write_config('[[source]]\nmode = "server"\naddress = "127.0.0.1"\n'
                        '[synchronization]\nminimum-agreeing-sources = 1\n'
                        '[observability]\nobservation-path = "/tmp/ntpd-py-observe"\n')
    result = run("ntpd-py", "validate", "-c", str(path))
    assert result.returncode == 0
    assert 'observation-path = "/tmp/ntpd-py-observe" is in a shared directory' in result.stderr


def test_validate_warns_about_an_unsafe_runtime_dir(write_config, tmp_path: Path) -> None:
    import os

    runtime = tmp_path / "run"
    runtime.mkdir()
    os.chmod(runtime, 0o777)
    path = write_config('[[source]]\nmode = "server"\naddress = "127.0.0.1"\n'
                        '[synchronization]\nminimum-agreeing-sources = 1\n'
                        f'[daemon]\nruntime-dir = "{runtime}"\n')
    result = run("ntpd-py", "validate", "-c", str(path))
    assert result.returncode == 0
    assert f'[daemon] runtime-dir = "{runtime}" is writable by every user' in result.stderr
    assert "will refuse to start (exit 73)" in result.stderr
