"""The real process tree: restarts, isolation, privilege separation, signals, ntpctl.

Every test starts `ntpd-py run` (simulated or observe clock) and stops it by
PID. The NTP source is our own standalone server on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.integration.daemon import BIN, Daemon, wait_for
from tests.ntp_helpers import free_udp_port, is_root, serve_cmd, started

pytestmark = pytest.mark.integration

SIM_PTP = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[synchronization]
minimum-agreeing-sources = 1
"""


def ntp_source(port: int) -> str:
    return f"""
[[source]]
mode = "server"
address = "127.0.0.1:{port}"
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1
"""


def _samples(document: dict, source_id: str) -> int:
    for source in document["sources"]:
        if source["source_id"] == source_id:
            return int(source["samples"])
    raise AssertionError(f"{source_id} missing from {document['sources']}")


def _pid_of(daemon: Daemon, worker_id: str) -> int:
    # The process table reaches clock-control once a second: wait for the entry.
    worker = wait_for(lambda: daemon.workers().get(worker_id, {}).get("pid"), 10,
                      f"{worker_id} in the process table")
    return int(worker)


@pytest.fixture
def ntp_server():
    port = free_udp_port()
    with started(serve_cmd(f"127.0.0.1:{port}", "--stratum", "1"), ready="listening on"):
        yield port


def test_kill_each_child_it_comes_back_and_the_others_keep_running(ntp_server: int) -> None:
    user = "nobody" if is_root() else None
    body = SIM_PTP + ntp_source(ntp_server) + (
        f'[[server]]\nlisten = "127.0.0.1:{free_udp_port()}"\n')
    with Daemon(body, user=user) as daemon:
        ids = ["clock-control", "ptp:/dev/ptp0", f"ntp:127.0.0.1:{ntp_server}", "server"]
        daemon.wait_running(ids)
        # +50 ms at start: synchronized after exactly one start-up step
        wait_for(lambda: (lambda c: c.get("synchronized") and c.get("steps") == 1)(
            (daemon.status() or {}).get("clock", {})), 30, "synchronized after the step")
        steps_before = 1
        for victim in ids:
            pids = {w: _pid_of(daemon, w) for w in ids}
            before = daemon.status()
            os.kill(pids[victim], signal.SIGKILL)
            def restarted(v: str = victim, p: dict = pids) -> dict | None:
                table = daemon.workers()
                entry = table.get(v, {})
                ok = entry.get("pid") not in (None, p[v]) and entry["state"] == "running"
                return table if ok else None

            document = wait_for(restarted, 30, f"{victim} restarted")
            assert document[victim]["restarts"] == 1
            assert "SIGKILL" in document[victim]["last_exit"]
            for other in ids:
                if other != victim:
                    assert document[other]["pid"] == pids[other], f"{other} was disturbed"
            # the sources never stopped producing: both sample counts keep growing
            if victim != "clock-control":
                for source in ("ptp:/dev/ptp0", f"ntp:127.0.0.1:{ntp_server}"):
                    wait_for(lambda s=source, b=before: _samples(daemon.status(), s)
                             > _samples(b, s), 15, f"{source} producing")
        after = wait_for(lambda: (lambda d: d if d and d["clock"]["synchronized"] else None)(
            daemon.status()), 30, "synchronized again")
        # clock-control's own restart resumed from its saved state: no step because of it
        # (counted twice: by the algorithm, and by the simulated clock itself)
        assert after["clock"]["steps"] == steps_before
        from ntpd_py.plumbing.simclock import SimClock

        assert SimClock(str(daemon.runtime / "sim-clock")).steps == steps_before
        assert "resuming from the saved state" in daemon.log()


def test_supervisor_sigterm_leaves_no_process_behind(ntp_server: int) -> None:
    daemon = Daemon(SIM_PTP + ntp_source(ntp_server)).start()
    try:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        tree = [daemon.pid] + [p.pid for p in daemon.children()]
        assert len(tree) >= 4
        started_at = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None
        assert daemon.proc.wait(10) == 0
        assert time.monotonic() - started_at < 6
        for pid in tree:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert not (daemon.runtime / "observe").exists(), "control socket left behind"
    finally:
        daemon.stop()
        daemon.cleanup()


def test_children_die_with_a_killed_supervisor() -> None:
    daemon = Daemon(SIM_PTP).start()
    try:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        kids = [p.pid for p in daemon.children()]
        daemon.signal(signal.SIGKILL)
        wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                 for p in kids), 10, "children gone (PDEATHSIG)")
    finally:
        daemon.stop()
        daemon.cleanup()


def test_sighup_restarts_only_changed_workers_and_rejects_a_broken_config(
        ntp_server: int) -> None:
    body = SIM_PTP + ntp_source(ntp_server)
    with Daemon(body) as daemon:
        ntp_id = f"ntp:127.0.0.1:{ntp_server}"
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0", ntp_id])
        pids = {w: _pid_of(daemon, w) for w in ("clock-control", "ptp:/dev/ptp0", ntp_id)}
        # 1) a broken file: rejected, everything keeps running (ntpctl cannot read the
        # broken file either, so look at the process tree directly)
        tree = {p.pid for p in daemon.children()}
        daemon.write_config(body + "\n[[source]]\nmode = \"ptp\"\nprecison = 1\n")
        daemon.signal(signal.SIGHUP)
        # The rejection's lines come one after another: wait for the last of them.
        wait_for(lambda: "keeping the running configuration" in daemon.log(), 10,
                 "reload rejected, running configuration kept")
        assert "reload rejected" in daemon.log()
        assert "source[2].precison = 1: unknown key" in daemon.log()
        time.sleep(1)
        assert {p.pid for p in daemon.children()} == tree
        assert set(pids.values()) <= tree
        # 2) a changed PHC interval and a new PHC: only those workers start
        changed = body.replace("precision = 5e-8", "precision = 5e-8\ninterval = -1") + \
            '\n[[source]]\nmode = "ptp"\npath = "/dev/ptp1"\n'
        daemon.write_config(changed)
        daemon.signal(signal.SIGHUP)
        workers = daemon.wait_running(["ptp:/dev/ptp1"])
        procs = {p["worker_id"]: p for p in workers["processes"]}
        assert procs["ptp:/dev/ptp0"]["pid"] != pids["ptp:/dev/ptp0"]
        assert procs[ntp_id]["pid"] == pids[ntp_id]
        assert procs["clock-control"]["pid"] == pids["clock-control"]
        sources = {s["source_id"]: s for s in workers["sources"]}
        assert "ptp:/dev/ptp1" in sources
        wait_for(lambda: {s["source_id"]: s for s in daemon.status()["sources"]}[
            "ptp:/dev/ptp0"]["poll_log2"] == -1, 15, "new interval in force")


def test_ntpctl_against_the_running_daemon() -> None:
    with Daemon(SIM_PTP) as daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"), 30,
                 "synchronized")
        text = daemon.ctl("status")
        assert text.returncode == 0, text.stderr
        assert "Clock: synchronized (simulated backend)" in text.stdout
        assert "/dev/ptp0" in text.stdout and "extended" in text.stdout
        assert "clock-control" in text.stdout and "supervisor" in text.stdout
        document = json.loads(daemon.ctl("status", "--json").stdout)
        assert document["schema"] == 1 and document["command"] == "status"
        assert all(isinstance(p["pid"], int) for p in document["processes"])
        roles = {p["role"] for p in document["processes"]}
        assert roles == {"supervisor", "clock-control", "ptp"}
        (source,) = document["sources"]
        assert source["state"] == "*" and source["method"] == "extended"
        assert source["last_window_s"] > 0
        sources = json.loads(daemon.ctl("sources", "--json").stdout)
        assert "processes" not in sources and len(sources["sources"]) == 1
        workers = json.loads(daemon.ctl("workers", "--json").stdout)
        assert "sources" not in workers and len(workers["processes"]) == 3
        # a daemon too busy to answer: one line, exit 75, within about 2 s
        cc = _pid_of(daemon, "clock-control")
        os.kill(cc, signal.SIGSTOP)
        try:
            began = time.monotonic()
            busy = daemon.ctl("status")
            assert busy.returncode == 75 and time.monotonic() - began < 8
            assert busy.stderr.count("\n") == 1 and "did not answer" in busy.stderr
        finally:
            os.kill(cc, signal.SIGCONT)


def test_ntpctl_without_a_daemon(tmp_path) -> None:
    config = tmp_path / "ntp.toml"
    config.write_text(f'[daemon]\nruntime-dir = "{tmp_path}"\n')
    for command in ("status", "sources", "workers"):
        result = subprocess.run([str(BIN / "ntpctl"), command, "-c", str(config)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 69
        assert result.stderr == f"ntpctl: ntpd-py is not running (no control socket at " \
                                f"{tmp_path}/observe)\n"
    as_json = subprocess.run([str(BIN / "ntpctl"), "status", "--json", "-c", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert json.loads(as_json.stdout)["exit_code"] == 69
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nclock = 1\n")
    result = subprocess.run([str(BIN / "ntpctl"), "status", "-c", str(bad)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "daemon.clock" in result.stderr
    assert "Traceback" not in result.stderr


def test_rogue_frames_on_the_bus_are_dropped_and_counted(ntp_server: int) -> None:
    import zmq
    from ntpd_py.ipc.framing import encode
    from ntpd_py.ipc.messages import Heartbeat

    with Daemon(SIM_PTP + ntp_source(ntp_server)) as daemon:
        ntp_id = f"ntp:127.0.0.1:{ntp_server}"
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0", ntp_id])
        before = daemon.status()
        cc_pid = _pid_of(daemon, "clock-control")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, b"rogue")
        sock.setsockopt(zmq.SNDHWM, 100_000)
        # There is no shared bus any more: a rogue can only reach one worker's own
        # endpoint (here as its owner or root), and its frames count against that worker.
        # Endpoints are numbered in configuration order: 1 is the NTP worker's.
        slot = daemon.runtime / "bus" / "1.sock"
        assert slot.stat().st_uid == psutil.Process(_pid_of(daemon, ntp_id)).uids().real
        sock.connect(f"ipc://{slot}")
        try:
            frames = [b"garbage", b"\x93\x63\x01\x80", b"x" * 200_000, encode(
                Heartbeat(worker_id="x", mono_ns=1))]
            for i in range(10_000):
                sock.send(frames[i % len(frames)], zmq.NOBLOCK)
        except zmq.Again:
            pass
        finally:
            sock.close(linger=1000)
            ctx.term()
        document = wait_for(lambda: (lambda d: d if d and sum(d["ipc_dropped"].values())
                                     > 1000 else None)(daemon.status()), 20, "drops counted")
        assert sum(document["ipc_dropped"].values()) > 1000
        for source in ("ptp:/dev/ptp0", ntp_id):
            wait_for(lambda s=source: _samples(daemon.status(), s) > _samples(before, s), 15,
                     f"{source} unaffected")
        assert _pid_of(daemon, "clock-control") == cc_pid, "clock-control must keep running"


@pytest.mark.root
@pytest.mark.skipif(not is_root(), reason="privilege separation needs the daemon started as root")
def test_workers_run_unprivileged_and_clock_control_holds_nothing_in_observe(
        ntp_server: int) -> None:
    body = ntp_source(ntp_server) + "[synchronization]\nminimum-agreeing-sources = 1\n" + \
        SIM_PTP.split("[synchronization]")[0] + \
        f'[[server]]\nlisten = "127.0.0.1:{free_udp_port()}"\n'
    with Daemon(body, clock="simulated", user="nobody") as daemon:
        ids = ["clock-control", f"ntp:127.0.0.1:{ntp_server}", "ptp:/dev/ptp0", "server"]
        document = daemon.wait_running(ids)
        worker_uids = []
        for proc in document["processes"]:
            status = _proc_status(proc["pid"])
            if proc["role"] == "supervisor":
                assert status["Uid"].split()[0] == "0"
                continue
            uids, gids = status["Uid"].split()[:4], status["Gid"].split()[:4]
            if proc["role"] == "clock-control":
                # The configured user: it owns the runtime directory and its state file.
                assert uids == ["65534"] * 4, (proc["worker_id"], status["Uid"])
                assert gids == ["65534"] * 4
                assert proc["user"] == "nobody"
            else:
                # Every other worker: a uid of its own from worker-uid-range, gid the same,
                # no supplementary groups.
                uid = int(uids[0])
                assert uids == [str(uid)] * 4 and gids == [str(uid)] * 4, proc["worker_id"]
                assert 61184 <= uid <= 65519, (proc["worker_id"], uid)
                assert status["Groups"].split() == [], proc["worker_id"]
                assert proc["user"] == str(uid)
                worker_uids.append(uid)
            assert int(status["CapEff"], 16) == 0, proc["worker_id"]
            assert int(status["CapPrm"], 16) == 0
            assert int(status["CapBnd"], 16) == 0
            assert status["NoNewPrivs"] == "1"
        assert len(worker_uids) == 3 and len(set(worker_uids)) == 3, worker_uids
        # Clock-control's files are out of every worker's reach.
        runtime = os.stat(daemon.runtime)
        assert runtime.st_mode & 0o7777 == 0o751 and runtime.st_uid == 65534
        bus_dir = os.stat(daemon.runtime / "bus")
        assert bus_dir.st_uid == 0 and bus_dir.st_mode & 0o7777 == 0o711
        sim_clock = os.stat(daemon.runtime / "sim-clock")
        assert sim_clock.st_uid == 65534 and sim_clock.st_mode & 0o022 == 0
        wait_for(lambda: (daemon.runtime / "clock-control.state").exists(), 15, "state saved")
        state = os.stat(daemon.runtime / "clock-control.state")
        assert state.st_uid == 65534 and state.st_mode & 0o777 == 0o600
        for path in (daemon.runtime / "bus").glob("*.sock"):
            st = os.stat(path)
            assert st.st_mode & 0o777 == 0o600 and st.st_uid in worker_uids, path


def _proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def test_bad_config_exits_78_and_system_clock_is_refused_in_tests(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[source]]\nmode = "ptp"\n')
    result = subprocess.run([str(BIN / "ntpd-py"), "run", "-c", str(bad)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 78 and "source[0].path: missing mandatory key" in result.stderr
    good = tmp_path / "ok.toml"
    good.write_text(f'[daemon]\nruntime-dir = "{tmp_path}/r"\nstate-dir = "{tmp_path}/s"\n')
    result = subprocess.run([str(BIN / "ntpd-py"), "run", "-c", str(good), "--clock", "system"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 77
    assert "refusing clock = \"system\"" in result.stderr


def test_pool_resolves_unprivileged_and_starts_one_worker_per_address(ntp_server: int) -> None:
    body = f"""
[[source]]
mode = "pool"
address = "localhost:{ntp_server}"
count = 2
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1

[synchronization]
minimum-agreeing-sources = 1
"""
    with Daemon(body, clock="observe") as daemon:
        member = f"pool:localhost:{ntp_server}/127.0.0.1"
        document = daemon.wait_running(["clock-control", member])
        assert f"pool localhost:{ntp_server} resolved to" in daemon.log()
        members = [p for p in document["processes"] if p["role"] == "ntp"]
        assert 1 <= len(members) <= 2
        wait_for(lambda: _samples(daemon.status(), member) > 0, 30, "samples from the pool")


def test_several_server_processes_share_the_address() -> None:
    import sys

    listen = free_udp_port()
    body = SIM_PTP + f'[[server]]\nlisten = "127.0.0.1:{listen}"\n'
    daemon = Daemon(body)
    daemon.write_config(body, daemon._daemon_table + "server-processes = 2\n")
    with daemon:
        daemon.wait_running(["clock-control", "server#1", "server#2"])
        wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"), 30,
                 "synchronized")
        answered = 0
        for _ in range(3):
            probe = subprocess.run(
                [sys.executable, "-m", "ntpd_py.workers.ntp_probe", f"127.0.0.1:{listen}",
                 "--count", "1", "--burst", "1", "--poll-min", "0", "--initial-poll", "0"],
                capture_output=True, text=True, timeout=60)
            answered += probe.stdout.startswith("offset")
        assert answered == 3
        # both processes' counters add up (they used to overwrite each other, keyed by listen)
        address = f"127.0.0.1:{listen}"
        document = wait_for(lambda: (lambda d: d if d and any(
            s["listen"] == address and s["counters"].get("received") == 3
            for s in d["servers"]) else None)(daemon.status()), 15, "server counters summed")
        assert len(document["servers"]) == 1


def _with_daemon_keys(daemon: Daemon, body: str, extra: str) -> None:
    daemon.write_config(body, daemon._daemon_table + extra)


def test_a_step_beyond_the_panic_threshold_exits_70() -> None:
    daemon = Daemon(SIM_PTP)
    # the simulated clock is two days ahead: beyond the backward start-up limit (86400 s)
    _with_daemon_keys(daemon, SIM_PTP, "[daemon.simulation]\ninitial-offset = 172800\n")
    try:
        daemon.start()
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == 70
        log = daemon.log()
        assert "startup-step-panic-threshold" in log
        assert "refused to steer (panic threshold)" in log
    finally:
        daemon.stop()
        daemon.cleanup()


def test_panic_action_stop_steering_keeps_running_and_says_so() -> None:
    daemon = Daemon(SIM_PTP)
    _with_daemon_keys(daemon, SIM_PTP, 'panic-action = "stop-steering"\n'
                      "[daemon.simulation]\ninitial-offset = 172800\n")
    with daemon:
        document = wait_for(lambda: (lambda d: d if d and d["clock"]["steering_stopped"]
                                     else None)(daemon.status()), 40, "steering stopped")
        assert document["clock"]["synchronized"] is False
        assert "startup-step-panic-threshold" in document["clock"]["steering_stopped"]
        assert "STEERING STOPPED" in daemon.ctl("status").stdout
        from ntpd_py.plumbing.simclock import SimClock

        assert SimClock(str(daemon.runtime / "sim-clock")).steps == 0


def test_drift_file_written_at_stop_read_at_start_and_a_corrupt_one_ignored() -> None:
    daemon = Daemon(SIM_PTP)
    try:
        daemon.start()
        wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"), 30,
                 "synchronized")
        assert daemon.stop() == 0
        drift = daemon.state / "drift"
        from ntpd_py.core.drift import parse_drift

        frequency, _ = parse_drift(drift.read_text())
        assert abs(frequency * 1e6 + 20) < 1, frequency  # the simulated clock runs +20 ppm
        (daemon.runtime / "clock-control.state").unlink()  # as after a reboot
        daemon.start()
        wait_for(lambda: "drift file" in daemon.log(), 20, "drift file read")
        assert "frequency -20." in daemon.log() or "frequency -19." in daemon.log()
        daemon.stop()
        drift.write_text("garbage\n")
        (daemon.runtime / "clock-control.state").unlink()
        daemon.start()
        wait_for(lambda: "ignoring drift file" in daemon.log(), 20, "corrupt drift reported")
        wait_for(lambda: (daemon.status() or {}).get("clock", {}).get("synchronized"), 30,
                 "synchronized anyway")
    finally:
        daemon.stop()
        daemon.cleanup()
