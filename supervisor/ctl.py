"""The `ntpctl` command: inspect and manage a running ntpd-py.

Fast by construction: `status`, `sources` and `workers` import argparse,
tomllib (to peek at where the control socket is), msgpack and pyzmq, and
nothing else heavy: no pydantic, no configuration models, no rich (see
supervisor/cli_args.py for why the command line is argparse and not typer).
`watch` and `validate` import their extra modules once chosen.
`build_parser()` describes every command, option and help text (the man page
is generated from it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli_args import VersionAction, add_config, add_json, parse

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> help; status, sources and workers ask the daemon, the others are below.
COMMANDS = {
    "status": "the clock, every source and every process of the running daemon",
    "sources": "every source: state (* + - x ~ ?), offset, uncertainty, delay, poll, reach",
    "workers": "every process: role, pid, user, uptime, restarts, memory, CPU",
    "watch": "live view of the clock and sources, every second (Ctrl-C quits); "
             "--json: a line each",
    "validate": "check a configuration file (same as `ntpd-py validate`)",
}


def build_parser() -> argparse.ArgumentParser:
    """The whole `ntpctl` command line (also the source of its man page)."""
    parser = argparse.ArgumentParser(
        prog="ntpctl",
        description="Inspect and manage a running ntpd-py (through its control socket, "
                    "[observability] observation-path).",
        epilog="Exit status: 0 success, 2 usage, 69 ntpd-py is not running, 75 busy or "
               "restarting (try again), 76 unexpected reply, 77 permission denied, "
               "78 configuration error.",
    )
    parser.add_argument("--version", action=VersionAction)
    add_config(parser, top=True)
    add_json(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, text in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add_config(sub, top=False)
        add_json(sub, top=False)
    return parser


def _query(command: str, config: str | None, as_json: bool) -> int:
    import json

    from .ctl_client import CtlError, explain, locate, request_data
    from .ctl_format import reply_json, text_output

    try:
        control, runtime_dir = locate(config)
        reply = request_data(control, command, runtime_dir)
    except CtlError as failed:
        exc = explain(config, failed)
        if as_json:
            print(
                json.dumps(
                    {"schema": 1, "command": command, "error": str(exc), "exit_code": exc.code}
                )
            )
        print(f"ntpctl: {exc}", file=sys.stderr)
        return exc.code
    if as_json:
        print(json.dumps(reply_json(reply, command)))
    else:
        sys.stdout.write(text_output(reply, command))
    return 0


def run_command(args: argparse.Namespace) -> int:
    if args.command == "watch":
        from .ctl_watch import watch

        return watch(args.config, args.as_json)
    if args.command == "validate":
        from .cli import validate_command

        return validate_command(args.config, args.as_json)
    return _query(args.command, args.config, args.as_json)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_command(parse(build_parser(), argv)))
