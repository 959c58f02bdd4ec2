"""Adversarial: local files and directories (issue #17, items 5, 9 and 10), with real processes.

- The supervisor never takes over a directory it did not create: an observation
  path in a shared root-owned 1777 directory leaves that directory as it was; an
  unsafe existing runtime directory stops the start with exit 73 naming it.
- No configuration file makes `validate` or a SIGHUP crash: a 5000-deep nesting,
  invalid UTF-8, a FIFO (nobody writes: reading must not block).
- A runtime directory deleted under a running daemon is noticed: the supervisor
  says so and exits non-zero (75) within seconds, leaving no process behind.

Every daemon is started through tests/integration/daemon.py and stopped by PID.
Each scenario records what it did and measured (`figures`).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import SIM_PTP, load_pids
from tests.adversarial.load import measure
from tests.integration.daemon import BIN, Daemon, wait_for

pytestmark = pytest.mark.integration

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root-owned shared "
                               "directory, another user's directory, workers as nobody")


HOSTILE = {
    "deep": "a 5000-deep nesting of arrays",
    "invalid-utf8": "invalid UTF-8",
    "fifo": "a FIFO nobody writes",
}


def _hostile_file(path: Path, kind: str) -> None:
    """Replace `path` by a file that is no configuration."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "deep":
        path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    elif kind == "invalid-utf8":
        path.write_bytes(b'[daemon]\nuser = "\xc3\x28\xff"\n')
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        raise AssertionError(kind)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- (a) a shared directory is used, never taken over --------------------------------------


@ROOT_ONLY
def test_observation_path_in_a_shared_sticky_directory_leaves_it_unchanged(
        figures: Figures) -> None:
    daemon = Daemon(SIM_PTP)
    shared = daemon.dir / "shared"
    shared.mkdir()
    os.chown(shared, 0, 0)
    os.chmod(shared, 0o1777)
    before = shared.stat()
    daemon.write_config(SIM_PTP + f'\n[observability]\nobservation-path = "{shared}/observe"\n')
    validate = subprocess.run([str(BIN / "ntpd-py"), "validate", "-c", str(daemon.config_path)],
                              capture_output=True, text=True, timeout=30)
    assert validate.returncode == 0, validate.stderr
    assert "is in a shared directory" in validate.stderr
    with daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        after = shared.stat()
        observe = shared / "observe"
        figures.record(
            scenario="observation socket in a shared 1777 directory",
            attacker="local root-less user (shares the sticky directory)",
            load="`validate` and a daemon start with observation-path in it",
            outcome=f"validate exit {validate.returncode}, warned: "
                    f"{'is in a shared directory' in validate.stderr}; the directory stayed "
                    f"{after.st_uid}:{after.st_gid} mode {stat.S_IMODE(after.st_mode):o}; "
                    f"socket there: {observe.exists() and stat.S_ISSOCK(observe.stat().st_mode)}")
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid) == (0, 0)
        assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode) == 0o1777
        assert stat.S_ISSOCK((shared / "observe").stat().st_mode)


# -- (b) an unsafe existing runtime directory: refuse, exit 73 -------------------------------


@pytest.mark.parametrize("unsafe", [
    "mode-0777",
    pytest.param("other-owner", marks=ROOT_ONLY),
])
def test_unsafe_existing_runtime_dir_refuses_to_start_with_73(unsafe: str,
                                                               figures: Figures) -> None:
    daemon = Daemon(SIM_PTP)
    daemon.runtime.mkdir()
    if unsafe == "mode-0777":
        os.chmod(daemon.runtime, 0o777)
    else:
        os.chown(daemon.runtime, 4242, 4242)
        os.chmod(daemon.runtime, 0o755)
    before = daemon.runtime.stat()
    with daemon:
        assert daemon.proc is not None
        code = daemon.proc.wait(30)
        log = daemon.log()
        after = daemon.runtime.stat()  # before __exit__ removes the test's directory
    unchanged = (after.st_uid, after.st_gid, after.st_mode) == \
        (before.st_uid, before.st_gid, before.st_mode)
    named = f'runtime-dir = "{daemon.runtime}": refusing' in log
    figures.record(
        scenario=f"unsafe existing runtime directory ({unsafe})",
        attacker="local root-less user (can write, or owns, the runtime directory)",
        load="1 daemon start on a runtime directory "
             + ("of mode 0777" if unsafe == "mode-0777" else "owned by uid 4242"),
        outcome=f"exit {code}, refused naming the directory: {named}; directory "
                f"{'unchanged' if unchanged else 'CHANGED'}")
    assert code == 73, log
    assert f'[daemon] runtime-dir = "{daemon.runtime}": refusing to use this existing ' \
        "directory" in log
    assert ("writable by every user" if unsafe == "mode-0777" else "owned by uid 4242") in log
    assert (after.st_uid, after.st_gid, after.st_mode) == \
        (before.st_uid, before.st_gid, before.st_mode)


# -- (c) validate never crashes, never blocks -------------------------------------------


@pytest.mark.parametrize("kind", ["deep", "invalid-utf8", "fifo"])
def test_validate_on_a_hostile_file_exits_78_within_5_s(tmp_path: Path, kind: str,
                                                         figures: Figures) -> None:
    path = tmp_path / "ntp.toml"
    _hostile_file(path, kind)
    started = time.monotonic()
    result = subprocess.run([str(BIN / "ntpd-py"), "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    figures.record(
        scenario=f"`validate` on a hostile file ({kind})",
        attacker="a writer of the configuration file",
        load=f"{HOSTILE[kind]}" + ("" if kind == "fifo" else f", {path.stat().st_size:,} bytes"),
        outcome=f"exit {result.returncode} in {elapsed:.2f} s; "
                f"{len(result.stdout) + len(result.stderr)} bytes of output, traceback: "
                f"{'Traceback' in result.stderr}")
    assert result.returncode == 78, result.stderr[-1000:]
    assert elapsed < 5, f"validate took {elapsed:.1f} s"
    assert len(result.stdout) + len(result.stderr) < 2048
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr


@pytest.mark.parametrize("kind", ["deep", "invalid-utf8", "fifo"])
@pytest.mark.parametrize("single", [False, True], ids=["supervisor", "single-process"])
def test_run_on_a_hostile_file_exits_78_not_1(tmp_path: Path, kind: str, single: bool,
                                               figures: Figures) -> None:
    # exit 1 would make systemd's Restart=on-failure loop; 78 is in RestartPreventExitStatus
    path = tmp_path / "ntp.toml"
    _hostile_file(path, kind)
    args = [str(BIN / "ntpd-py"), "run", "-c", str(path), *(["--single-process"] * single)]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    figures.record(
        scenario=f"`run{' --single-process' if single else ''}` on a hostile file ({kind})",
        attacker="a writer of the configuration file",
        load=f"{HOSTILE[kind]}, at start-up",
        outcome=f"exit {result.returncode} in {elapsed:.2f} s; {len(result.stderr)} bytes on "
                f"stderr, traceback: {'Traceback' in result.stderr}")
    assert result.returncode == 78, result.stderr[-1000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 2048


# -- (d) SIGHUP with such a file keeps the running set ------------------------------------


def test_sighup_with_hostile_files_keeps_every_process(figures: Figures) -> None:
    with Daemon(SIM_PTP) as daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        tree = {p.pid for p in daemon.children()}
        assert len(tree) >= 2
        measured = load_pids(daemon, {"PTP worker": "ptp:/dev/ptp0"})
        quiet = measure(measured, 1.0)
        reloads_at = time.monotonic()
        for number, kind in enumerate(["deep", "invalid-utf8", "fifo"], start=1):
            _hostile_file(daemon.config_path, kind)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda n=number: daemon.log().count("keeping the running configuration")
                     >= n, 10, f"reload of the {kind} file rejected")
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        reloads_s = time.monotonic() - reloads_at
        during = measure(measured, 1.0)  # was time.sleep(1)
        now = {p.pid for p in daemon.children()}
        log = daemon.log()
        figures.record(
            scenario="SIGHUP with hostile configuration files",
            attacker="a writer of the configuration file",
            load=f"3 SIGHUPs in {reloads_s:.1f} s: {', '.join(HOSTILE.values())}",
            outcome=f"{log.count('keeping the running configuration')} reloads rejected; "
                    f"process tree {'unchanged' if now == tree else 'CHANGED'} ({len(now)} "
                    f"children); traceback in the log: {'Traceback' in log}",
            before=quiet, after=during)
        assert {p.pid for p in daemon.children()} == tree
        assert "nested more than 32 levels deep" in log
        assert "not valid UTF-8" in log
        assert "is a FIFO" in log
        assert "Traceback" not in log
        # ntpctl reads the same file to find the socket: give it a valid one again
        daemon.config_path.unlink()
        daemon.write_config(SIM_PTP)
        assert daemon.workers()["clock-control"]["state"] == "running"


# -- (e) a deleted runtime directory is noticed -------------------------------------------


@pytest.mark.parametrize("what", ["runtime-dir", "state.sock"])
def test_deleting_the_runtime_dir_stops_the_daemon_non_zero_without_orphans(
        what: str, figures: Figures) -> None:
    with Daemon(SIM_PTP) as daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        children = [p.pid for p in daemon.children()]
        assert children
        quiet = measure(load_pids(daemon, {"PTP worker": "ptp:/dev/ptp0"}), 1.0)
        if what == "runtime-dir":
            shutil.rmtree(daemon.runtime)  # as `rm -rf /run/ntpd-py` would
            expected = f"runtime: directory {daemon.runtime} was deleted"
        else:
            (daemon.runtime / what).unlink()
            # deleted before or after the supervisor first saw it: 2 to 4 checks, 2 s apart
            expected = f"runtime: socket {daemon.runtime / what} "
        started = time.monotonic()
        assert daemon.proc is not None
        code = daemon.proc.wait(15)
        elapsed = time.monotonic() - started
        log = daemon.log()
        wait_for(lambda: not any(_alive(pid) for pid in children), 5, "no child left")
        not_running = daemon.ctl("status")
        figures.record(
            scenario=f"{'runtime directory' if what == 'runtime-dir' else what} deleted under "
                     "a running daemon",
            attacker="whoever deletes it (rm -rf, a tmpfiles clean-up)",
            load="rm -rf of the runtime directory" if what == "runtime-dir"
            else f"unlink of {what}",
            outcome=f"supervisor exit {code} after {elapsed:.1f} s, named it: "
                    f"{expected in log}; its {len(children)} children all gone; ntpctl status exit "
                    f"{not_running.returncode}",
            before=quiet)
        assert code == 75, log
        assert elapsed < 12, f"noticed after {elapsed:.1f} s"
        assert expected in log
        assert not_running.returncode == 69 and "not running" in not_running.stderr
