"""The man pages: generated from the code, complete, and rendered without warnings.

ntp.toml(5) must name every key of the configuration model (walked here
independently of the generator) with a description; ntpd-py(8) and ntpctl(8)
every command and option of the CLIs. groff and man-db are what a user reads
them with: both must render every page without a warning.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from ntpd_py.core import config as model
from ntpd_py.supervisor import man_cli, man_toml, manpages
from ntpd_py.supervisor.cli_args import subcommands
from pydantic import BaseModel

PAGES = {
    "man8/ntpd-py.8": man_cli.render_ntpd_py,
    "man8/ntpctl.8": man_cli.render_ntpctl,
    "man5/ntp.toml.5": man_toml.render,
}


def _plain(roff: str) -> str:
    """The page as a reader sees it (groff, ASCII, no overstriking)."""
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (tests/run.sh installs groff-base)")
    result = subprocess.run(
        ["groff", "-man", "-Tascii", "-P-c", "-P-b", "-P-u", "-rLL=200n"],
        input=roff, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def _models(cls: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for info in cls.model_fields.values():
        stack: list[typing.Any] = [info.annotation]
        while stack:
            item = stack.pop()
            if isinstance(item, type) and issubclass(item, BaseModel):
                _models(item, seen)
            stack.extend(typing.get_args(item))


def _is_table(annotation: typing.Any) -> bool:
    """A [table] or [[array of tables]] of its own (not an inline value)."""
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item not in (model.PollIntervalLimits, model.PartialPollIntervalLimits,
                                model.StepThreshold)
        stack.extend(typing.get_args(item))
    return False


def _config_models() -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    _models(model.Config, seen)
    # not tables of their own: written inline, or modes refused as not supported yet
    return {m for m in seen if m is not model.StepThreshold
            and not issubclass(m, model._UnsupportedSource)}


@pytest.mark.parametrize("relative", sorted(PAGES))
def test_groff_and_man_render_without_warnings(relative: str, tmp_path: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (tests/run.sh installs groff-base)")
    page = tmp_path / Path(relative).name
    page.write_text(PAGES[relative]())
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shutil.which("man") is not None:
        shown = subprocess.run(["man", "--warnings", "-l", str(page)],
                               capture_output=True, text=True, timeout=60,
                               env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        assert "NAME" in shown.stdout and "SEE ALSO" in shown.stdout


def test_every_key_of_the_model_is_in_ntp_toml_5_with_a_description() -> None:
    text = _plain(man_toml.render())
    missing, undocumented = [], []
    for cls in _config_models():
        for name, info in cls.model_fields.items():
            key = info.alias or name
            if not (info.description or "").strip():
                undocumented.append(f"{cls.__name__}.{name}")
            if _is_table(info.annotation):
                # a table of its own: a section header ([daemon.simulation], [[server]] ...)
                pattern = rf"^\s+\[\[?([a-z-]+\.)?{re.escape(key)}\]\]?(\s|$)"
            elif cls in (model.PollIntervalLimits, model.PartialPollIntervalLimits):
                pattern = re.escape("{ min = INTEGER, max = INTEGER }")  # written inline
                assert key in ("min", "max")
            else:
                # a key is shown at the start of its line: "key — type; default: ..."
                pattern = rf"^\s+{re.escape(key)} -- "
            if not re.search(pattern, text.replace("\u2014", "--"), re.MULTILINE):
                missing.append(f"{cls.__name__}.{key}")
    assert undocumented == [], f"fields without Field(description=...): {undocumented}"
    assert missing == [], f"keys missing from ntp.toml(5): {missing}"
    for header in ("[source-defaults]", "[synchronization]", "[synchronization.algorithm]",
                   "[[server]]", "[server.allowlist]", "[server.denylist]", "[observability]",
                   "[daemon]", "[daemon.simulation]", '[[source]] mode = "ptp"',
                   '[[source]] mode = "server"', '[[source]] mode = "pool"'):
        assert re.search(rf"^\s+{re.escape(header)}\s*$", text, re.MULTILINE), header
    for mode in ("nts", "nts-pool", "sock", "pps"):
        assert f'"{mode}"' in text


def test_ntp_toml_5_shows_the_model_defaults() -> None:
    text = _plain(man_toml.render()).replace("\u2014", "--")
    for key, shown in (("minimum-agreeing-sources", "integer (>= 1); default: 3"),
                       ("observation-permissions", "default: 0o660"),
                       ("startup-step-panic-threshold",
                        'default: { forward = "inf", backward = 86400 }'),
                       ("poll-interval-limits", "default: { min = 4, max = 10 }"),
                       ("clock", 'one of "system", "observe", "simulated"; default: "system"'),
                       ("path", "string; default: required")):
        lines = [line for line in text.splitlines() if line.strip().startswith(f"{key} -- ")]
        assert any(shown in line for line in lines), (key, lines)


@pytest.mark.parametrize("program", ["ntpd-py", "ntpctl"])
def test_every_command_and_option_is_in_the_cli_pages(program: str) -> None:
    if program == "ntpd-py":
        from ntpd_py.supervisor.cli import build_parser
        roff = man_cli.render_ntpd_py()
    else:
        from ntpd_py.supervisor.ctl import build_parser
        roff = man_cli.render_ntpctl()
    text = _plain(roff)
    parser = build_parser()
    commands = subcommands(parser)
    assert commands, "no commands found in the CLI"
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text, f"{program}: {opt} missing"
    for name, command in commands.items():
        assert re.search(rf"^\s+{re.escape(name)}\s*$", text, re.MULTILINE), name
        assert f"{program} {name}" in text
        for action in command._actions:
            for opt in action.option_strings:
                assert opt in text, f"{program} {name}: {opt} missing"
    for section in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{section}\s*$", text, re.MULTILINE), section


def test_the_module_writes_the_three_pages(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ntpd_py.supervisor.manpages", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(PAGES) == sorted(manpages.PAGES)
    for relative, render in PAGES.items():
        text = (tmp_path / relative).read_text(encoding="ascii")
        assert text == render()
        assert (tmp_path / relative).stat().st_mode & 0o777 == 0o644
