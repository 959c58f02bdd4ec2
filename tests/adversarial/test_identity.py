"""A compromised worker cannot take over another source (issue #17, items 2 and 8).

Real daemon (as root: workers get uids of their own), real impostor processes
running as a worker's uid or as root. Each test asserts the outcome: the other
source keeps being heard, the clock is not moved, the attempt is counted, and a
leftover of a worker's uid is killed before the worker is restarted. Each records
what it did and measured (`figures`), with the CPU/RSS of the daemon's processes
before and during the attack where there is one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import zmq  # noqa: F401  (loaded before the fork: a worker uid may not read the interpreter's files)

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import load_pids, phc_config
from tests.adversarial.load import Background, measure
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import is_root

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not is_root(), reason="distinct worker uids need the daemon started "
                       "as root"),
]

A, B = "ptp:/dev/ptp0", "ptp:/dev/ptp1"
TWO_PHCS = phc_config("/dev/ptp0", "/dev/ptp1")

# Runs as the impostor: connects a DEALER with a chosen routing id to a slot and
# sends the given frames (hex), then holds the connection until killed.
IMPOSTOR = r"""
import sys, time, zmq
path, routing_id, frames, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())
sock.setsockopt(zmq.LINGER, 2000)
sock.connect("ipc://" + path)
for frame in filter(None, frames.split(",")):
    sock.send(bytes.fromhex(frame))
    time.sleep(0.05)
print("sent", flush=True)
time.sleep(hold)
sock.close()
ctx.term()
"""

# Runs as worker A's uid: may it signal B, or connect to B's endpoint?
PROBE = r"""
import errno, json, os, socket, sys
b_pid, b_path, a_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
result = {}
try:
    os.kill(b_pid, 0)
    result["kill"] = "ok"
except OSError as exc:
    result["kill"] = errno.errorcode[exc.errno]
for name, path in (("connect_b", b_path), ("connect_a", a_path)):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        result[name] = "ok"
    except OSError as exc:
        result[name] = errno.errorcode[exc.errno]
    finally:
        s.close()
print(json.dumps(result))
"""


class Forked:
    """A forked process running `script` (as `uid` when given), stdout to a pipe."""

    def __init__(self, uid: int | None, script: str, *args: str) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the impostor: never returns to pytest
            code = 1
            try:
                os.close(read_fd)
                os.dup2(write_fd, 1)
                if uid is not None:
                    os.setgroups([])
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                sys.argv = ["impostor", *args]
                sys.stdout = os.fdopen(1, "w")
                exec(script, {"__name__": "__main__"})
                code = 0
            except BaseException as exc:  # reported to the test via stdout
                print(f"error: {exc!r}", flush=True)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                os._exit(code)
        os.close(write_fd)
        self.pid = pid
        self.stdout = os.fdopen(read_fd)
        self.returncode: int | None = None

    def readline(self) -> str:
        return self.stdout.readline()

    def communicate(self, timeout: float) -> str:
        out = self.stdout.read()
        self.wait(timeout)
        return out

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) \
                    else os.WEXITSTATUS(status)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"pid {self.pid} still running")
            else:
                time.sleep(0.02)
        return self.returncode

    def stop(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # by pid
            self.wait(10)
        self.stdout.close()


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid for {pid}")


def _samples(document: dict, source_id: str) -> int:
    for source in document["sources"]:
        if source["source_id"] == source_id:
            return int(source["samples"])
    raise AssertionError(f"{source_id} missing")


def _drops(document: dict) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(document["ipc_dropped"].items())
                     if n) or "none"


def _ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with {returncode}"


def _slot_path(daemon: Daemon, uid: int) -> Path:
    owned = [p for p in (daemon.runtime / "bus").glob("*.sock") if p.stat().st_uid == uid]
    assert len(owned) == 1, f"one endpoint for uid {uid}: {owned}"
    return owned[0]


def _sample_frame(source_id: str, offset_s: float) -> str:
    from ntpd_py.ipc.framing import encode
    from ntpd_py.ipc.messages import SampleMsg

    return encode(SampleMsg(
        source_id=source_id, kind="ptp", offset_s=offset_s, delay_s=1e-7, uncertainty_s=5e-8,
        root_delay_s=0.0, root_dispersion_s=0.0, stratum=0, leap=0, reference_id=0,
        mono_ns=time.clock_gettime_ns(time.CLOCK_MONOTONIC), realtime_ns=time.time_ns(),
        poll_log2=0)).hex()


def _start(daemon: Daemon) -> tuple[dict, dict[str, int]]:
    daemon.wait_running(["clock-control", A, B])
    wait_for(lambda: (lambda d: d and d["clock"].get("synchronized")
                      and all(_samples(d, s) > 3 for s in (A, B)))(daemon.status()), 40,
             "synchronized on both PHCs")
    document = daemon.status()
    assert document is not None
    pids = {p["worker_id"]: p["pid"] for p in document["processes"]}
    return document, pids


def test_a_worker_cannot_signal_or_reach_another(figures: Figures) -> None:
    with Daemon(TWO_PHCS) as daemon:
        _, pids = _start(daemon)
        uid_a, uid_b = _uid_of(pids[A]), _uid_of(pids[B])
        assert uid_a != uid_b and 0 not in (uid_a, uid_b)
        assert _uid_of(pids["clock-control"]) not in (uid_a, uid_b)
        path_a, path_b = _slot_path(daemon, uid_a), _slot_path(daemon, uid_b)
        probe = Forked(uid_a, PROBE, str(pids[B]), str(path_b), str(path_a))
        out = probe.communicate(timeout=30)
        assert probe.returncode == 0, out
        result = json.loads(out)
        # Nor clock-control: it runs as the configured user.
        probe = Forked(uid_a, PROBE, str(pids["clock-control"]), str(path_b), str(path_a))
        out_cc = probe.communicate(timeout=30)
        kill_cc = json.loads(out_cc).get("kill") if out_cc.startswith("{") else out_cc.strip()
        figures.record(
            scenario="signal or reach another worker",
            attacker="compromised PTP worker (its own uid)",
            load="kill(pid, 0) on the other PTP worker and on clock-control; connect() to "
                 "the other worker's bus endpoint and to its own",
            outcome=f"kill other worker: {result.get('kill')}, kill clock-control: {kill_cc}; "
                    f"connect other endpoint: {result.get('connect_b')}, own: "
                    f"{result.get('connect_a')}; worker uids {uid_a}, {uid_b}")
        assert result == {"kill": "EPERM", "connect_b": "EACCES", "connect_a": "ok"}, result
        assert json.loads(out_cc)["kill"] == "EPERM"


def test_frames_claiming_another_source_are_dropped_not_accepted(figures: Figures) -> None:
    with Daemon(TWO_PHCS) as daemon:
        before, pids = _start(daemon)
        uid_a = _uid_of(pids[A])
        path_a = _slot_path(daemon, uid_a)
        frames = ",".join(_sample_frame(B, 3600.0) for _ in range(20))
        measured = load_pids(daemon, {"worker A": A, "worker B": B})
        quiet = measure(measured, 1.0)
        during = Background(measured, 1.0)
        # As root (who may connect anywhere) and as A's own uid: both with B's routing id.
        for uid in (None, uid_a):
            impostor = Forked(uid, IMPOSTOR, str(path_a), B, frames, "1")
            try:
                out = impostor.communicate(timeout=30)
                assert "sent" in out and impostor.returncode == 0, out
            finally:
                impostor.stop()
        document = wait_for(lambda: (lambda d: d if d and d["ipc_dropped"].get(
            "wrong-source", 0) >= 20 else None)(daemon.status()), 20, "wrong-source counted")
        assert document["ipc_dropped"]["wrong-source"] >= 20
        b_now = _samples(document, B)
        b_later = wait_for(lambda: (lambda n: n if n > b_now + 2 else None)(
            _samples(daemon.status(), B)), 15, "B still heard")  # type: ignore[arg-type]
        clock = daemon.status()["clock"]  # type: ignore[index]
        figures.record(
            scenario="frames claiming another source",
            attacker="compromised PTP worker A (its own uid; and root) on A's bus endpoint",
            load="2 × 20 samples claiming to be PTP source B at +3600 s, one per 50 ms",
            outcome=f"bus drops {_drops(document)}; "
                    f"B samples kept rising {b_now}→{b_later}; steps "
                    f"{before['clock']['steps']}→{clock['steps']}; offset "
                    f"{clock['offset_s']:+.1e} s, synchronized {clock['synchronized']}",
            before=quiet, after=during.result())
        assert clock["steps"] == before["clock"]["steps"], "no step from the +3600 s claims"
        assert clock["synchronized"]
        assert abs(clock["offset_s"]) < 0.1, clock
        assert all(abs(s.get("offset_s") or 0.0) < 1.0 for s in daemon.status()["sources"])  # type: ignore[index]


def test_a_restarted_worker_is_heard_again_and_its_impostor_killed(
        figures: Figures) -> None:
    with Daemon(TWO_PHCS) as daemon:
        _, pids = _start(daemon)
        uid_a = _uid_of(pids[A])
        path_a = _slot_path(daemon, uid_a)
        # A compromised A: holds a DEALER with A's routing id on A's endpoint, and
        # stays behind when A dies, hoping to shadow the restarted worker.
        impostor = Forked(uid_a, IMPOSTOR, str(path_a), A, "00", "120")
        try:
            assert "sent" in impostor.readline()
            a_before = _samples(daemon.status(), A)  # type: ignore[arg-type]
            quiet = measure(load_pids(daemon, {"worker A": A, "worker B": B}), 1.0)
            killed_at = time.monotonic()
            os.kill(pids[A], signal.SIGKILL)
            new_pid = wait_for(lambda: (lambda p: p if p and p != pids[A] else None)(
                daemon.workers().get(A, {}).get("pid")), 20, "A restarted")
            restart_s = time.monotonic() - killed_at
            during = Background(load_pids(daemon, {"worker A": A, "worker B": B}), 1.0)
            assert _uid_of(new_pid) == uid_a, "a slot keeps its uid across restarts"
            impostor.wait(timeout=10)
            assert impostor.returncode == -signal.SIGKILL, "the supervisor kills leftovers"
            assert "killed leftover process" in daemon.log()
            a_after = wait_for(lambda: (lambda n: n if n > a_before + 3 else None)(
                _samples(daemon.status(), A)), 20,  # type: ignore[arg-type]
                "the restarted A is heard again")
            figures.record(
                scenario="impostor left behind by a worker",
                attacker="compromised PTP worker A (its own uid), leaving a process behind",
                load="1 DEALER with A's routing id held on A's endpoint; A killed (SIGKILL)",
                outcome=f"A restarted in {restart_s:.1f} s as uid {_uid_of(new_pid)} (was "
                        f"{uid_a}); the impostor {_ended(impostor.returncode)}; A samples "
                        f"{a_before}→{a_after} after the restart",
                before=quiet, after=during.result())
        finally:
            impostor.stop()


def test_slots_follow_reloads(figures: Figures) -> None:
    one = TWO_PHCS.split('[[source]]\nmode = "ptp"\npath = "/dev/ptp1"')[0] + \
        "[synchronization]\nminimum-agreeing-sources = 1\n"
    with Daemon(one) as daemon:
        daemon.wait_running(["clock-control", A])
        cc_pid = daemon.workers()["clock-control"]["pid"]
        assert len(list((daemon.runtime / "bus").glob("*.sock"))) == 1
        # A source added by a reload: its endpoint reaches the running clock-control
        # over the supervisor link, and its samples are heard.
        daemon.write_config(TWO_PHCS)
        daemon.signal(signal.SIGHUP)
        daemon.wait_running([B])
        wait_for(lambda: _samples(daemon.status(), B) > 3, 20, "the added source is heard")
        b_pid = daemon.workers()[B]["pid"]
        uid_b = _uid_of(b_pid)
        path_b = _slot_path(daemon, uid_b)
        assert daemon.workers()["clock-control"]["pid"] == cc_pid
        # Removed again: its endpoint is gone and nothing runs as its uid any more.
        daemon.write_config(one)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: B not in daemon.workers(), 20, "B removed")
        wait_for(lambda: not path_b.exists(), 10, "B's endpoint removed")
        import psutil

        left = [p.pid for p in psutil.process_iter(["uids"])
                if p.info["uids"] and uid_b in p.info["uids"]]
        a_now = _samples(daemon.status(), A)  # type: ignore[arg-type]
        cc_now = daemon.workers()["clock-control"]["pid"]
        during = Background(load_pids(daemon, {"worker A": A}), 1.0)
        a_later = wait_for(lambda: (lambda n: n if n > a_now + 2 else None)(
            _samples(daemon.status(), A)), 15, "A still heard")  # type: ignore[arg-type]
        figures.record(
            scenario="a removed source's slot",
            attacker="a removed source's worker uid (whatever ran as it)",
            load="2 SIGHUP reloads: source B added, then removed",
            outcome=f"B heard after the add; after the removal its endpoint "
                    f"{'is gone' if not path_b.exists() else 'REMAINS'}, {len(left)} processes "
                    f"run as its uid {uid_b}; A samples {a_now}→{a_later}; clock-control pid "
                    f"{'unchanged' if cc_now == cc_pid else 'CHANGED'}",
            after=during.result())
        assert not left
