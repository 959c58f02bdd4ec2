"""What every child does right after the supervisor forks it, before its loop runs.

Close every inherited fd it does not need, drop privileges (when the daemon
runs as root), re-arm the parent-death signal (a uid change clears it), start
from a fresh environment, install signal flags, set up logging, install the
role's seccomp filter, then run the role's main and exit with its code.
Nothing here returns to the supervisor's code: the child always leaves
through ``os._exit``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ntpd_py.core.config import Config
from ntpd_py.core.exit_codes import EX_CRASH, EX_OSERR
from ntpd_py.core.worker_spec import WorkerSpec
from ntpd_py.ipc.messages import BusSlot

from .privileges import Identity, drop_privileges, set_parent_death_signal, set_process_name
from .signals import StopFlag

__all__ = ["ChildContext", "StopFlag", "run_child"]

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass
class ChildContext:
    """Everything a child gets from the supervisor (inherited in memory across fork)."""

    config: Config
    worker_id: str
    role: str
    supervisor_pid: int
    link_fd: int
    spec: WorkerSpec
    seccomp_profile: str  # the registry's name for the role's system-call allow-list
    keep_fds: list[int] = field(default_factory=list)
    identity: Identity | None = None  # the slot's uid/gids when the daemon runs as root
    keep_cap: int | None = None
    # A worker's own bus endpoint (<runtime-dir>/bus/<n>.sock), set by the supervisor.
    bus_path: str = ""
    # clock-control: (ipc.messages.BusSlot, listening fd) for every slot at its start.
    bus_slots: list[tuple[BusSlot, int]] = field(default_factory=list)
    stop: StopFlag = field(default_factory=StopFlag)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ntpd-py"))


def _close_other_fds(keep: set[int]) -> None:
    start = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 65536)


def run_child(ctx: ChildContext, main: Callable[[ChildContext], int]) -> None:
    """Set the child up and run `main`; never returns."""
    code = EX_CRASH
    try:
        set_process_name(f"ntpd-py:{ctx.role}")
        _close_other_fds({ctx.link_fd, *ctx.keep_fds})
        if ctx.identity is not None:
            drop_privileges(ctx.identity, ctx.keep_cap)
        set_parent_death_signal()
        if os.getppid() != ctx.supervisor_pid:
            os._exit(EX_OSERR)  # the supervisor died before we armed the signal
        os.environ.clear()
        os.environ.update(CLEAN_ENV)
        ctx.stop.install()
        from .logutil import setup_child_logging

        # fd 2 is the supervisor's sink (stderr or log-path, opened by it as root).
        ctx.log = setup_child_logging(ctx.config.observability.log_level, ctx.worker_id)
        from .seccomp import install_for_child

        install_for_child(ctx.seccomp_profile, ctx.config.daemon.seccomp, ctx.log)
        code = main(ctx)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EX_CRASH
    except BaseException:
        try:
            from .logutil import journal_format, prefix_lines

            text = f"ntpd-py {ctx.worker_id}: crashed:\n{traceback.format_exc()}".rstrip("\n")
            if journal_format():
                text = prefix_lines(text, logging.CRITICAL)
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            pass
        code = EX_CRASH
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
