"""Signal handlers that only set a flag: the loops look at it between steps."""

from __future__ import annotations

import signal

__all__ = ["StopFlag"]


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps."""

    def __init__(self) -> None:
        self.stop = False

    def __call__(self) -> bool:
        return self.stop

    def install(self) -> None:
        def _handler(signum: int, frame: object) -> None:
            self.stop = True

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's job
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
