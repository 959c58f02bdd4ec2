"""The `ntpctl` command: inspect and manage a running ntpd-py."""

from __future__ import annotations

import json
import sys

import typer

from .cli import ConfigOption, JsonOption, validate_command
from .ctl_client import CtlError, locate, request
from .ctl_format import reply_json, text_output

__all__ = ["app", "main"]

app = typer.Typer(
    name="ntpctl",
    help="Inspect and manage a running ntpd-py (through its control socket, observation-path).",
    no_args_is_help=True,
    add_completion=False,
)


def _query(command: str, config: str | None, as_json: bool) -> int:
    try:
        control, runtime_dir = locate(config)
        reply = request(control, command, runtime_dir)
    except CtlError as exc:
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


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The clock, every source and every process of the running daemon."""
    raise typer.Exit(_query("status", config, as_json))


@app.command()
def sources(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every source: state (* + - x ~ ?), offset, uncertainty, delay, poll, reach."""
    raise typer.Exit(_query("sources", config, as_json))


@app.command()
def workers(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every process: role, pid, user, uptime, restarts, memory, CPU."""
    raise typer.Exit(_query("workers", config, as_json))


@app.command()
def watch(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Live view of the clock and sources, every second (Ctrl-C quits); --json: a line each."""
    from .ctl_watch import watch as run_watch

    raise typer.Exit(run_watch(config, as_json))


@app.command()
def validate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check a configuration file (same as `ntpd-py validate`)."""
    raise typer.Exit(validate_command(config, as_json))


def main() -> None:
    app()
