"""The `ntpctl` command: inspect and manage a running ntpd-py."""

from __future__ import annotations

import typer

from .cli import ConfigOption, JsonOption, validate_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="ntpctl",
    help="Inspect and manage a running ntpd-py.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def validate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check a configuration file (same as `ntpd-py validate`)."""
    raise typer.Exit(validate_command(config, as_json))


@app.callback()
def _root() -> None:
    """ntpctl talks to the daemon through its control socket (observation-path)."""


def main() -> None:
    app()
