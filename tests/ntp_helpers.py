"""Helpers for the NTP tests that use real sockets and real processes (loopback only)."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Started:
    """A process started by a test, with the output it printed so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_until(self, needle: str, timeout_s: float) -> str:
        """Read stdout lines until one contains ``needle``; fail after ``timeout_s``."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + timeout_s
        try:
            while time.monotonic() < end:
                if not sel.select(max(end - time.monotonic(), 0)):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line)
                if needle in line:
                    return line
        finally:
            sel.close()
        raise AssertionError(f"{needle!r} not seen within {timeout_s} s; output: {self.lines}")

    def stop(self, timeout_s: float = 5.0) -> str:
        """SIGTERM, then SIGKILL, by PID; return the rest of stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate(timeout=timeout_s)
        return rest or ""


@contextlib.contextmanager
def started(cmd: Sequence[str], ready: str | None = None, timeout_s: float = 15.0,
            **popen: object) -> Iterator[Started]:
    """Start ``cmd`` (stdout piped, stderr merged), wait for ``ready``, always stop it."""
    proc = subprocess.Popen(  # type: ignore[call-overload]
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )
    handle = Started(proc)
    try:
        if ready is not None:
            handle.read_until(ready, timeout_s)
        yield handle
    finally:
        handle.stop()


def serve_cmd(listen: str, *extra: str) -> list[str]:
    return [PYTHON, "-m", "ntpd_py.workers.ntp_serve", "--listen", listen, *extra]


def is_root() -> bool:
    return os.geteuid() == 0


def have(program: str) -> bool:
    return shutil.which(program) is not None


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    """A fresh network namespace with loopback up; deleted afterwards."""
    name = f"ntpdpy-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def sigint_as_a_terminal_gives_it() -> None:
    """preexec_fn: SIGINT at its default, as an interactive shell starts a command.

    A test run started in the background by a non-interactive shell inherits SIGINT
    ignored (POSIX), and Python then installs no KeyboardInterrupt handler: a test that
    stops `ntpctl watch` with SIGINT (Ctrl-C) would wait for ever."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
