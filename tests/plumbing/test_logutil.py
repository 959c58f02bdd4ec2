"""Rate-limited logging, stderr swapping for log reopen, and journal detection."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ntpd_py.plumbing.logutil import RateLimitedLog, stderr_is_journal, syslog_priority

S = 1_000_000_000


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def records() -> tuple[logging.Logger, _Records]:
    logger = logging.getLogger("test-ratelimit")
    handler = _Records()
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, handler


def test_once_per_window_with_a_count(records) -> None:
    logger, out = records
    limited = RateLimitedLog(logger, window_ns=60 * S)
    for i in range(100):  # a condition repeating on every packet
        limited.log(logging.WARNING, "bad", i * S // 10, "bad frame from %s", "a")
    assert out.lines == ["bad frame from a"]
    limited.log(logging.WARNING, "bad", 61 * S, "bad frame from %s", "a")
    assert out.lines[-1] == "bad frame from a (99 more since last report)"
    limited.log(logging.WARNING, "other", 61 * S, "another key")
    assert out.lines[-1] == "another key"


def test_flush_logs_the_state_a_flapping_condition_ended_in(records) -> None:
    logger, out = records
    limited = RateLimitedLog(logger, window_ns=60 * S, burst=2)
    states = ["waiting", "running", "unreachable", "running", "unreachable"]
    for i, state in enumerate(states):
        limited.log(logging.WARNING, "state", i * S, "%s", state)
    assert out.lines == ["waiting", "running"]  # the burst, then held back
    limited.flush(30 * S)
    assert len(out.lines) == 2  # window not over yet
    limited.flush(60 * S)
    assert out.lines[-1] == "unreachable (last of 3 since last report)"
    limited.flush(200 * S)
    assert len(out.lines) == 3  # nothing more held back


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    target = tmp_path / "stream"
    target.write_text("")
    st = target.stat()
    code = (
        "import os, sys; from ntpd_py.plumbing.logutil import stderr_is_journal as j;"
        "sys.exit(0 if j() else 3)"
    )
    for value, expected in ((f"{st.st_dev}:{st.st_ino}", 0), (f"{st.st_dev}:{st.st_ino + 1}", 3),
                            ("garbage", 3)):
        with target.open("a") as stderr:
            result = subprocess.run([sys.executable, "-c", code], stderr=stderr,
                                    env={**os.environ, "JOURNAL_STREAM": value}, timeout=30)
        assert result.returncode == expected, value
    assert not stderr_is_journal() or os.environ.get("JOURNAL_STREAM")


def test_apply_log_control_moves_stderr_to_the_new_file(tmp_path: Path) -> None:
    # In a child process: fd 2 is swapped as a worker does on SIGHUP.
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    code = f"""
import logging, os
from ntpd_py.plumbing.logutil import apply_log_control, setup_child_logging
log = setup_child_logging("info", "ptp:/dev/ptp0")
log.info("before")
log.debug("hidden")
fd = os.open({str(new)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
apply_log_control("debug", False, [fd])
log.debug("after at debug")
"""
    with old.open("w") as stderr:
        subprocess.run([sys.executable, "-c", code], stderr=stderr, check=True, timeout=30)
    before, after = old.read_text(), new.read_text()
    assert "ptp:/dev/ptp0: INFO: before" in before and "hidden" not in before
    assert "after" not in before
    # no timestamp, as asked (the journal's format: the priority prefix instead)
    assert after == "<7>ptp:/dev/ptp0: DEBUG: after at debug\n"


# -- syslog priorities when stderr is the journal -----------------------------------------------


@pytest.mark.parametrize(
    ("level", "priority"),
    [(5, 7), (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
     (logging.CRITICAL, 2)],
)
def test_syslog_priority_of_each_level(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority


_JOURNAL_SCRIPT = """
import logging, os, sys
from ntpd_py.plumbing.logutil import setup_child_logging, setup_logging
log = setup_logging("debug", "supervisor")
log.debug("a debug line")
log.info("an info line")
log.warning("a warning line")
log.error("an error line")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("with a traceback")
sys.stderr.flush()
pid = os.fork()
if pid == 0:
    os.environ.clear()  # as plumbing/child.py does: the child cannot see JOURNAL_STREAM
    child = setup_child_logging("info", "ptp:/dev/ptp0")
    child.info("child info")
    child.warning("child warning")
    sys.stderr.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""


def _run_logging(tmp_path: Path, journal: bool) -> list[str]:
    stream = tmp_path / "stream"
    stream.write_text("")
    st = stream.stat()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal:
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    with stream.open("a") as stderr:
        subprocess.run([sys.executable, "-c", _JOURNAL_SCRIPT], stderr=stderr, env=env,
                       check=True, timeout=30)
    return stream.read_text().splitlines()


def test_every_line_carries_its_priority_when_stderr_is_the_journal(tmp_path: Path) -> None:
    lines = _run_logging(tmp_path, journal=True)
    expected = {
        "<7>supervisor: DEBUG: a debug line",
        "<6>supervisor: INFO: an info line",
        "<4>supervisor: WARNING: a warning line",
        "<3>supervisor: ERROR: an error line",
        "<3>supervisor: ERROR: with a traceback",
        "<3>ValueError: boom",  # the traceback's own lines keep the record's priority
        "<6>ptp:/dev/ptp0: INFO: child info",  # a forked worker, without JOURNAL_STREAM
        "<4>ptp:/dev/ptp0: WARNING: child warning",
    }
    assert expected <= set(lines), lines
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines


def test_no_priority_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    lines = _run_logging(tmp_path, journal=False)
    assert any(line.endswith("supervisor: WARNING: a warning line") for line in lines), lines
    assert any(line.endswith("ptp:/dev/ptp0: INFO: child info") for line in lines), lines
    assert not any(line.startswith("<") for line in lines), lines
