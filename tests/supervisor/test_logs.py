"""SIGHUP log reopening: every child with a live link gets fd 2 and the level, others are skipped."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from ntpd_py.core.config import ObservabilityConfig
from ntpd_py.ipc.messages import LogControl
from ntpd_py.supervisor import logs

from tests.doubles import FakeLink, LogCapture


@dataclass
class _Child:
    link: FakeLink | None


def test_reopen_is_shared_with_each_linked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    reopened: list[tuple[str | None, str]] = []
    # The real reopen re-points this process's fd 2 and logging: not in a unit test.
    monkeypatch.setattr(logs, "reopen_logs",
                        lambda path, level, log: reopened.append((path, level)) or True)
    monkeypatch.setattr(logs, "stderr_is_journal", lambda: False)
    monkeypatch.setattr(logs, "effective_level", lambda level: level)
    live, gone = FakeLink(), FakeLink()
    gone.closed = True  # send() fails: the child died since
    children = [_Child(live), _Child(None), _Child(gone)]
    capture = LogCapture("logs")
    config = ObservabilityConfig.model_validate({"log-level": "debug", "log-path": "/tmp/x.log"})

    told = logs.reopen_and_share_logs(config, children, capture.logger)  # type: ignore[arg-type]

    assert told == 1
    assert reopened == [("/tmp/x.log", "debug")]
    assert live.sent == [(LogControl(level="debug", timestamps=True), [2])]
    assert gone.sent == []
    assert capture.messages() == ["logging to /tmp/x.log at level debug"]
