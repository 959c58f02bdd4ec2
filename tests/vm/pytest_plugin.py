"""pytest plugin: tests marked ``@pytest.mark.vm`` run inside the QEMU guest, one boot per session.

On the host, every selected vm test item is replaced by a stand-in. The first
stand-in to run boots the guest once and runs ``pytest -m vm <all selected vm
node ids>`` there; the guest side of this plugin writes each test's outcome to
the run directory (shared with the host), and every stand-in then reports its
own test's guest outcome (passed, failed with the guest's traceback, skipped
with the guest's reason). Test bodies and fixtures never run on the host.

Inside the guest (NTPDPY_IN_VM=1) vm tests run normally. The guest run's
timeout is NTPDPY_VM_TIMEOUT seconds (default 600).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from .harness import REPO, GuestResult, HarnessUnavailable, run_in_guest

__all__ = ["pytest_collection_modifyitems", "pytest_runtest_logreport"]

IN_GUEST = os.environ.get("NTPDPY_IN_VM") == "1"
RESULTS = "results.jsonl"
_BATCH = pytest.StashKey[dict[str, Any]]()


class GuestFailure(Exception):
    """A vm test failed in the guest; the message is the guest's report."""


class GuestTest(pytest.Item):
    """Host-side stand-in for one vm test: reports that test's outcome in the guest."""

    def __init__(self, *, location: tuple[str, int | None, str], **kw: Any) -> None:
        super().__init__(**kw)
        self._location = location

    def runtest(self) -> None:
        batch = _run_batch(self.config)
        outcome = batch["results"].get(self.nodeid)
        if outcome is None:
            raise GuestFailure(f"the guest did not report this test.\n{batch['summary']}")
        if outcome["outcome"] == "skipped":
            # reported at the test's own location, not this line
            raise pytest.skip.Exception(f"in the guest: {outcome['text']}",
                                        _use_item_location=True)
        if outcome["outcome"] == "failed":
            raise GuestFailure(f"failed in the QEMU guest ({outcome['when']}):\n{outcome['text']}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, GuestFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self._location


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only selected tests go to the guest
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if IN_GUEST:
        return
    for i, item in enumerate(items):
        if item.get_closest_marker("vm") is None or item.parent is None:
            continue
        stand_in = GuestTest.from_parent(item.parent, name=item.name, location=item.location)
        stand_in.own_markers.extend(item.own_markers)
        items[i] = stand_in
    config.stash[_BATCH] = {"nodeids": [i.nodeid for i in items if isinstance(i, GuestTest)]}


def _run_batch(config: pytest.Config) -> dict[str, Any]:
    batch = config.stash[_BATCH]
    if "results" in batch:
        return batch
    batch["results"], batch["summary"] = {}, ""
    # hypothesis's plugin alone costs ~15 s of start-up under TCG; no vm test uses it
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
            "-q", "-m", "vm",
            *batch["nodeids"]]
    timeout = float(os.environ.get("NTPDPY_VM_TIMEOUT", "600"))
    try:
        result = run_in_guest(shlex.join(args), cwd=REPO, timeout_s=timeout)
    except HarnessUnavailable as exc:
        batch["results"] = {n: {"outcome": "skipped", "when": "setup", "text": str(exc)}
                            for n in batch["nodeids"]}
        return batch
    batch["results"] = _read_results(result.run_dir / RESULTS)
    batch["summary"] = _summary(result)
    (result.run_dir / "output.txt").write_text(result.output)
    return batch


def _summary(result: GuestResult) -> str:
    tail = "\n".join(result.output.splitlines()[-40:]) or result.console[-4000:]
    notes = "".join(f"\n{n}" for n in result.notes)
    return (f"guest pytest exit status {result.returncode} after {result.wall_s:.0f} s{notes}; "
            f"full output in {result.run_dir}/output.txt; last lines:\n{tail}")


def _read_results(path: Path) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        previous = results.get(rec["nodeid"])
        # a test is as bad as its worst phase (setup, call, teardown)
        if previous is None or previous["outcome"] == "passed":
            results[rec["nodeid"]] = rec
    return results


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the guest: append each phase's outcome for the host to read."""
    run_dir = os.environ.get("NTPDPY_VM_RUN_DIR")
    if not IN_GUEST or not run_dir:
        return
    if report.when != "call" and report.outcome == "passed":
        return
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    else:
        text = report.longreprtext
    rec = {"nodeid": report.nodeid, "outcome": report.outcome, "when": report.when, "text": text}
    with open(Path(run_dir) / RESULTS, "a") as out:
        out.write(json.dumps(rec) + "\n")
