"""The ntpd-py(8) and ntpctl(8) man pages, generated from the command-line definitions.

The commands, their arguments, options and help texts are read from the CLI
objects themselves (typer builds click commands: `typer.main.get_command`), so
the pages list exactly what the programs accept. What the code cannot say
(exit statuses, files, signals) is the short prose below. Self-contained on
purpose: a rewrite of the CLI replaces this module with one offering the same
two functions, `render_ntpd_py()` and `render_ntpctl()`.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

__all__ = ["render_ntpctl", "render_ntpd_py"]


def _esc(text: str) -> str:
    """Text for a roff line: backslashes, hyphens (as typed), non-ASCII as \\[uXXXX]."""
    out = []
    for char in " ".join(text.split()):
        if char == "\\":
            out.append("\\e")
        elif char == "-":
            out.append("\\-")
        elif ord(char) > 126:
            out.append(f"\\[u{ord(char):04X}]")
        else:
            out.append(char)
    line = "".join(out)
    return "\\&" + line if line[:1] in (".", "'") else line


def _version() -> str:
    try:
        return metadata.version("ntpd-py")
    except metadata.PackageNotFoundError:
        return "unknown"


def _metavar(param: Any) -> str:
    if param.metavar:
        return str(param.metavar)
    return "FILE" if param.name == "config" else str(param.name).upper().replace("_", "-")


def _command_lines(program: str, name: str, command: Any) -> list[str]:
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    synopsis = [f"\\fB{_esc(program)} {_esc(name)}\\fR"]
    synopsis += [f"[\\fB{_esc(o.opts[-1])}\\fR{'' if o.is_flag else ' ' + _esc(_metavar(o))}]"
                 for o in options]
    synopsis += [f"\\fI{_esc(_metavar(a))}\\fR" for a in arguments]
    lines = [f".SS {_esc(name)}", ".PP", " ".join(synopsis), ".PP",
             _esc(command.help or "")]
    for argument in arguments:
        lines += [".TP", f"\\fI{_esc(_metavar(argument))}\\fR",
                  _esc(getattr(argument, "help", None) or "")]
    for option in options:
        names = ", ".join(f"\\fB{_esc(o)}\\fR" for o in (*option.opts, *option.secondary_opts))
        value = "" if option.is_flag else f" \\fI{_esc(_metavar(option))}\\fR"
        lines += [".TP", names + value, _esc(option.help or "(no description)")]
    return lines


def _page(program: str, group: Any, name_line: str, extra: str) -> str:
    version = _esc(_version())
    lines = [
        f'.TH {_esc(program.upper())} 8 "" "ntpd\\-py {version}" "System Administration"',
        ".SH NAME",
        f"{_esc(program)} \\- {_esc(name_line)}",
        ".SH SYNOPSIS",
        f"\\fB{_esc(program)}\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".br",
        f"\\fB{_esc(program)}\\fR \\fB\\-\\-help\\fR",
        ".SH DESCRIPTION",
        _esc(group.help or ""),
        ".SH COMMANDS",
    ]
    for name, command in sorted(group.commands.items()):
        if not command.hidden:
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
    import typer

    from .cli import app

    return _page("ntpd-py", typer.main.get_command(app),
                 "privilege-separated time synchronization daemon (NTP and PTP hardware clocks)",
                 _NTPD_PY_EXTRA)


def render_ntpctl() -> str:
    """The whole ntpctl(8) page as roff."""
    import typer

    from .ctl import app

    return _page("ntpctl", typer.main.get_command(app),
                 "inspect and manage a running ntpd-py", _NTPCTL_EXTRA)
