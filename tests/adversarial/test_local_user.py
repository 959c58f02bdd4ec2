"""A local user outside the daemon's group reaches nothing of the daemon's.

Real daemon started as root; the probe is a real process running as a uid that is
neither the daemon's user, in its group, nor a worker's. It tries everything a
curious or hostile user could: list the runtime directory, create a file there,
read clock-control's state, connect to the control socket, the state feed and
every worker's bus endpoint, and signal clock-control. Each must be refused by
the kernel (EACCES/EPERM), and the daemon keeps running unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import load_pids, phc_config
from tests.adversarial.load import measure
from tests.integration.daemon import Daemon
from tests.ntp_helpers import free_udp_port, is_root

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not is_root(), reason="the probe changes its uid: needs root"),
]

STRANGER = 4242  # no passwd entry on test machines, not in nogroup, not in the worker range

def _probe(runtime: str, control: str, cc_pid: int, endpoints: list[str]) -> dict[str, str]:
    """Everything a curious user tries; what the kernel answered to each."""
    result: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
            result[name] = "ok"
        except OSError as exc:
            result[name] = errno.errorcode.get(exc.errno or 0, str(exc.errno))

    def connect(path: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)

    attempt("list runtime dir", lambda: os.listdir(runtime))
    attempt("create file in runtime dir", lambda: os.close(
        os.open(os.path.join(runtime, "x"), os.O_CREAT | os.O_WRONLY, 0o600)))
    attempt("read clock-control.state",
            lambda: os.close(os.open(os.path.join(runtime, "clock-control.state"), os.O_RDONLY)))
    attempt("connect control socket", lambda: connect(control))
    attempt("connect state feed", lambda: connect(os.path.join(runtime, "state.sock")))
    for name in endpoints:
        attempt(f"connect bus/{name}", lambda name=name: connect(  # type: ignore[misc]
            os.path.join(runtime, "bus", name)))
    attempt("signal clock-control", lambda: os.kill(cc_pid, 0))
    return result


def _probe_as_stranger(*args: Any) -> dict[str, str]:
    """Run `_probe` in a forked child that has become uid/gid STRANGER (no exec: the
    interpreter's files need not be readable by that uid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(STRANGER, STRANGER, STRANGER)
            os.setresuid(STRANGER, STRANGER, STRANGER)
            os.write(w, json.dumps(_probe(*args)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    result: dict[str, str] = json.loads(data)
    return result


BODY = phc_config(tables='\n[[server]]\nlisten = "127.0.0.1:{port}"\n')


def test_a_local_user_outside_the_group_is_refused_everywhere(figures: Figures) -> None:
    with Daemon(BODY.format(port=free_udp_port())) as daemon:
        document = daemon.wait_running(["clock-control", "ptp:/dev/ptp0", "server"])
        pids = load_pids(daemon, {"PTP worker": "ptp:/dev/ptp0"}, document)
        before_pids = {p["worker_id"]: p["pid"] for p in document["processes"]}
        endpoints = sorted(p.name for p in (daemon.runtime / "bus").glob("*.sock"))
        assert endpoints, "no bus endpoints"
        before = measure(pids, 1.0)
        control = str(daemon.runtime / "observe")
        result = _probe_as_stranger(str(daemon.runtime), control, pids["clock-control"],
                                    endpoints)
        after = measure(pids, 1.0)
        after_doc = daemon.status()
        assert after_doc is not None
        after_pids = {p["worker_id"]: p["pid"] for p in after_doc["processes"]}
        refused = {k: v for k, v in result.items() if v in ("EACCES", "EPERM")}
        figures.record(
            scenario="a local user probing the daemon",
            attacker=f"local user outside the daemon's group (uid {STRANGER})",
            load=f"{len(result)} attempts: list/create in the runtime dir, read the state, "
                 f"connect to control, state feed and {len(endpoints)} bus endpoints, signal",
            outcome=f"{len(refused)} of {len(result)} refused by the kernel "
                    f"({', '.join(f'{k}: {v}' for k, v in result.items())}); "
                    f"processes unchanged: {after_pids == before_pids}",
            before=before, after=after)
        for name, outcome in result.items():
            expected = "EPERM" if name == "signal clock-control" else "EACCES"
            assert outcome == expected, (name, outcome)
        assert after_pids == before_pids
