"""Interop with real NTP implementations (loopback or a network namespace made here).

* our client against ``chronyd -x`` (never steers: -x) serving ``local stratum 1``;
* our server against ``chronyd -Q`` (query only), ``ntpdig`` and ``sntp`` (on Debian 12 the
  ``sntp`` package installs ``sntp`` as a link to NTPsec's ntpdig; it is run under both names);
* RATE kisses: chrony 4.3 cannot send them (its ``ratelimit`` has no ``kod`` option before
  4.4), so our client meets chrony's silent rate limiting here, and real RATE kisses from
  our own server process.

Every process is started by the test and stopped by PID in a ``finally``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ntpd_py.core.ntp_client import ClientSettings, NtpClient, Publish
from ntpd_py.core.packet import client_request
from ntpd_py.workers._udp import ClientChannel, client_io_step, monotonic_ns

from tests.ntp_helpers import (
    PYTHON,
    free_udp_port,
    have,
    is_root,
    network_namespace,
    serve_cmd,
    started,
)

pytestmark = pytest.mark.integration
MS = 1_000_000
needs_chronyd = pytest.mark.skipif(not (have("chronyd") and is_root()),
                                   reason="needs chronyd (Debian chrony) and root")


def _wait_for_ntp(port: int, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < end:
            s.sendto(client_request(1, 0), ("127.0.0.1", port))
            try:
                s.recvfrom(100)
                return
            except TimeoutError:
                continue
    raise AssertionError(f"nothing answers NTP on 127.0.0.1:{port}")


def chronyd_server(tmp_path: Path, extra: str = "") -> tuple[list[str], int]:
    port = free_udp_port()
    tmp_path.chmod(0o777)  # chronyd drops root for _chrony and writes its files here
    conf = tmp_path / "chrony.conf"
    conf.write_text(
        f"port {port}\nbindaddress 127.0.0.1\nlocal stratum 1\nallow 127.0.0.1\ncmdport 0\n"
        f"pidfile {tmp_path}/chronyd.pid\ndriftfile {tmp_path}/drift\n{extra}\n"
    )
    return ["chronyd", "-x", "-d", "-f", str(conf)], port


@pytest.fixture
def chronyd(tmp_path: Path) -> Iterator[int]:
    cmd, port = chronyd_server(tmp_path)
    with started(cmd):
        _wait_for_ntp(port)
        yield port


class TimedChannel(ClientChannel):
    """Records when each request left."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.send_times: list[int] = []

    def send(self, data: bytes) -> bool:
        self.send_times.append(monotonic_ns())
        return super().send(data)


def drive(client: NtpClient, channel: ClientChannel, seconds: float,
          on_sample: object = None) -> list[Publish]:
    published: list[Publish] = []
    deadline = None
    end = monotonic_ns() + int(seconds * 1e9)
    while monotonic_ns() < end:
        deadline, actions = client_io_step(client, channel, deadline,
                                           min(end - monotonic_ns(), 100 * MS))
        for action in actions:
            if isinstance(action, Publish):
                published.append(action)
                if callable(on_sample):
                    new = on_sample(len(published))
                    if new is not None:
                        deadline = new
    channel.close()
    return published


# -- our client, chrony's server ---------------------------------------------------------------


@needs_chronyd
def test_our_client_against_chronyd(chronyd: int) -> None:
    client = NtpClient(ClientSettings(source_id="chronyd", burst_count=4,
                                      burst_interval_ns=200 * MS))
    samples = [p.sample for p in drive(client, ClientChannel("127.0.0.1", chronyd), 2.0)]
    assert len(samples) == 4, client.counters
    for s in samples:
        # One clock on both ends: the offset is bounded by half the round trip (plus
        # chrony's random fuzz below its precision).
        assert abs(s.offset_s) <= s.delay_s / 2 + 10e-6, s
        assert abs(s.offset_s) < 0.005 and 0 <= s.delay_s < 0.05
        assert s.stratum == 1  # chronyd's "local stratum 1": we would be stratum 2
        assert s.reference_id == 0x7F7F0101  # chrony's local reference, 127.127.1.1
        assert s.leap == 0
    assert client.counters["accepted"] == 4
    assert sum(client.counters.values()) == 4


@needs_chronyd
def test_poll_interval_follows_the_advice_against_chronyd(chronyd: int) -> None:
    client = NtpClient(ClientSettings(source_id="c", poll_min=-4, poll_max=-1, initial_poll=-4,
                                      burst_count=0))
    channel = TimedChannel("127.0.0.1", chronyd)

    def advise(n: int) -> int | None:
        if n == 5:  # after 5 samples at 2^-4 s: slow down to 2^-2 s
            return _deadline(client.advise_poll(-2, monotonic_ns()))
        if n == 9:  # beyond poll_max: clamped to 2^-1 s
            return _deadline(client.advise_poll(3, monotonic_ns()))
        return None

    drive(client, channel, 4.5, advise)
    gaps = [(b - a) / 1e9 for a, b in zip(channel.send_times, channel.send_times[1:],
                                          strict=False)]
    assert len(gaps) >= 11, gaps
    assert all(0.0625 <= g < 0.0625 * 1.05 + 0.05 for g in gaps[:4]), gaps
    assert all(0.25 <= g < 0.25 * 1.05 + 0.05 for g in gaps[5:8]), gaps
    assert all(0.5 <= g < 0.5 * 1.05 + 0.05 for g in gaps[9:]), gaps
    assert client.poll_log2 == -1


def _deadline(actions: list[object]) -> int | None:
    for action in actions:
        deadline = getattr(action, "deadline_mono_ns", None)
        if deadline is not None:
            return int(deadline)
    return None


@needs_chronyd
def test_chronyd_rate_limiting_is_survived(tmp_path: Path) -> None:
    # chrony 4.3 drops rate-limited requests instead of kissing: at 16 requests/s against
    # "interval 0 burst 1 leak 2" it answered 16-24 of 47 in 15 runs (about 40 %).
    cmd, port = chronyd_server(tmp_path, "ratelimit interval 0 burst 1 leak 2")
    with started(cmd):
        _wait_for_ntp(port)
        time.sleep(1.1)  # let the probe's slot in chrony's limiter drain
        client = NtpClient(ClientSettings(source_id="c", poll_min=-4, poll_max=-4,
                                          initial_poll=-4, burst_count=0))
        channel = TimedChannel("127.0.0.1", port)
        samples = drive(client, channel, 3.0)
    sent = len(channel.send_times)
    # Bounds leave room for a loaded 2-core machine (fewer sends, slower replies).
    assert sent >= 10
    # Drops must have happened (well below every request answered) and the client must
    # have kept polling and accepting through them.
    assert 1 <= len(samples) <= 0.75 * sent, (len(samples), sent, client.counters)
    assert client.counters["kod_rate"] == 0
    assert client.counters["accepted"] == len(samples)
    assert all(abs(p.sample.offset_s) < 0.05 for p in samples)


def test_our_client_honours_rate_kisses_from_our_server() -> None:
    port = free_udp_port()
    with started(serve_cmd(f"127.0.0.1:{port}", "--rate-limit-cutoff-ms", "500",
                           "--rate-limit-cache-size", "64"), ready="listening") as server:
        client = NtpClient(ClientSettings(source_id="r", poll_min=-4, poll_max=4,
                                          initial_poll=-4, burst_count=0))
        channel = TimedChannel("127.0.0.1", port)
        samples = drive(client, channel, 3.5)
        counters = json.loads(server.stop().strip().splitlines()[-1])["counters"]
    assert client.counters["kod_rate"] == 1
    assert client.poll_log2 == 0  # the kiss asked for 2^0 s (the 500 ms cutoff, rounded up)
    assert len(samples) >= 3
    gaps = [(b - a) / 1e9 for a, b in zip(channel.send_times, channel.send_times[1:],
                                          strict=False)]
    assert all(g >= 1.0 for g in gaps[2:]), gaps  # after the kiss, never faster than 1 s
    assert counters["rate_limited"] == 1 and counters["accepted"] == len(samples)


# -- our server, real clients ------------------------------------------------------------------


def _chronyd_query(tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    tmp_path.chmod(0o777)
    conf = tmp_path / "query.conf"
    conf.write_text(f"server 127.0.0.1 port {port} iburst minpoll -4 maxpoll -4\n"
                    f"pidfile {tmp_path}/q.pid\ncmdport 0\n")
    return subprocess.run(["chronyd", "-Q", "-t", "10", "-f", str(conf)], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.skipif(not have("chronyd"), reason="needs chronyd (Debian chrony)")
@pytest.mark.parametrize("synchronized", [True, False])
def test_chronyd_query_against_our_server(tmp_path: Path, synchronized: bool) -> None:
    port = free_udp_port()
    flag = "--synchronized" if synchronized else "--unsynchronized"
    with started(serve_cmd(f"127.0.0.1:{port}", flag), ready="listening") as server:
        result = _chronyd_query(tmp_path, port)
        counters = json.loads(server.stop().strip().splitlines()[-1])["counters"]
    output = result.stdout + result.stderr
    assert counters["accepted"] >= 1
    if synchronized:
        match = re.search(r"System clock wrong by (-?[0-9.]+) seconds \(ignored\)", output)
        assert match, output
        assert abs(float(match.group(1))) < 0.005
        assert result.returncode == 0
    else:
        assert "No suitable source for synchronisation" in output, output
        assert result.returncode != 0


def _in_netns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


@pytest.mark.skipif(not (is_root() and have("ntpdig") and have("ip")),
                    reason="needs root (network namespace), ntpdig and iproute2")
@pytest.mark.parametrize("program", ["ntpdig", "sntp"])
def test_ntpdig_and_sntp_against_our_server(program: str) -> None:
    if not have(program):
        pytest.skip(f"{program} not installed")
    # ntpdig/sntp only talk to port 123, so the server gets a namespace of its own.
    with network_namespace() as ns:
        for listen, target in (("127.0.0.1:123", "127.0.0.1"), ("[::1]:123", "::1")):
            with started(_in_netns(ns, *serve_cmd(listen, "--stratum", "3")),
                         ready="listening"):
                result = subprocess.run(_in_netns(ns, program, "-j", "-t", "3", target),
                                        capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["stratum"] == 3 and report["leap"] == "no-leap"
            assert report["ip"] == target
            assert abs(report["offset"]) < 0.005
        with started(_in_netns(ns, *serve_cmd("127.0.0.1:123", "--unsynchronized")),
                     ready="listening") as server:
            result = subprocess.run(_in_netns(ns, program, "-t", "3", "127.0.0.1"),
                                    capture_output=True, text=True, timeout=30)
            counters = json.loads(server.stop().strip().splitlines()[-1])["counters"]
        assert counters["accepted"] == 1  # it got an answer …
        assert result.returncode == 1  # … and refused it: stratum 16 / leap 3
        assert "Response dropped: stratum too high" in result.stderr
        assert "no eligible servers" in result.stderr


def test_probe_and_serve_command_lines(tmp_path: Path) -> None:
    port = free_udp_port()
    with started(serve_cmd(f"127.0.0.1:{port}", "--stratum", "4"), ready="listening") as server:
        result = subprocess.run(
            [PYTHON, "-m", "ntpd_py.workers.ntp_probe", f"127.0.0.1:{port}", "--count",
             "3", "--json", "--burst", "3", "--burst-interval", "0.1", "--timeout", "10"],
            capture_output=True, text=True, timeout=30,
        )
        final = json.loads(server.stop().strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    samples = [line["sample"] for line in lines if "sample" in line]
    assert len(samples) == 3 and all(s["stratum"] == 4 for s in samples)
    summary = lines[-1]["summary"]
    assert summary["samples"] == 3 and summary["counters"]["accepted"] == 3
    assert final["counters"]["accepted"] == 3
