"""The reliability table renders every recorded scenario, failures marked."""

from __future__ import annotations

from .report import BEGIN, END, render, replace_between_markers


def test_render_marks_failures_and_escapes_pipes() -> None:
    rows = [
        {"scenario": "control flood", "attacker": "observer", "load": "5000 req/s",
         "outcome": "steering continued | 4900 refused", "passed": True,
         "before": {"cpu_percent": {"clock-control": 1.0}, "rss_mb": {"clock-control": 30.0}},
         "after": {"cpu_percent": {"clock-control": 40.0}, "rss_mb": {"clock-control": 31.0}}},
        {"scenario": "state file", "attacker": "worker", "load": "1 write",
         "outcome": "discarded", "passed": False},
    ]
    table = render(rows).splitlines()
    assert table[0].startswith("| scenario |")
    assert len(table) == 4
    assert "clock-control 1 %, 30 MB" in table[2] and "clock-control 40 %, 31 MB" in table[2]
    assert "steering continued \\| 4900 refused" in table[2]
    assert table[2].endswith("| pass |") and table[3].endswith("| **FAIL** |")


def test_the_table_replaces_only_what_lies_between_the_markers() -> None:
    text = f"# R\n\n## Reliability\n{BEGIN}\nold table\n{END}\n\n## Next\n"
    new = replace_between_markers(text, "| new |\n", "Made today.")
    assert "old table" not in new and "| new |" in new and "Made today." in new
    assert new.startswith("# R\n\n## Reliability\n") and new.endswith(f"{END}\n\n## Next\n")


def test_the_table_lives_in_docs_reliability_md_and_the_readme_points_there() -> None:
    from .report import DOC, REPO

    text = DOC.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index(END)
    readme = (REPO / "README.md").read_text()
    assert BEGIN not in readme and END not in readme
    assert "docs/reliability.md" in readme
