"""Run inside the QEMU guest (as root): a real kernel PPS device read with workers/refclock_io.py.

The guest has an emulated ISA parallel port (QEMU's `isa-parallel`): `parport_pc`
drives it with IRQ 7 and `pps_parport` turns each interrupt into a PPS assert
event on /dev/pps0, time-stamped by the kernel. QEMU raises the port's interrupt
when the control register is written with interrupts enabled, and lowers it when
the status register is read; this program does both through /dev/port, once per
"second", so the pulses are real interrupts handled by the real driver. It then
reads the device as the pps worker will (PPS_GETCAP, PPS_GETPARAMS, PPS_FETCH
with a timeout) and prints one JSON line per check for the host-side test.
Then real gpsd reads the same device and writes SOCK samples to a socket made by
workers/refclock_io.py, read back with the sock source (gpsd_phase).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from typing import Any

from ntpd_py.core import pps_abi
from ntpd_py.core.config import PpsSourceConfig, SockSourceConfig
from ntpd_py.core.pps_source import PpsSource, WholeSeconds
from ntpd_py.core.refclock_events import (
    CheckDevice,
    FetchPulse,
    FetchTimedOut,
    PpsDeviceChecked,
    Publish,
    PulseFetched,
)
from ntpd_py.core.sock_source import SockSource
from ntpd_py.workers.refclock_io import PpsDevice, SockReceiver, create_sock_socket

PORT_BASE = 0x378
CONTROL = PORT_BASE + 2
STATUS = PORT_BASE + 1
PULSES = 6
TIOCM_LOOP = 0x8000  # the 8250 driver maps it to the UART's MCR loopback bit


def emit(**fields: object) -> None:
    print("PPSJSON " + json.dumps(fields), flush=True)


def modprobe(*argv: str) -> None:
    result = subprocess.run(["modprobe", *argv], capture_output=True, text=True, timeout=60)
    emit(step="modprobe", argv=list(argv), rc=result.returncode, err=result.stderr.strip())


def pulse_train(stamps: list[int], stop: threading.Event, count: int = PULSES) -> None:
    port = os.open("/dev/port", os.O_RDWR)
    try:
        control = os.pread(port, 1, CONTROL)[0]
        for _ in range(count):
            if stop.wait(1.0 - time.time() % 1.0):  # near the top of each local second
                return
            stamps.append(time.clock_gettime_ns(time.CLOCK_REALTIME))
            os.pwrite(port, bytes([control & ~0x01]), CONTROL)  # raises IRQ 7 (INTEN set)
            os.pread(port, 1, STATUS)  # acknowledges: QEMU lowers the line
    finally:
        os.close(port)


def _nmea(body: str) -> bytes:
    checksum = 0
    for byte in body.encode():
        checksum ^= byte
    return f"${body}*{checksum:02X}\r\n".encode()


def nmea_feed(stop: threading.Event) -> None:
    """A GPS on /dev/ttyS1: each second's GGA and RMC, written just after that second.

    The UART is put in loopback (TIOCM_LOOP), so what is written here comes back in on
    the same port, where gpsd reads it: a real rs232 device to gpsd (a pty would not do,
    gpsd does no time service for ptys). The times are the guest clock's own seconds.
    """
    fd = os.open("/dev/ttyS1", os.O_RDWR | os.O_NOCTTY)
    try:
        # gpsd has put the line in raw mode (no echo: an echoed byte would loop for ever)
        fcntl.ioctl(fd, termios.TIOCMBIS, struct.pack("I", TIOCM_LOOP))
        while not stop.wait(1.05 - time.time() % 1.0):
            now = time.gmtime(int(time.time()))
            hms = time.strftime("%H%M%S", now) + ".00"
            dmy = time.strftime("%d%m%y", now)
            os.write(fd, _nmea(f"GPGGA,{hms},5231.0000,N,01324.0000,E,1,08,0.9,34.0,M,39.0,M,,")
                     + _nmea(f"GPRMC,{hms},A,5231.0000,N,01324.0000,E,0.0,0.0,{dmy},,,A"))
    finally:
        os.close(fd)


def _stop(proc: subprocess.Popen[Any]) -> tuple[Any, Any]:
    """SIGTERM by PID, then SIGKILL if it has not exited within 10 s; its output."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=10)


def gpsd_phase(device: PpsDevice, run_dir: str) -> None:
    """Real gpsd on /dev/pps0 writes SOCK samples to the socket we made, as for chrony.

    gpsd sends to /run/chrony.<device basename>.sock when it runs as root (tmp otherwise),
    and only connects if the socket exists when it activates the device; for a PPS-only
    device it sends every pulse without waiting for a fix. gpspipe shows gpsd's own
    account of each pulse (PPS messages: real and clock time).
    """
    # the guest's loopback starts down; gpspipe talks to gpsd over it
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False, timeout=30)
    path = "/run/chrony.pps0.sock"
    sock = create_sock_socket(path, mode=0o660)
    receiver = SockReceiver(sock, SockSource(SockSourceConfig.model_validate(
        {"mode": "sock", "path": path, "precision": 1e-5}), "sock:" + path))
    port = "29470"
    feed_stop = threading.Event()
    feed = threading.Thread(target=nmea_feed, args=(feed_stop,), daemon=True)
    gpsd = subprocess.Popen(["gpsd", "-b", "-n", "-N", "-D", "6", "-S", port,
                             "-F", os.path.join(run_dir, "gpsd.sock"), "/dev/ttyS1", "/dev/pps0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pipe = None
    samples: list[dict[str, object]] = []
    try:
        # gpsd refuses a tty another process holds: the feed opens it once gpsd has
        time.sleep(1.5)
        feed.start()
        time.sleep(4.0)  # a few fixes first: gpsd pairs a pulse with the last fix's second
        pipe = subprocess.Popen(["gpspipe", "-w", "-P", f"127.0.0.1:{port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.0)
        stamps: list[int] = []
        stop = threading.Event()
        train = threading.Thread(target=pulse_train, args=(stamps, stop), daemon=True)
        train.start()
        fetched = []
        seq = None
        deadline = time.monotonic() + PULSES + 3
        while time.monotonic() < deadline and len(fetched) < PULSES - 1:
            event = device.execute(FetchPulse(1_500_000_000))
            if isinstance(event, PulseFetched) and event.fetch.assert_sequence != seq:
                seq = event.fetch.assert_sequence
                fetched.append((seq, event.fetch.assert_ns))
            time.sleep(0.2)  # let gpsd's thread see the pulse and send
            for action in receiver.on_readable():
                if isinstance(action, Publish):
                    samples.append({"time_ns": action.sample.realtime_ns,
                                    "offset_s": action.sample.offset_s})
        stop.set()
        train.join(5)
        time.sleep(0.5)
    finally:
        feed_stop.set()
        gpspipe_out = ""
        if pipe is not None:
            gpspipe_out = _stop(pipe)[0] or ""
        gpsd_err = (_stop(gpsd)[1] or b"").decode(errors="replace")
        sock.close()
        os.unlink(path)
    pps_lines = [line for line in gpspipe_out.splitlines() if '"class":"PPS"' in line]
    emit(step="gpsd", stamps=stamps, fetched=fetched, samples=samples,
         drops=receiver.source.status().drops, overflow=receiver.overflow,
         gpsd_pps=[json.loads(line) for line in pps_lines],
         gpsd_log="\n".join([line for line in gpsd_err.splitlines()
                             if "ttyS1" in line or "chrony" in line or "NTP" in line][:80]), gpspipe_lines=len(gpspipe_out.splitlines()))


DAEMON_CONFIG = """
[[source]]
mode = "sock"
path = "/run/chrony.pps0.sock"
precision = 1e-5

[[source]]
mode = "pps"
path = "/dev/pps0"
precision = 1e-6

[synchronization]
minimum-agreeing-sources = 1
"""
SOCK_ID = "sock:/run/chrony.pps0.sock"
PPS_ID = "pps:/dev/pps0"
DAEMON_PULSES = 150  # the daemon's start alone is ~25 s of CPU under TCG
DAEMON_START_S = 150.0


def _status(runtime: str) -> dict[str, Any] | None:
    """`ntpctl status --json`'s document, asked in-process (an ntpctl process costs ~10 s
    of CPU under TCG)."""
    from ntpd_py.supervisor.ctl_client import CtlError, request
    from ntpd_py.supervisor.ctl_format import reply_json

    try:
        return reply_json(request(os.path.join(runtime, "observe"), "status"), "status")
    except CtlError:
        return None


def daemon_phase(device: PpsDevice, run_dir: str, step: str,
                 extra_args: tuple[str, ...] = ()) -> None:
    """The running daemon (`ntpd-py run`, observe clock, workers as nobody) with gpsd's
    socket as a sock source and /dev/pps0 as a pps source, as ntpd-rs's GPS guide sets
    them up: the supervisor creates the socket (before gpsd starts) and opens the PPS
    device; the unprivileged pps worker reads the kernel's pulse stamps with zero-timeout
    PPS_FETCH polls and takes the whole seconds from the sock source. We fetch the same
    pulses through our own fd to know the kernel's stamps. `step` names the JSON lines;
    ``--single-process`` runs every role in one process."""
    from tests.integration.daemon import Daemon

    port = "29471"
    stamps: list[int] = []
    fetched: list[tuple[int, int]] = []
    history: list[dict[str, Any]] = []
    stop = threading.Event()
    feed_stop = threading.Event()
    train = threading.Thread(target=pulse_train, args=(stamps, stop, DAEMON_PULSES), daemon=True)
    feed = threading.Thread(target=nmea_feed, args=(feed_stop,), daemon=True)
    gpsd = pipe = None
    daemon = Daemon(DAEMON_CONFIG, clock="observe", user="nobody", extra_args=extra_args)
    runtime = str(daemon.runtime)
    final: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        daemon.start()
        deadline = started + DAEMON_START_S
        while not os.path.exists("/run/chrony.pps0.sock") and time.monotonic() < deadline:
            time.sleep(0.5)
        socket_s = time.monotonic() - started
        # gpsd connects to the chrony socket only if it exists when the device activates
        gpsd = subprocess.Popen(["gpsd", "-b", "-n", "-N", "-D", "3", "-S", port,
                                 "-F", os.path.join(run_dir, "gpsd.sock"),
                                 "/dev/ttyS1", "/dev/pps0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        feed.start()
        time.sleep(3.0)
        pipe = subprocess.Popen(["gpspipe", "-w", "-P", f"127.0.0.1:{port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        train.start()
        seq = None
        next_status = 0.0
        while time.monotonic() < deadline and train.is_alive():
            event = device.execute(FetchPulse(1_100_000_000))
            if isinstance(event, PulseFetched) and event.fetch.assert_sequence != seq:
                seq = event.fetch.assert_sequence
                fetched.append((seq, event.fetch.assert_ns))
            if time.monotonic() < next_status:
                continue
            next_status = time.monotonic() + 3.0
            doc = _status(runtime)
            if doc is None:
                continue
            views = {s["source_id"]: s for s in doc.get("sources", [])}
            pps = views.get(PPS_ID, {})
            history.append({"t": round(time.monotonic() - started, 1),
                            **{k: pps.get(k) for k in ("state", "worker_state", "samples",
                                                       "last_offset_s", "detail")},
                            "sock_samples": views.get(SOCK_ID, {}).get("samples")})
            final = doc
            if pps.get("state") in ("*", "+") and (pps.get("samples") or 0) >= 8:
                break
        procs = {p["worker_id"]: p["pid"] for p in (final or {}).get("processes", [])}
        uids = {}
        for worker, pid in procs.items():
            with contextlib.suppress(OSError):
                uids[worker] = os.stat(f"/proc/{pid}").st_uid
        views = {s["source_id"]: s for s in (final or {}).get("sources", [])}
        emit(step=step, socket_s=socket_s, stamps=stamps, fetched=fetched,
             history=history, pps=views.get(PPS_ID), sock=views.get(SOCK_ID),
             clock=(final or {}).get("clock"), uids=uids,
             elapsed_s=time.monotonic() - started)
    finally:
        stop.set()
        feed_stop.set()
        gpspipe_out = ""
        if pipe is not None:
            gpspipe_out = _stop(pipe)[0] or ""
        if gpsd is not None:
            _stop(gpsd)
        code = daemon.stop()
        log = daemon.log()
        emit(step=step + "-log", exit=code, log=log[-6000:],
             gpsd_pps=[json.loads(line) for line in gpspipe_out.splitlines()
                       if '"class":"PPS"' in line])


def main() -> int:
    modprobe("parport_pc", "io=0x378", "irq=7")
    modprobe("pps_parport", "clear_wait=0")
    names = {}
    for entry in sorted(os.listdir("/sys/class/pps")) if os.path.isdir("/sys/class/pps") else []:
        with open(f"/sys/class/pps/{entry}/name") as f:
            names[entry] = f.read().strip()
    emit(step="devices", pps=names)
    if "pps0" not in names:
        return 2
    fd = os.open("/dev/pps0", os.O_RDWR)
    device = PpsDevice(fd, "/dev/pps0")
    caps = device.getcap()
    params = device.getparams()
    emit(step="caps", caps=caps, canwait=bool(caps & pps_abi.PPS_CANWAIT),
         mode=params.mode, api=params.api_version)
    # a timeout with no pulse: the kernel answers ETIMEDOUT after the wait
    started = time.monotonic()
    quiet = device.execute(FetchPulse(300_000_000))
    emit(step="timeout", event=type(quiet).__name__, waited_s=time.monotonic() - started)

    source = PpsSource(PpsSourceConfig.model_validate(
        {"mode": "pps", "path": "/dev/pps0", "precision": 1e-5}), "pps:/dev/pps0")
    source.update_whole_seconds(WholeSeconds(0.0, 0.01, "guest clock"))
    stamps: list[int] = []
    stop = threading.Event()
    train = threading.Thread(target=pulse_train, args=(stamps, stop), daemon=True)
    train.start()
    actions = source.start(time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    fetched = []
    for _ in range(PULSES + 1):
        (request,) = [a for a in actions if isinstance(a, CheckDevice | FetchPulse)]
        event = device.execute(request)
        if isinstance(event, PulseFetched):
            fetched.append((event.fetch.assert_sequence, event.fetch.assert_ns))
        elif not isinstance(event, PpsDeviceChecked | FetchTimedOut):
            emit(step="event", event=repr(event))
        actions = source.handle_event(event, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        for action in actions:
            if isinstance(action, Publish):
                emit(step="sample", offset_s=action.sample.offset_s,
                     realtime_ns=action.sample.realtime_ns)
    stop.set()
    train.join(5)
    emit(step="pulses", written=stamps, fetched=fetched, status=source.status().state,
         message=source.status().message, drops=source.status().drops)
    if shutil.which("gpsd") and shutil.which("gpspipe"):
        gpsd_phase(device, tempfile.mkdtemp(prefix="gpsd-"))
        daemon_phase(device, tempfile.mkdtemp(prefix="gpsd-"), "daemon")
        daemon_phase(device, tempfile.mkdtemp(prefix="gpsd-"), "single",
                     ("--single-process",))
    else:
        emit(step="gpsd-missing")
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
