"""The sock source's feeder socket as an attack surface: who may write, and a hostile feeder.

The supervisor creates the socket gpsd writes to (mode 0660, the daemon's group).
(a) a local user outside that group cannot send a sample at all, while one in the
group can; (b) a feeder that floods garbage, bad magic numbers and too-frequent
samples is dropped and counted by the sock worker, which keeps running, while the
other source's samples keep reaching clock-control and the clock keeps being steered;
after the flood a well-spaced sample is accepted again.
"""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import CpuMeter, latest_state, phc_config, samples_in, state_feed
from tests.integration.daemon import Daemon, wait_for
from tests.ntp_helpers import is_root

pytestmark = pytest.mark.integration

PTP = "ptp:/dev/ptp0"
OUTSIDER = 23456  # a uid and gid no one uses
NOGROUP = 65534


def _config(path: str) -> str:
    return phc_config(tables=f'[[source]]\nmode = "sock"\npath = "{path}"\nprecision = 1e-3\n')


def _sock_view(daemon: Daemon, source_id: str) -> dict:
    document = daemon.status() or {}
    return next((s for s in document.get("sources", []) if s["source_id"] == source_id), {})


def _send_as(uid: int, gid: int, path: str, datagram: bytes) -> int:
    """Fork, drop to uid/gid (no supplementary groups), send one datagram; the errno (0: sent)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.sendto(datagram, path)
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not is_root(), reason="needs root to act as other users")
def test_only_the_daemons_group_can_feed_the_socket() -> None:
    import errno

    from ntpd_py.core.refclock_sock import encode_sock_sample

    daemon = Daemon("")
    path = str(daemon.dir / "gps.sock")
    source_id = f"sock:{path}"
    daemon.write_config(_config(path))
    with daemon:
        daemon.wait_running([source_id])
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == NOGROUP  # the daemon's group (Daemon: user nobody, nogroup)
        # an outsider: not the owner, not in the group
        assert _send_as(OUTSIDER, OUTSIDER, path, encode_sock_sample(time.time_ns(), 0.0)) \
            == errno.EACCES
        # a feeder put in the daemon's group may send, and its samples are taken
        for _ in range(3):
            assert _send_as(OUTSIDER, NOGROUP, path,
                            encode_sock_sample(time.time_ns(), 0.001)) == 0
            time.sleep(0.1)
        view = wait_for(lambda: (lambda v: v if v.get("samples", 0) >= 1 else None)(
            _sock_view(daemon, source_id)), 20, "the group member's samples accepted")
        assert not [k for k in view["counters"] if k.startswith("drop:")], view["counters"]


def test_a_flooding_feeder_is_counted_and_does_not_stop_the_steering(figures: Figures) -> None:
    from ntpd_py.core.refclock_sock import encode_sock_sample

    daemon = Daemon("")
    path = str(daemon.dir / "gps.sock")
    source_id = f"sock:{path}"
    daemon.write_config(_config(path))
    with daemon:
        document = daemon.wait_running(["clock-control", PTP, source_id])
        pids = {p["worker_id"]: p["pid"] for p in document["processes"]}
        feeder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        feeder.setblocking(False)
        kinds = (lambda: b"\x00" * 7,
                 lambda: encode_sock_sample(time.time_ns(), 0.0, magic=1),
                 lambda: encode_sock_sample(time.time_ns(), 0.0))  # far too frequent
        sent = refused = 0
        counts = []
        with state_feed(daemon) as feed:
            counts.append(samples_in(latest_state(feed), PTP))
            cpu = CpuMeter(pids[source_id])
            started = time.monotonic()
            next_check = started + 1.0
            while time.monotonic() - started < 4.0:
                for _ in range(200):
                    try:
                        feeder.sendto(kinds[sent % 3](), path)
                        sent += 1
                    except BlockingIOError:
                        refused += 1  # the worker's queue is full: the kernel pushes back
                        break
                if time.monotonic() >= next_check:
                    counts.append(samples_in(latest_state(feed, 0.5), PTP))
                    next_check += 1.0
            elapsed = time.monotonic() - started
            worker_cpu = cpu.percent()
            time.sleep(1.5)
            counts.append(samples_in(latest_state(feed), PTP))
        print(f"\nfeeder flood: {sent / elapsed:.0f} datagrams/s sent for {elapsed:.1f} s "
              f"({refused} times the queue was full), sock worker CPU {worker_cpu:.0f} %, "
              f"PTP samples {counts}")
        figures.record(scenario="feeder socket flood", attacker="a feeder in the daemon's group",
                       load=f"{sent / elapsed:.0f} datagrams/s for {elapsed:.1f} s",
                       outcome=f"sock worker CPU {worker_cpu:.0f} %, PTP samples {counts}")
        # the other source kept flowing into clock-control: one PHC sample a second, read
        # from the state published once a second (so one reading may repeat)
        assert all(b > a for a, b in zip(counts, counts[2:], strict=False)), counts
        assert counts[-1] - counts[0] >= 4, counts
        # nothing died or restarted
        after = {p["worker_id"]: p["pid"] for p in (daemon.status() or {})["processes"]}
        assert after["clock-control"] == pids["clock-control"]
        assert after[source_id] == pids[source_id]
        # dropped and counted per reason (a flood also shows as datagrams thrown away)
        view = wait_for(lambda: (lambda v: v if v.get("counters", {}).get("drop:wrong-size")
                                 else None)(_sock_view(daemon, source_id)),
                        20, "the flood's drops in the sock source's counters")
        counters = view["counters"]
        assert counters.get("drop:wrong-magic", 0) > 0, counters
        assert counters.get("drop:flood", 0) + counters.get("overflow", 0) > 0, counters
        # and a well-spaced sample afterwards is accepted again
        before = int(counters.get("samples", 0))
        feeder.setblocking(True)
        for _ in range(3):
            time.sleep(0.2)
            feeder.sendto(encode_sock_sample(time.time_ns(), 0.0), path)
        feeder.close()
        wait_for(lambda: int(_sock_view(daemon, source_id).get("counters", {})
                             .get("samples", 0)) > before, 20,
                 "a sample after the flood accepted")
