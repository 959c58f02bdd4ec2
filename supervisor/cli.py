"""The `ntpd-py` command: run the daemon, validate a configuration, simulate.

The command line is argparse (see supervisor/cli_args.py for why not typer);
`build_parser()` is the single description of commands, options and help
texts, from which the man page is generated. Each command imports what it
needs only once it is chosen, so `ntpd-py --help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ntpd_py.core.config_paths import DEFAULT_CONFIG_PATH
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.exit_codes import EX_CONFIG, EX_USAGE

from .cli_args import VersionAction, add_config, add_json, parse

__all__ = ["build_parser", "main", "validate_command"]

CLOCKS = ("system", "observe", "simulated")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


def validate_command(config_path: str | None, as_json: bool) -> int:
    """Validate a configuration file; print a summary or every error. Returns the exit code."""
    from .config_file import (
        directory_warnings,
        file_warnings,
        load_config_file,
        nts_file_warnings,
        shown_issues,
    )

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
    from .summary import config_summary_json, config_summary_lines

    warnings = file_warnings(path) + config.warnings() + directory_warnings(config)
    warnings += nts_file_warnings(config)
    if as_json:
        print(json.dumps(config_summary_json(config, path, warnings)))
        return 0
    for line in config_summary_lines(config, path):
        print(line)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole `ntpd-py` command line (also the source of its man page)."""
    parser = argparse.ArgumentParser(
        prog="ntpd-py",
        description="Time synchronization daemon: NTP and PTP hardware clocks, "
                    "ntpd-rs-compatible configuration.",
        epilog="Exit status: 0 success, 2 usage, 70 panic threshold, 73 cannot create a "
               "directory, 78 configuration error.",
    )
    parser.add_argument("--version", action=VersionAction)
    add_config(parser, top=True)
    add_json(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    validate = commands.add_parser(
        "validate", help="check a configuration file",
        description='Check a configuration file: "configuration OK" and a summary, or every '
                    "error (exit 78).")
    add_config(validate, top=False)
    add_json(validate, top=False)

    run = commands.add_parser(
        "run", help="run the daemon in the foreground",
        description="Run the daemon (the supervisor and its processes) in the foreground.")
    add_config(run, top=False)
    run.add_argument("--clock", choices=CLOCKS,
                     help="override [daemon] clock: system, observe or simulated")
    run.add_argument("--single-process", action="store_true",
                     help="run every loop in this one process")
    run.add_argument("-l", "--log-level", choices=LOG_LEVELS,
                     help="override [observability] log-level")

    simulate = commands.add_parser(
        "simulate", help="run the clock algorithm in a simulated world",
        description="Run the clock algorithm in a simulated world, faster than real time "
                    "(exit 70: panic).")
    simulate.add_argument("scenario", help="scenario file, e.g. deploy/scenarios/*.toml")
    simulate.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    simulate.add_argument("--duration", type=float,
                          help="simulated seconds (default: the scenario's)")
    add_json(simulate, top=False)
    simulate.add_argument("--plot", metavar="PNG",
                          help="draw offset and frequency over time to this PNG")
    return parser


def run_command(args: argparse.Namespace) -> int:
    if args.command == "validate":
        return validate_command(args.config, args.as_json)
    if args.command == "run":
        from .daemon import run_daemon

        if args.as_json:
            print("ntpd-py: error: run has no --json output", file=sys.stderr)
            return EX_USAGE
        return run_daemon(args.config or DEFAULT_CONFIG_PATH, args.clock, args.single_process,
                          args.log_level)
    if args.config is not None:
        print("ntpd-py: error: simulate reads a scenario, not -c/--config", file=sys.stderr)
        return EX_USAGE
    from .simulate_cmd import simulate_command

    return simulate_command(args.scenario, seed=args.seed, duration=args.duration,
                            as_json=args.as_json, plot=args.plot)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_command(parse(build_parser(), argv)))
