"""Every exit status ntpd-py and ntpctl use, with its sysexits.h name.

One table, so that the supervisor, the workers, the CLIs, the unit file's
``RestartPreventExitStatus`` and the documentation agree. The values follow
sysexits.h (as ntpd-rs does for a refused step: 70), except the two that come
from Python and argparse themselves (1 and 2).
"""

from __future__ import annotations

__all__ = [
    "EX_CANTCREAT",
    "EX_CONFIG",
    "EX_CRASH",
    "EX_NOPERM",
    "EX_OK",
    "EX_OSERR",
    "EX_PROTOCOL",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "EX_USAGE",
]

EX_OK = 0
# An unexpected exception in a worker (Python's own status for one); 70 stays reserved
# for the clock algorithm's panic so the supervisor can tell the two apart.
EX_CRASH = 1
# A command line argparse cannot parse: argparse's status, not sysexits' 64.
EX_USAGE = 2
EX_UNAVAILABLE = 69  # the daemon is not running; --plot without matplotlib
EX_SOFTWARE = 70  # panic: the clock algorithm refused a step (ntpd-rs uses 70 too)
EX_OSERR = 71  # an OS-level failure in a child (its supervisor is gone)
EX_CANTCREAT = 73  # a directory or socket the daemon needs is unsafe or cannot be made
EX_TEMPFAIL = 75  # the runtime directory vanished; clock-control restarting (ntpctl)
EX_PROTOCOL = 76  # ntpctl got a reply it cannot read
EX_NOPERM = 77  # not allowed (the control socket; privileges at start)
EX_CONFIG = 78  # the configuration is invalid


class PanicExit(Exception):
    """The algorithm refused a step beyond a panic threshold; the process exits with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
