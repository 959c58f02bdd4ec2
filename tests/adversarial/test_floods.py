"""Floods and hostile bus input against a real daemon: the clock keeps being steered.

(a) an observer floods the control socket (also from a new connection per request, as
another uid); (b) a compromised worker floods its
supervisor link; (c) a compromised worker sends bus input that used to crash
clock-control. Each records its load figures and the CPU/RSS of the daemon's
processes before and during the attack (`figures`; run with -s to see them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import msgpack
import psutil
import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import (
    SIM_PTP,
    CpuMeter,
    bus_as,
    latest_state,
    load_pids,
    samples_in,
    seqpacket_fds,
    state_feed,
    steal_fd,
)
from tests.adversarial.load import Background, measure
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import free_udp_port, is_root, serve_cmd, started

pytestmark = pytest.mark.integration

PTP = "ptp:/dev/ptp0"


def _pid(daemon: Daemon, worker_id: str) -> int:
    return int(wait_for(lambda: daemon.workers().get(worker_id, {}).get("pid"), 15,
                        f"{worker_id} in the process table"))


def _samples(document: dict | None, source_id: str) -> int:
    if document is None:
        return -1
    return int(next(s["samples"] for s in document["sources"] if s["source_id"] == source_id))


def test_control_socket_flood_is_refused_and_samples_keep_flowing(figures: Figures) -> None:
    import zmq
    from ntpd_py.ipc.framing import decode, encode
    from ntpd_py.ipc.messages import CtlReply, CtlRequest
    from ntpd_py.supervisor.ctl_client import control_path

    with Daemon(SIM_PTP) as daemon:
        daemon.wait_running(["clock-control", PTP])
        cc_pid = _pid(daemon, "clock-control")
        pids = load_pids(daemon)
        quiet = measure(pids, 1.0)
        path = control_path(str(daemon.config_path))
        ctx = zmq.Context()
        peers = []
        for _ in range(4):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.connect("ipc://" + path)
            peers.append(sock)
        request = encode(CtlRequest(command="status"))
        sent = ok = refused = 0
        counts = []
        try:
            with state_feed(daemon) as feed:
                counts.append(samples_in(latest_state(feed), PTP))
                during = Background(pids, 1.0, delay_s=1.0)  # in the flood's second second
                cpu = CpuMeter(cc_pid)
                started_at = time.monotonic()
                next_check = started_at + 1.0
                while time.monotonic() - started_at < 5.0:
                    for sock in peers:
                        for _ in range(25):
                            try:
                                sock.send(request, zmq.NOBLOCK)
                                sent += 1
                            except zmq.Again:
                                break
                        while True:
                            try:
                                reply = decode(sock.recv(zmq.NOBLOCK), max_size=1 << 24)
                            except zmq.Again:
                                break
                            assert isinstance(reply, CtlReply)
                            if reply.ok:
                                ok += 1
                            else:
                                assert reply.error.startswith("rate limited"), reply.error
                                refused += 1
                    if time.monotonic() >= next_check:
                        counts.append(samples_in(latest_state(feed, 0.5), PTP))
                        next_check += 1.0
                    time.sleep(0.01)
                elapsed = time.monotonic() - started_at
                cc_cpu = cpu.percent()
                time.sleep(1.5)
                counts.append(samples_in(latest_state(feed), PTP))
        finally:
            for sock in peers:
                sock.close(linger=0)
            ctx.term()
        print(f"\ncontrol flood: {sent / elapsed:.0f} requests/s sent for {elapsed:.1f} s, "
              f"{ok} answered, {refused} refused, clock-control CPU {cc_cpu:.0f} %, "
              f"PTP samples {counts}")
        document = wait_for(daemon.status, 10, "ntpctl answers after the flood")
        cc_after = _pid(daemon, "clock-control")
        rising = all(b > a for a, b in zip(counts, counts[2:], strict=False))
        figures.record(
            scenario="control-socket flood",
            attacker="observer in the daemon's group (ntpctl's socket)",
            load=f"{sent / elapsed:,.0f} status requests/s on 4 connections for "
                 f"{elapsed:.1f} s ({sent:,} sent)",
            outcome=f"PTP samples {'kept rising' if rising else 'stalled'} "
                    f"{counts[0]}→{counts[-1]} ({len(counts)} readings); {ok:,} answered, "
                    f"{refused:,} refused as rate limited; clock-control CPU {cc_cpu:.0f} %, "
                    f"pid {'unchanged' if cc_after == cc_pid else 'CHANGED'}",
            before=quiet, after=during.result())
        assert sent > 2000
        assert refused > 0 and ok <= 50 * elapsed + 60
        # the clock kept being served: the sample count (one PHC sample a second, read from
        # the state published once a second, so one reading may repeat) rose all along
        assert all(b > a for a, b in zip(counts, counts[2:], strict=False)), counts
        assert counts[-1] - counts[0] >= 4, counts
        assert document["ipc_dropped"].get("ctl-rate-limited", 0) >= refused * 0.9
        assert _pid(daemon, "clock-control") == cc_pid, "clock-control was restarted"


FLOODER_UID = 4243  # no passwd entry on test machines, not a worker uid; given the socket's group


def _reconnecting_flood(path: str, gid: int, seconds: float, w: int) -> None:
    """In a forked child: become FLOODER_UID in the control socket's group, then send
    `status` on a NEW connection per request for `seconds`; write the counts to `w`."""
    code = 1
    try:
        # everything imported before the uid changes: that uid cannot read the interpreter
        import pickle  # noqa: F401  (pyzmq imports it lazily)

        import zmq
        from ntpd_py.ipc.framing import decode, encode
        from ntpd_py.ipc.messages import CtlReply, CtlRequest

        request = encode(CtlRequest(command="status"))
        decode(encode(CtlReply(ok=False, error="x")))
        ctx = zmq.Context()
        os.setgroups([gid])
        os.setresgid(gid, gid, gid)
        os.setresuid(FLOODER_UID, FLOODER_UID, FLOODER_UID)
        counts = {"sent": 0, "ok": 0, "refused": 0, "unanswered": 0, "other": 0}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect("ipc://" + path)
            sock.send(request)
            counts["sent"] += 1
            if sock.poll(1000):
                reply = decode(sock.recv(), max_size=1 << 24)
                if isinstance(reply, CtlReply) and reply.ok:
                    counts["ok"] += 1
                elif isinstance(reply, CtlReply) and reply.error.startswith("rate limited"):
                    counts["refused"] += 1
                else:
                    counts["other"] += 1
            else:
                counts["unanswered"] += 1
            sock.close(linger=0)
        ctx.term()
        os.write(w, json.dumps(counts).encode())
        code = 0
    except BaseException as exc:  # the parent's assertion shows it
        os.write(w, json.dumps({"error": repr(exc)}).encode())
    finally:
        os._exit(code)


@pytest.mark.root
def test_a_flooder_reconnecting_per_request_is_limited_by_its_uid(figures: Figures) -> None:
    """A new connection per request used to get a fresh per-connection bucket each time
    and so drained the global budget; the bucket is now the uid's (SO_PEERCRED), and
    root's ntpctl is answered every time while clock-control keeps steering."""
    if not is_root():
        pytest.skip("the flooder changes its uid: needs root")
    from ntpd_py.supervisor.ctl_client import control_path

    with Daemon(SIM_PTP) as daemon:
        daemon.wait_running(["clock-control", PTP])
        cc_pid = _pid(daemon, "clock-control")
        pids = load_pids(daemon)
        quiet = measure(pids, 1.0)
        path = control_path(str(daemon.config_path))
        gid = os.stat(path).st_gid
        seconds = 6.0
        flooders = []
        for _ in range(2):  # two processes of the same uid, to reach a few hundred/s
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _reconnecting_flood(path, gid, seconds, w)
            os.close(w)
            flooders.append((pid, r))
        answered = asked = 0
        counts = []
        try:
            with state_feed(daemon) as feed:
                during = Background(pids, 1.0, delay_s=1.0)
                cpu = CpuMeter(cc_pid)
                started_at = time.monotonic()
                while time.monotonic() - started_at < seconds - 1.0:
                    counts.append(samples_in(latest_state(feed), PTP))
                    asked += 1
                    answered += daemon.status() is not None  # ntpctl as root (uid 0)
                    time.sleep(0.3)
                cc_cpu = cpu.percent()
                time.sleep(1.5)
                counts.append(samples_in(latest_state(feed), PTP))
        finally:
            results = []
            for pid, r in flooders:
                with os.fdopen(r, "rb") as pipe:
                    data = pipe.read()
                _, status = os.waitpid(pid, 0)
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, data)
                results.append(json.loads(data))
        flood = {k: sum(r[k] for r in results) for k in results[0]}
        document = wait_for(daemon.status, 10, "ntpctl answers after the flood")
        dropped = document["ipc_dropped"]
        print(f"\nreconnecting flood: {flood['sent'] / seconds:.0f} requests/s on a new "
              f"connection each as uid {FLOODER_UID}: {flood}; root's ntpctl {answered}/"
              f"{asked}; clock-control CPU {cc_cpu:.0f} %; PTP samples {counts}; {dropped}")
        rising = all(b > a for a, b in zip(counts, counts[2:], strict=False))
        figures.record(
            scenario="control-socket flood, a new connection per request",
            attacker=f"observer in the daemon's group (uid {FLOODER_UID}), 2 processes",
            load=f"{flood['sent'] / seconds:,.0f} status requests/s for {seconds:.0f} s, "
                 f"each on a fresh connection ({flood['sent']:,} sent)",
            outcome=f"{flood['ok']:,} answered, {flood['refused']:,} refused (uid limit); "
                    f"another uid's ntpctl answered {answered}/{asked}; PTP samples "
                    f"{'kept rising' if rising else 'stalled'} {counts[0]}→{counts[-1]}; "
                    f"clock-control CPU {cc_cpu:.0f} %",
            before=quiet, after=during.result())
        assert flood["sent"] > 300 and flood["other"] == 0
        assert flood["refused"] > flood["ok"] > 0
        # one uid's own bucket (20/s, burst 20), however many connections it opens
        assert flood["ok"] <= 20 * seconds + 25, flood
        assert answered == asked, (answered, asked)
        assert dropped.get("ctl-rate-limited", 0) >= flood["refused"]
        assert rising and counts[-1] - counts[0] >= 4, counts
        assert _pid(daemon, "clock-control") == cc_pid, "clock-control was restarted"


@pytest.mark.root
def test_a_worker_flooding_its_link_cannot_load_the_supervisor(figures: Figures) -> None:
    if not is_root():
        pytest.skip("taking a worker's link with pidfd_getfd needs root")
    from ntpd_py.ipc.framing import encode
    from ntpd_py.ipc.messages import DeviceRequest, Heartbeat

    body = SIM_PTP + f'[[server]]\nlisten = "127.0.0.1:{free_udp_port()}"\n'
    with Daemon(body) as daemon:
        daemon.wait_running(["clock-control", PTP, "server"])
        ptp_pid, server_pid = _pid(daemon, PTP), _pid(daemon, "server")
        pids = load_pids(daemon, {"PTP worker": PTP})
        quiet = measure(pids, 1.0)
        (link_fd,) = seqpacket_fds(ptp_pid)
        stolen = socket.socket(fileno=steal_fd(ptp_pid, link_fd))
        frames = [encode(Heartbeat(worker_id=PTP, mono_ns=1)),
                  encode(DeviceRequest(worker_id=PTP)), b"garbage", b"\x93\x01\x63\x80"]
        stop = threading.Event()
        sent, tried = [0], [0]

        def flood() -> None:
            i = 0
            while not stop.is_set():
                try:
                    tried[0] += 1
                    stolen.send(frames[i % len(frames)])
                    sent[0] += 1
                    i += 1
                except BlockingIOError:  # the link's buffer is full: the supervisor is not
                    time.sleep(0.0005)  # reading it while this child is muted
                except OSError:
                    return

        thread = threading.Thread(target=flood, daemon=True)
        supervisor = CpuMeter(daemon.pid)
        started_at = time.monotonic()
        thread.start()
        try:
            during = Background(pids, 1.0, delay_s=0.5)
            time.sleep(2.0)
            before = {p.pid for p in psutil.Process(daemon.pid).children()}
            killed_at = time.monotonic()
            os.kill(server_pid, signal.SIGKILL)
            new = wait_for(lambda: {p.pid for p in psutil.Process(daemon.pid).children()}
                           - before - {server_pid}, 5, "the killed server restarted", 0.01)
            restart_s = time.monotonic() - killed_at
            time.sleep(2.0)
            cpu = supervisor.percent()
        finally:
            stop.set()
            thread.join(5)
            stolen.close()
        elapsed = time.monotonic() - started_at
        document = wait_for(daemon.status, 10, "status")
        link = {p["worker_id"]: p for p in document["processes"]}[PTP]
        print(f"\nlink flood: {tried[0] / elapsed:.0f} sends/s tried, {sent[0] / elapsed:.0f} "
              f"frames/s got into the link for {elapsed:.1f} s, "
              f"{link['link_dropped']} dropped, {link['link_malformed']} malformed, supervisor "
              f"CPU {cpu:.0f} %, killed server restarted in {restart_s:.2f} s (pids {new})")
        figures.record(
            scenario="supervisor-link flood",
            attacker="compromised PTP worker (its own uid), writing on its supervisor link",
            load=f"{sent[0] / elapsed:,.0f} frames/s into the link ({tried[0] / elapsed:,.0f} "
                 f"sends/s tried; heartbeats, device requests, garbage) for {elapsed:.1f} s",
            outcome=f"supervisor CPU {cpu:.0f} % over the flood; {link['link_dropped']:,} "
                    f"frames dropped, {link['link_malformed']:,} malformed; a killed server "
                    f"worker restarted in {restart_s:.2f} s",
            before=quiet, after=during.result())
        assert cpu < 25.0
        assert restart_s < 1.0
        assert link["link_dropped"] + link["link_malformed"] > 0


def test_bus_input_that_crashed_clock_control_is_dropped_and_counted(
        figures: Figures) -> None:
    from ntpd_py.ipc.framing import encode
    from ntpd_py.ipc.messages import ServerStats

    port = free_udp_port()
    ntp = f"ntp:127.0.0.1:{port}"
    body = SIM_PTP + f"""
[[source]]
mode = "server"
address = "127.0.0.1:{port}"
poll-interval-limits = {{ min = -1, max = 0 }}
initial-poll-interval = -1
"""
    with (started(serve_cmd(f"127.0.0.1:{port}", "--stratum", "1"), ready="listening on"),
          Daemon(body) as daemon):
        daemon.wait_running(["clock-control", PTP, ntp])
        cc_pid = _pid(daemon, "clock-control")
        before = daemon.status()
        assert before is not None
        pids = load_pids(daemon, document=before)
        quiet = measure(pids, 1.0)
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        sample = {"source_id": ntp, "kind": "ntp", "offset_s": 0.001, "delay_s": 0.001,
                  "uncertainty_s": 1e-4, "root_delay_s": 0.0, "root_dispersion_s": 1e308,
                  "stratum": 1, "leap": 0, "reference_id": 1, "mono_ns": now_ns,
                  "realtime_ns": time.time_ns(), "poll_log2": 0}
        status = {"source_id": ntp, "kind": "ntp", "name": "x", "state": "running",
                  "poll_log2": -32}
        # > 64 listen values, claiming to come from a server that does not exist,
        # sent on the NTP worker's own endpoint (all a compromised worker has).
        with bus_as(daemon, "server#5", via=ntp) as rogue:
            for i in range(100):
                rogue.send(encode(ServerStats(listen=f"127.0.0.1:{1000 + i}",
                                              counters={"received": 1})))
        # Those frames spent the NTP channel's token bucket: wait until they are counted
        # and the bucket has refilled, so the two frames below reach the schema check
        # (on a loaded machine they could otherwise be refused as rate-limited first).
        wait_for(lambda: (daemon.status() or {}).get("ipc_dropped", {}).get(
            "not-a-server", 0) >= 1 or None, 20, "server stats refused")
        time.sleep(1.0)
        flood = 5000
        with bus_as(daemon, ntp) as rogue:
            during = Background(pids, 1.0)
            rogue.send(msgpack.packb([1, 1, sample]))  # root dispersion 1e308
            rogue.send(msgpack.packb([1, 2, status]))  # poll exponent -32
            sample["root_dispersion_s"] = 0.0
            started_at = time.monotonic()
            for i in range(flood):
                sample["mono_ns"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                sample["offset_s"] = 3600.0 + i
                rogue.send(msgpack.packb([1, 1, sample]))
            elapsed = time.monotonic() - started_at
            document = wait_for(lambda: (lambda d: d if d and d["ipc_dropped"].get(
                "rate-limited", 0) > flood // 2 else None)(daemon.status()), 20, "drops counted")
        dropped = document["ipc_dropped"]
        print(f"\nbus input: {flood / elapsed:.0f} samples/s flooded; dropped {dropped}")
        cc_after = _pid(daemon, "clock-control")
        figures.record(
            scenario="hostile bus input",
            attacker="compromised NTP worker (its own uid), on its bus endpoint",
            load=f"100 server stats claiming server#5; 2 frames (root dispersion 1e308, poll "
                 f"2^-32); {flood:,} samples at +3600 s, {flood / elapsed:,.0f}/s",
            outcome=f"dropped: {dropped.get('not-a-server', 0)} not-a-server, "
                    f"{dropped.get('invalid', 0)} invalid, {dropped.get('rate-limited', 0):,} "
                    f"rate-limited; servers registered: {len(document['servers'])}; offset "
                    f"{document['clock']['offset_s'] or 0.0:+.2g} s; clock-control pid "
                    f"{'unchanged' if cc_after == cc_pid else 'CHANGED'}",
            before=quiet, after=during.result())
        # Those within the NTP worker's rate cap reach admission and are refused there.
        assert dropped.get("not-a-server", 0) >= 1
        assert dropped.get("invalid", 0) >= 2  # dispersion 1e308 and poll -32: the schema
        assert not document["servers"]
        assert _pid(daemon, "clock-control") == cc_pid, "clock-control was restarted"
        # the real PHC source kept being served, the clock stayed synchronized
        wait_for(lambda: _samples(daemon.status(), PTP) > _samples(before, PTP), 15,
                 "PTP samples rising")
        assert abs(document["clock"]["offset_s"] or 0.0) < 1.0
