"""Shared pytest fixtures and guards for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "deploy" / "examples"


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a configuration text to a file and return its path."""

    def _write(text: str, name: str = "ntp.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write

# Tests marked @pytest.mark.vm run inside the QEMU guest, one boot for the whole batch.
pytest_plugins = ["tests.vm.pytest_plugin"]
