"""The `ntpd-py` command: validate a configuration (and, later, run the daemon)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from ntpd_py.core.config import DEFAULT_CONFIG_PATH
from ntpd_py.core.errors import ConfigError

from .config_file import (
    EX_CONFIG,
    directory_warnings,
    file_warnings,
    load_config_file,
    shown_issues,
)
from .summary import config_summary_json, config_summary_lines

__all__ = ["app", "main", "validate_command"]

app = typer.Typer(
    name="ntpd-py",
    help="Time synchronization daemon: NTP and PTP hardware clocks, ntpd-rs-compatible config.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    str | None,
    typer.Option("-c", "--config", help=f"configuration file [default: {DEFAULT_CONFIG_PATH}]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def validate_command(config_path: str | None, as_json: bool) -> int:
    """Validate a configuration file; print a summary or every error. Returns the exit code."""
    path = config_path or DEFAULT_CONFIG_PATH
    try:
        config = load_config_file(path)
    except ConfigError as exc:
        if as_json:
            issues = [
                {
                    "file": i.file,
                    "line": i.line,
                    "key": i.key,
                    "value": i.value,
                    "message": i.message,
                    "text": i.render(),
                }
                for i in exc.issues
            ]
            print(json.dumps({"schema": 1, "ok": False, "path": path, "errors": issues}))
        else:
            for line in shown_issues(exc):
                print(f"error: {line}", file=sys.stderr)
            count = len(exc.issues)
            print(
                f"configuration invalid: {count} error{'s' if count != 1 else ''}", file=sys.stderr
            )
        return EX_CONFIG
    warnings = file_warnings(path) + config.warnings() + directory_warnings(config)
    if as_json:
        print(json.dumps(config_summary_json(config, path, warnings)))
        return 0
    for line in config_summary_lines(config, path):
        print(line)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


@app.command()
def validate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check a configuration file: "configuration OK" and a summary, or every error (exit 78)."""
    raise typer.Exit(validate_command(config, as_json))


ClockChoice = Annotated[
    str | None,
    typer.Option("--clock", help="override [daemon] clock: system, observe or simulated"),
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="random seed (default: the scenario's)")
]
DurationOption = Annotated[
    float | None, typer.Option("--duration", help="simulated seconds (default: the scenario's)")
]
PlotOption = Annotated[
    str | None, typer.Option("--plot", help="draw offset and frequency over time to this PNG")
]


@app.command()
def run(
    config: ConfigOption = None,
    clock: ClockChoice = None,
    single_process: Annotated[
        bool, typer.Option("--single-process", help="run every loop in this one process")
    ] = False,
    log_level: Annotated[str | None, typer.Option(
        "-l", "--log-level",
        help="override [observability] log-level: trace, debug, info, warn or error")] = None,
) -> None:
    """Run the daemon (the supervisor and its processes) in the foreground."""
    from .daemon import run_daemon

    if clock not in (None, "system", "observe", "simulated"):
        print(f"error: --clock {clock!r}: expected system, observe or simulated", file=sys.stderr)
        raise typer.Exit(2)
    raise typer.Exit(run_daemon(config or DEFAULT_CONFIG_PATH, clock, single_process, log_level))


@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="scenario file, e.g. deploy/scenarios/*.toml")],
    seed: SeedOption = None,
    duration: DurationOption = None,
    as_json: JsonOption = False,
    plot: PlotOption = None,
) -> None:
    """Run the clock algorithm in a simulated world, faster than real time (exit 70: panic)."""
    from .simulate_cmd import simulate_command

    code = simulate_command(scenario, seed=seed, duration=duration, as_json=as_json, plot=plot)
    raise typer.Exit(code)


@app.callback()
def _root() -> None:
    """ntpd-py keeps the system clock on time from NTP servers and PTP hardware clocks."""


def main() -> None:
    app()
