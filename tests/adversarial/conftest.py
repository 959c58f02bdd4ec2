"""Shared pieces of the adversarial tests: the attacker plays with real processes.

Every scenario records what it did and what it measured through the `figures`
fixture. `python -m tests.adversarial.report` runs the whole folder with
NTPDPY_ADVERSARIAL_REPORT set and turns those records into the Markdown table
of docs/reliability.md; in a plain test run the records are only
kept in memory (and printed with `-s`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .load import ProcessLoad

REPORT_ENV = "NTPDPY_ADVERSARIAL_REPORT"


@dataclass
class Figures:
    """What one scenario did (the attack, its load) and what came of it."""

    test: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, *, scenario: str, attacker: str, load: str, outcome: str,
               before: ProcessLoad | None = None, after: ProcessLoad | None = None) -> None:
        row: dict[str, Any] = {"test": self.test, "scenario": scenario, "attacker": attacker,
                               "load": load, "outcome": outcome}
        if before is not None:
            row["before"] = before.as_dict()
        if after is not None:
            row["after"] = after.as_dict()
        self.rows.append(row)
        print(f"\n[adversarial] {scenario}: {attacker}; {load} -> {outcome}"
              + (f"; before {before}" if before else "") + (f"; after {after}" if after else ""))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    recorded = Figures(request.node.nodeid)
    yield recorded
    path = os.environ.get(REPORT_ENV)
    if path and recorded.rows:
        failed = bool(getattr(request.node, "rep_call", None)
                      and request.node.rep_call.failed)
        with open(path, "a", encoding="utf-8") as handle:
            for row in recorded.rows:
                handle.write(json.dumps({**row, "passed": not failed}) + "\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
