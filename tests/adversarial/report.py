"""Run every adversarial scenario and print the reliability table (Markdown).

    sudo .venv/bin/python -m tests.adversarial.report [--out FILE] [--doc [docs/reliability.md]]
                                                      [pytest args]

Runs `tests/adversarial` under pytest (CAP_SYS_TIME dropped, as the test command
does) with NTPDPY_ADVERSARIAL_REPORT pointing at a scratch file; each scenario
appends what it did and measured there (see conftest.Figures). The table goes to
stdout, with --out to a file, and with --doc into docs/reliability.md (or the
Markdown file given) between its reliability-table markers. The exit code is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
BEGIN = "<!-- reliability-table:begin -->"
END = "<!-- reliability-table:end -->"


def replace_between_markers(text: str, table: str, note: str) -> str:
    """`text` with what lies between the reliability-table markers replaced."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} markers")
    return text[: start + len(BEGIN)] + "\n" + note + "\n\n" + table + text[end:]


def _load_cell(row: dict[str, Any], key: str) -> str:
    load = row.get(key)
    if not load:
        return ""
    parts = []
    for name, cpu in load["cpu_percent"].items():
        parts.append(f"{name} {cpu:.0f} %, {load['rss_mb'].get(name, float('nan')):.0f} MB")
    return "; ".join(parts)


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | attacker | load | outcome | CPU, RSS before | CPU, RSS during/after | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["scenario"], row["attacker"], row["load"], row["outcome"],
                 _load_cell(row, "before"), _load_cell(row, "after"),
                 "pass" if row.get("passed", True) else "**FAIL**"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument(
        "--doc", "--readme", dest="doc", nargs="?", const=str(DOC),
        help=f"put the table into this Markdown file between its markers (default {DOC})")
    args, pytest_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="ntpdpy-adv-") as scratch:
        records = Path(scratch) / "records.jsonl"
        env = dict(os.environ, NTPDPY_ADVERSARIAL_REPORT=str(records))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   str(REPO / "tests" / "adversarial"), *pytest_args]
        if shutil.which("capsh") and os.geteuid() == 0:
            command = ["capsh", "--drop=cap_sys_time", "--", "-c",
                       'exec "$0" "$@"', *command]
        code = subprocess.run(command, cwd=REPO, env=env).returncode
        rows = []
        if records.exists():
            rows = [json.loads(line) for line in records.read_text().splitlines() if line]
    table = render(rows)
    sys.stdout.write("\n" + table)
    if args.out:
        Path(args.out).write_text(table)
    if args.doc and rows:
        import datetime
        import platform

        note = (f"Made by `python -m tests.adversarial.report` on "
                f"{datetime.date.today().isoformat()} ({platform.node()}, "
                f"{os.cpu_count()} CPUs, Python {platform.python_version()}).")
        doc = Path(args.doc)
        doc.write_text(replace_between_markers(doc.read_text(), table, note))
    if not rows:
        print("no scenario recorded figures", file=sys.stderr)
        return code or 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
