"""Rate-limited logging, stderr swapping for log reopen, and journal detection."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ntpd_py.workers.logutil import RateLimitedLog, stderr_is_journal

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
        "import os, sys; from ntpd_py.workers.logutil import stderr_is_journal as j;"
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
from ntpd_py.workers.logutil import apply_log_control, setup_child_logging
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
    assert after == "ptp:/dev/ptp0: DEBUG: after at debug\n"  # no timestamp, as asked
