"""`ntpctl watch` without a terminal: the JSON document and the plain-text frames."""

from __future__ import annotations

import json

import pytest
from ntpd_py.supervisor.ctl_watch import _Output, watch_document

from tests.doubles import FakeClock
from tests.views import clock_state as _state


def test_watch_document_is_status_json_without_process_fields() -> None:
    clock = FakeClock()
    doc = watch_document(_state(clock))
    assert doc["command"] == "watch" and doc["realtime_ns"] == clock.real_ns
    assert "processes" not in doc and "ipc_dropped" not in doc
    assert [s["name"] for s in doc["sources"]] == ["a", "b"]


def test_plain_frames_only_for_fresh_states(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    out = _Output(as_json=False)  # stdout is captured: not a terminal, no live view
    assert out.live is None
    out.show(_state(clock), "", fresh=False)
    out.show(None, "waiting", fresh=True)
    assert capsys.readouterr().out == ""
    out.show(_state(clock), "", fresh=True)
    text = capsys.readouterr().out
    assert "Clock: synchronized (observe backend)" in text
    assert "Sources:" in text and "\n* a " in text and "\nx b " in text


def test_json_frames_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    out = _Output(as_json=True)
    out.show(_state(clock), "", fresh=True)
    clock.advance(1_000_000_000)
    out.show(_state(clock), "", fresh=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["realtime_ns"] for line in lines] == [clock.real_ns - 1_000_000_000,
                                                                  clock.real_ns]


def test_live_view_renders_clock_and_sources_as_text() -> None:
    import io

    from ntpd_py.supervisor.ctl_watch import _view
    from rich.console import Console

    console = Console(record=True, width=160, file=io.StringIO())
    console.print(_view(_state(FakeClock()), "connected"))
    text = console.export_text()
    assert "synchronized (observe backend)" in text and "+3.000 ppm" in text
    assert "connected" in text
    names = [line.split()[1] for line in text.splitlines() if line[:2] in ("* ", "x ")]
    assert names == ["a", "b"]
    empty = Console(record=True, width=160, file=io.StringIO())
    empty.print(_view(None, "waiting for the daemon"))
    assert "waiting for the daemon" in empty.export_text()
