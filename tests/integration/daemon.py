"""Start and stop a real ntpd-py daemon for tests, always by PID.

The daemon runs from this virtualenv's `ntpd-py` script with a generated
configuration whose runtime and state directories live in a short temporary
directory (unix socket paths must stay under 108 bytes). `stop()` sends
SIGTERM to the supervisor and then, by PID, SIGKILLs anything of its process
tree that is still alive — also when the test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


class Daemon:
    def __init__(
        self,
        body: str,
        *,
        clock: str = "simulated",
        extra_args: tuple[str, ...] = (),
        user: str | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ntpd-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.runtime = self.dir / "run"
        self.state = self.dir / "state"
        self.config_path = self.dir / "ntp.toml"
        daemon_table = (
            f'[daemon]\nruntime-dir = "{self.runtime}"\nstate-dir = "{self.state}"\n'
            f'clock = "{clock}"\n'
        )
        if user is None and os.geteuid() == 0:
            user = "nobody"  # the default ntpd-py user does not exist on test machines
        if user is not None:
            daemon_table += (
                f'user = "{user}"\ngroup = "{user if user != "nobody" else "nogroup"}"\n'
            )
        self.write_config(body, daemon_table)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = self.dir / "daemon.log"
        self._log = None
        self._known_pids: set[int] = set()

    def write_config(self, body: str, daemon_table: str | None = None) -> None:
        if daemon_table is not None:
            self._daemon_table = daemon_table
        self.config_path.write_text(body.rstrip() + "\n\n" + self._daemon_table)

    def start(self) -> Daemon:
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "ntpd-py"), "run", "-c", str(self.config_path), *self.extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def children(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self._known_pids.update(k.pid for k in kids)
        return kids

    def ctl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "ntpctl"), *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict[str, Any] | None:
        result = self.ctl("status", "--json")
        if result.returncode != 0:
            return None
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def workers(self) -> dict[str, dict[str, Any]]:
        document = self.status() or {}
        return {p["worker_id"]: p for p in document.get("processes", [])}

    def wait_running(self, worker_ids: list[str], timeout: float = 30) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None and self.proc.poll() is None, (
                f"daemon exited with {self.proc.returncode if self.proc else None}:\n{self.log()}"
            )
            document = self.status()
            if document is None:
                return None
            procs = {p["worker_id"]: p for p in document["processes"]}
            if all(
                procs.get(w, {}).get("state") == "running" and procs[w]["pid"] for w in worker_ids
            ):
                return document
            return None

        result: dict[str, Any] = wait_for(ready, timeout, f"workers {worker_ids} running")
        return result

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM the supervisor; SIGKILL by PID whatever of the tree is left."""
        code = None
        if self.proc is not None:
            self.children()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    code = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code = self.proc.wait(5)
            else:
                code = self.proc.returncode
        for pid in self._known_pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
        if self._log is not None:
            self._log.close()
        return code

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is not None:
            sys.stderr.write(f"--- daemon log ({self.log_path}) ---\n{self.log()}\n")
        self.cleanup()
