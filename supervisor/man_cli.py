"""The ntpd-py(8) and ntpctl(8) man pages, generated from the command-line definitions.

The commands, their arguments, options and help texts are read from the argparse
parsers themselves (`build_parser()` of supervisor/cli.py and supervisor/ctl.py),
so the pages list exactly what the programs accept. What the parsers cannot say
(exit statuses, files, signals) is the short prose below.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from .cli_args import subcommands
from .man_toml import _esc as roff_escape

__all__ = ["render_ntpctl", "render_ntpd_py"]


def _esc(text: str) -> str:
    """One roff line of help text: whitespace collapsed, escaped as ntp.toml(5) escapes."""
    return roff_escape(" ".join(text.split()))


def _version() -> str:
    try:
        return metadata.version("ntpd-py")
    except metadata.PackageNotFoundError:
        return "unknown"


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
            and not isinstance(a, argparse._SubParsersAction)]


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None and not action.option_strings:
        return "{" + "|".join(str(c) for c in action.choices) + "}"
    if action.metavar:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + "|".join(str(c) for c in action.choices) + "}"
    return str(action.dest).upper().replace("_", "-")


def _option_lines(actions: list[argparse.Action]) -> list[str]:
    lines: list[str] = []
    for action in actions:
        value = _value(action)
        if action.option_strings:
            names = ", ".join(f"\\fB{_esc(o)}\\fR" for o in action.option_strings)
            head = names + (f" \\fI{_esc(value)}\\fR" if value else "")
        else:
            head = f"\\fI{_esc(value)}\\fR"
        lines += [".TP", head, _esc(action.help or "(no description)")]
    return lines


def _command_lines(program: str, name: str, command: argparse.ArgumentParser) -> list[str]:
    actions = _shown(command)
    synopsis = [f"\\fB{_esc(program)} {_esc(name)}\\fR"]
    for action in actions:
        value = _value(action)
        if action.option_strings:
            flag = f"\\fB{_esc(action.option_strings[-1])}\\fR"
            synopsis.append(f"[{flag}{' ' + _esc(value) if value else ''}]")
        else:
            synopsis.append(f"\\fI{_esc(value)}\\fR")
    lines = [f".SS {_esc(name)}", ".PP", " ".join(synopsis), ".PP",
             _esc(command.description or "")]
    return lines + _option_lines(actions)


def _page(program: str, parser: argparse.ArgumentParser, name_line: str, extra: str) -> str:
    version = _esc(_version())
    lines = [
        f'.TH {_esc(program.upper())} 8 "" "ntpd\\-py {version}" "System Administration"',
        ".SH NAME",
        f"{_esc(program)} \\- {_esc(name_line)}",
        ".SH SYNOPSIS",
        f"\\fB{_esc(program)}\\fR [\\fB\\-c\\fR \\fIFILE\\fR] [\\fB\\-\\-json\\fR] "
        f"\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".br",
        f"\\fB{_esc(program)}\\fR \\fB\\-\\-version\\fR | \\fB\\-\\-help\\fR",
        ".SH DESCRIPTION",
        _esc(parser.description or ""),
        "\\fB\\-c\\fR and \\fB\\-\\-json\\fR may be given before or after the command.",
        ".SH OPTIONS",
        *_option_lines(_shown(parser)),
        ".SH COMMANDS",
    ]
    for name, command in subcommands(parser).items():
        lines += _command_lines(program, name, command)
    lines.append(extra.rstrip("\n"))
    return "\n".join(lines) + "\n"


_NTPD_PY_EXTRA = """\
.SH SIGNALS
.TP
.B SIGTERM
stop every process within 5 s and exit 0
.TP
.B SIGHUP
re\\-read the configuration (only processes whose settings changed are
restarted; a file with errors is rejected and the running set kept) and reopen
the log file
.SH EXIT STATUS
.TP
.B 0
stopped by SIGTERM, or the command succeeded
.TP
.B 2
wrong usage
.TP
.B 70
refused to step the clock beyond a panic threshold (not restarted by the
systemd unit: set the clock by hand or raise the threshold)
.TP
.B 73
a runtime, state or socket directory cannot be created or is unsafe
.TP
.B 75
the runtime directory or a socket in it vanished while running
.TP
.B 77
missing privilege: CAP_SYS_TIME for clock = "system", the daemon's user, a
port that cannot be bound
.TP
.B 78
the configuration is invalid (every error is printed)
.SH FILES
.TP
.I /etc/ntpd\\-py/ntp.toml
the configuration, see
.BR ntp.toml (5)
.TP
.I /run/ntpd\\-py/
runtime directory: control socket, bus endpoints, saved state
.TP
.I /var/lib/ntpd\\-py/
state directory: the drift file
.SH SEE ALSO
.BR ntpctl (8),
.BR ntp.toml (5),
.BR systemd.service (5)
"""

_NTPCTL_EXTRA = """\
.SH EXIT STATUS
.TP
.B 0
success
.TP
.B 2
wrong usage
.TP
.B 69
ntpd\\-py is not running (no control socket at observation\\-path)
.TP
.B 75
no answer within 2 s (busy or hung), or clock\\-control is restarting
.TP
.B 76
an unexpected reply
.TP
.B 77
permission denied on the control socket: join the daemon's group or use sudo
.TP
.B 78
the configuration is invalid
.SH FILES
.TP
.I /etc/ntpd\\-py/ntp.toml
read for [observability] observation\\-path, the control socket
.TP
.I /run/ntpd\\-py/observe
the default control socket (mode 0660, the daemon's group)
.SH SEE ALSO
.BR ntpd\\-py (8),
.BR ntp.toml (5)
"""


def render_ntpd_py() -> str:
    """The whole ntpd-py(8) page as roff."""
    from .cli import build_parser

    return _page("ntpd-py", build_parser(),
                 "privilege-separated time synchronization daemon (NTP and PTP hardware clocks)",
                 _NTPD_PY_EXTRA)


def render_ntpctl() -> str:
    """The whole ntpctl(8) page as roff."""
    from .ctl import build_parser

    return _page("ntpctl", build_parser(), "inspect and manage a running ntpd-py",
                 _NTPCTL_EXTRA)
