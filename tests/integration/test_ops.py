"""Operations against the real daemon (simulated clock): metrics, watch, logs, sd_notify.

Each test starts `ntpd-py run` (tests/integration/daemon.py, stopped by PID in
every case) with a simulated PHC, and talks to it as an operator would: an
HTTP scrape over loopback parsed with prometheus-client's parsers, `ntpctl
watch` on a real terminal (tmux) and as a JSON stream, a logrotate-style
rename + SIGHUP, and a NOTIFY_SOCKET datagram socket standing in for systemd.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.integration.daemon import BIN, Daemon, wait_for
from tests.ntp_helpers import free_udp_port, is_root, sigint_as_a_terminal_gives_it

pytestmark = pytest.mark.integration

PTP = """
[[source]]
mode = "ptp"
path = "/dev/ptp0"
precision = 5e-8

[synchronization]
minimum-agreeing-sources = 1
"""
USER = "nobody" if is_root() else None


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EnvDaemon(Daemon):
    """The test daemon with extra environment variables (NOTIFY_SOCKET, JOURNAL_STREAM)."""

    def __init__(self, body: str, env: dict[str, str] | None = None, **kwargs: object) -> None:
        super().__init__(body, **kwargs)  # type: ignore[arg-type]
        self.env = env or {}

    def start(self) -> EnvDaemon:
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "ntpd-py"), "run", "-c", str(self.config_path), *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **self.env},
        )
        return self


def _get(url: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _samples(text: str, openmetrics: bool) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in (parse_openmetrics if openmetrics else parse_text)(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


# -- metrics --------------------------------------------------------------------------------


def test_metrics_scraped_over_loopback_in_both_formats() -> None:
    port, ntp_port = free_tcp_port(), free_udp_port()
    body = PTP + (
        f'\n[[server]]\nlisten = "127.0.0.1:{ntp_port}"\n'
        f'\n[observability]\nmetrics-exporter-listen = "127.0.0.1:{port}"\n'
    )
    with Daemon(body, user=USER) as daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0", "server", "metrics"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # one NTP request
            client.settimeout(2)
            client.sendto(b"\x23" + bytes(47), ("127.0.0.1", ntp_port))
            client.recvfrom(100)
        url = f"http://127.0.0.1:{port}/metrics"

        def scraped() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            code, _, text = _get(url)
            if code != 200:
                return None
            got = _samples(text, openmetrics=False)
            synced = got.get("ntpd_py_system_synchronized", [({}, 0)])[0][1] == 1
            served = got.get("ntp_server_received_packets_total")
            # Process figures come with the supervisor's table: at start, then every 10 s.
            cpu = {labels["worker_id"]: v
                   for labels, v in got.get("ntpd_py_process_cpu_seconds_total", [])}
            fresh = cpu.get("clock-control", 0.0) > 0
            # The PHC worker's read method comes with its first status, which may follow
            # its first samples by a moment on a loaded machine.
            phc_status = bool(got.get("ntpd_py_source_phc_read_info"))
            return (got if synced and fresh and phc_status and served and served[0][1] >= 1
                    else None)

        got = wait_for(scraped, 40, "a synchronized scrape that counted the NTP request")
        labels = {"name": "/dev/ptp0", "address": "/dev/ptp0", "id": "ptp:/dev/ptp0"}
        assert (labels, 1.0) in got["ntp_source_poll_interval_seconds"]
        [(src, offset)] = got["ntp_source_offset_seconds"]
        assert src == labels and abs(offset) < 1e-3
        assert got["ntp_system_stratum"][0][1] == 1
        assert got["ntp_uptime_seconds"][0][0]["version"]
        [(server, received)] = got["ntp_server_received_packets_total"]
        assert server == {"listen_address": f"127.0.0.1:{ntp_port}"} and received >= 1
        roles = {labels["role"] for labels, _ in got["ntpd_py_process_up"]}
        assert roles == {"supervisor", "clock-control", "ptp", "server", "metrics"}
        cpu = {labels["worker_id"]: v for labels, v in got["ntpd_py_process_cpu_seconds_total"]}
        assert cpu["clock-control"] > 0
        rss = {labels["worker_id"]: v for labels, v in got["ntpd_py_process_resident_memory_bytes"]}
        assert rss["metrics"] > 1 << 20
        [(method, one)] = got["ntpd_py_source_phc_read_info"]
        assert method["method"] == "extended" and one == 1
        [(_, window)] = got["ntpd_py_source_phc_window_seconds"]
        assert 0 < window < 1e-3
        assert "ntpd_py_source_ipc_dropped_total" in got

        code, content_type, text = _get(url, "application/openmetrics-text; version=1.0.0")
        assert code == 200 and content_type.startswith("application/openmetrics-text")
        om = _samples(text, openmetrics=True)
        assert om["ntp_system_stratum"][0][1] == 1 and text.rstrip().endswith("# EOF")
        assert _get(f"http://127.0.0.1:{port}/other")[0] == 404
        metrics = daemon.workers()["metrics"]
        if USER is not None:
            # Its own uid from worker-uid-range (no name); the daemon's group as its only
            # supplementary group, to reach the control socket as an observer.
            assert 61184 <= int(metrics["user"]) <= 65519
            with open(f"/proc/{metrics['pid']}/status") as handle:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in handle
                              if ":\t" in line)
            assert status["Uid"].split() == [metrics["user"]] * 4
            assert status["Groups"].split() == [str(grp.getgrnam("nogroup").gr_gid)]


def test_metrics_port_busy_at_start_does_not_stop_the_daemon() -> None:
    port = free_tcp_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    body = PTP + f'\n[observability]\nmetrics-exporter-listen = "127.0.0.1:{port}"\n'
    with Daemon(body, user=USER) as daemon:
        try:
            daemon.wait_running(["clock-control", "ptp:/dev/ptp0", "metrics"])
            wait_for(lambda: "cannot listen" in daemon.log(), 15, "the bind error in the log")
        finally:
            blocker.close()
        # The worker retries by itself (every 10 s) once the port is free.
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
                 if _port_open(port) else None, 30, "metrics after the port was freed", 0.5)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- ntpctl watch -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running() -> Iterator[Daemon]:
    daemon = Daemon(PTP, user=USER).start()
    try:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        yield daemon
    finally:
        daemon.stop()
        daemon.cleanup()


def test_watch_json_streams_status_documents(running: Daemon) -> None:
    proc = subprocess.Popen([str(BIN / "ntpctl"), "watch", "--json", "-c", str(running.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_a_terminal_gives_it)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGINT)
        # Keep reading: a watch that finds its stdout pipe full blocks in the final
        # flush, as any writer whose reader stopped would (seen once under CI load).
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        code = proc.wait(10)
    assert code == 0
    documents = [json.loads(line) for line in lines]
    status = running.status()
    assert status is not None
    for document in documents:
        assert document["schema"] == 1 and document["command"] == "watch"
        assert set(document["clock"]) == set(status["clock"])
        assert [s["source_id"] for s in document["sources"]] == ["ptp:/dev/ptp0"]
        assert set(document["sources"][0]) == set(status["sources"][0])
    assert documents[-1]["realtime_ns"] > documents[0]["realtime_ns"]


def test_watch_json_into_a_closed_pipe_ends_quietly(running: Daemon) -> None:
    result = subprocess.run(
        f"{BIN / 'ntpctl'} watch --json -c {running.config_path} | head -n 1",
        shell=True, capture_output=True, text=True, timeout=30,
    )
    assert json.loads(result.stdout)["command"] == "watch"
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian tmux)")
def test_watch_on_a_terminal_refreshes_and_ctrl_c_restores_it(running: Daemon) -> None:
    server = f"ntpd-py-test-{os.getpid()}"
    tmux = ["tmux", "-L", server]
    command = f"{BIN / 'ntpctl'} watch -c {running.config_path}; echo EXIT=$?; sleep 60"
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "30", command], check=True,
                   timeout=30)
    try:
        def pane() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True,
                                  timeout=10).stdout

        def pane_with(*needles: str) -> str | None:
            text = pane()
            return text if all(n in text for n in needles) else None

        first = wait_for(lambda: pane_with("live", "/dev/ptp0"), 20, "the live view")
        assert "synchronized" in first and "Ctrl-C to quit" in first
        stamp = next(line for line in first.splitlines() if "Ctrl-C" in line).split()[0]
        wait_for(lambda: stamp not in pane(), 10, "a refresh (a new time stamp)")
        alternate = subprocess.run([*tmux, "display", "-p", "#{alternate_on}"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
        assert alternate == "0"  # drawn in place: no alternate screen (scrollback, ssh)
        subprocess.run([*tmux, "send-keys", "C-c"], check=True, timeout=10)
        after = wait_for(lambda: pane_with("EXIT="), 10, "ntpctl to exit")
        assert "EXIT=0" in after and "Traceback" not in after
        assert "/dev/ptp0" in after  # the last view stays in the scrollback
        cursor = subprocess.run([*tmux, "display", "-p", "#{cursor_flag}"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        assert cursor == "1"  # the cursor is shown again
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=10, check=False)


def test_watch_errors_are_those_of_every_ntpctl_command(tmp_path: Path) -> None:
    config = tmp_path / "ntp.toml"
    config.write_text(f'[daemon]\nruntime-dir = "{tmp_path}/run"\nstate-dir = "{tmp_path}"\n')
    result = subprocess.run([str(BIN / "ntpctl"), "watch", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 69 and "ntpd-py is not running" in result.stderr
    config.write_text("[bogus]\n")
    result = subprocess.run([str(BIN / "ntpctl"), "watch", "--json", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and json.loads(result.stdout)["exit_code"] == 78


def test_watch_ends_with_69_when_the_daemon_goes_away() -> None:
    with Daemon(PTP, user=USER) as daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        proc = subprocess.Popen([str(BIN / "ntpctl"), "watch", "--json", "-c",
                                 str(daemon.config_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())
            daemon.stop()
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.stderr is not None
        assert code == 69 and "ntpd-py is not running" in proc.stderr.read()


@pytest.mark.skipif(not is_root() or shutil.which("capsh") is None,
                    reason="needs root and capsh to lose CAP_DAC_OVERRIDE")
def test_watch_permission_denied_is_77(running: Daemon) -> None:
    # Root without CAP_DAC_OVERRIDE/READ_SEARCH is an ordinary user for the 0750 runtime dir.
    drop = "cap_dac_override,cap_dac_read_search"
    cmd = f"exec {BIN / 'ntpctl'} watch -c {running.config_path}"
    result = subprocess.run(["capsh", f"--drop={drop}", "--", "-c", cmd],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 77, result.stderr
    assert "permission denied" in result.stderr


# -- logs -----------------------------------------------------------------------------------


def test_sighup_reopens_log_path_in_every_process_after_a_rotation() -> None:
    daemon = Daemon(PTP, user=USER)
    log = daemon.dir / "logs" / "ntpd-py.log"
    log.parent.mkdir(mode=0o700)  # only the supervisor (root) may write here, not the children
    body = PTP + f'\n[observability]\nlog-path = "{log}"\n'
    daemon.write_config(body)
    with daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        wait_for(lambda: log.exists() and "ptp:/dev/ptp0: INFO: running" in log.read_text(),
                 15, "the PTP worker's first line in log-path")
        rotated = log.with_suffix(".log.1")
        log.rename(rotated)  # what logrotate does before its postrotate SIGHUP
        daemon.write_config(body.replace("[observability]", '[observability]\nlog-level = "debug"'))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: log.exists() and "clock-control: DEBUG: clock action" in log.read_text(),
                 20, "clock-control's debug lines in the reopened file")
        daemon.stop()
        text, old, out = log.read_text(), rotated.read_text(), daemon.log()
    assert "supervisor: INFO: stopping all processes" in text
    assert "clock-control: INFO: stopped" in text
    assert "SIGHUP: re-reading" in old and "clock action" not in old
    assert "Traceback" not in out + text + old


def test_log_level_from_the_command_line_reaches_the_children() -> None:
    with Daemon(PTP, user=USER, extra_args=("-l", "debug")) as daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        wait_for(lambda: "clock-control: DEBUG:" in daemon.log(), 15, "a debug line of a child")


def test_journal_format_when_stderr_is_the_journal_stream() -> None:
    # The daemon's stderr is a file whose device:inode we put in JOURNAL_STREAM, as systemd does.
    # ansi-colors = true: a key ntpd-py ignores, so the start log has a warning line
    daemon = EnvDaemon(PTP + "[observability]\nansi-colors = true\n", user=USER)
    daemon.log_path.touch()
    st = os.stat(daemon.log_path)
    daemon.env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    with daemon:
        daemon.wait_running(["clock-control", "ptp:/dev/ptp0"])
        wait_for(lambda: "ptp:/dev/ptp0: INFO: running" in daemon.log(), 15, "the worker's line")
        text = daemon.log()
    lines = [line for line in text.splitlines() if ": INFO: " in line]
    # sd-daemon(3) priority prefixes: <6> info, from every process, forked ones included
    assert all(line.startswith("<6>") for line in lines), lines
    assert {line[3:].split(":")[0] for line in lines} == {"supervisor", "clock-control", "ptp"}
    warnings = [line for line in text.splitlines() if ": WARNING: " in line]
    assert any("ansi-colors" in line for line in warnings), text
    assert all(line.startswith("<4>") for line in warnings), warnings


# -- sd_notify --------------------------------------------------------------------------------


def test_sd_notify_ready_status_watchdog_reload_stop(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    got: list[str] = []

    def until(what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(4096).decode())
                if got[-1].startswith(what):
                    return
        raise AssertionError(f"no {what} within {timeout} s; got {got}")

    daemon = EnvDaemon(PTP, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, user=USER)
    try:
        with daemon:
            until("READY=1")
            assert any(m.startswith("STATUS=starting") for m in got) or got[0] == "READY=1"
            until("STATUS=synchronized to /dev/ptp0")
            until("WATCHDOG=1")
            start = len(got)
            until("WATCHDOG=1")
            until("WATCHDOG=1")  # keeps coming, about every second
            assert got[start:].count("WATCHDOG=1") >= 2
            daemon.signal(signal.SIGHUP)
            until("RELOADING=1")
            until("READY=1")
            daemon.stop()
            until("STOPPING=1", 5)
    finally:
        sock.close()
    assert got.count("READY=1") == 2
