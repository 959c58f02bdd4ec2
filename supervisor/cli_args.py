"""What `ntpd-py` and `ntpctl` share on their command lines: argparse, `-c` anywhere, `--version`.

Both programs were typer applications. Importing typer (with click and rich)
and building its commands took longer than the target for a whole `ntpctl
status` (at most 6 times a bare interpreter start), and typer attaches options
to one level only, so `ntpctl -c FILE status` (ntpd-rs's `ntp-ctl` order) could
not work. argparse is in the standard library, costs a few milliseconds, and
its parser objects describe every command, option and help text: the man pages
are generated from `build_parser()` of each program.

`-c/--config` and `--json` are accepted before and after the command: the
program-level option stores the value, the command-level one stores it only
when it is given (default SUPPRESS), so neither position overrides the other
with a default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ntpd_py.core.config_paths import DEFAULT_CONFIG_PATH
from ntpd_py.core.exit_codes import EX_USAGE

__all__ = [
    "EX_USAGE",
    "VersionAction",
    "add_config",
    "add_json",
    "package_version",
    "parse",
    "subcommands",
]

CONFIG_HELP = f"configuration file (default: {DEFAULT_CONFIG_PATH})"
JSON_HELP = "print one JSON object instead of text"


def package_version() -> str:
    # importlib.metadata costs more than the rest of `ntpctl status`: only on --version.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ntpd-py")
    except PackageNotFoundError:
        return "unknown (not installed)"


class VersionAction(argparse.Action):
    """`--version`: print "<prog> <package version>" and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                         help=help or "print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        prog = parser.prog.split()[0]
        print(f"{prog} (ntpd-py) {package_version()}" if prog != "ntpd-py"
              else f"ntpd-py {package_version()}")
        parser.exit(0)


def add_config(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP,
                        default=None if top else argparse.SUPPRESS)


def add_json(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument("--json", dest="as_json", action="store_true", help=JSON_HELP,
                        default=False if top else argparse.SUPPRESS)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, or print the help and exit 2 when no command is given."""
    args = list(sys.argv[1:] if argv is None else argv)
    namespace = parser.parse_args(args)
    if getattr(namespace, "command", None) is None:
        parser.print_help(sys.stderr)
        parser.exit(EX_USAGE)
    return namespace


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of each command of `parser` (for the man pages), in help order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
