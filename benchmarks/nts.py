"""NTS figures on loopback: key exchanges per second (chronyd's NTS-KE server vs ours),
NTS-authenticated round trips against chronyd vs plain NTP, and the per-request cost of
our server-side NTS against the plain responder.

    python benchmarks/nts.py [--seconds 3] [--exchanges 300]

* KE handshakes/s: our KE client (workers/nts_ke_client.py, pyOpenSSL) runs key
  exchanges back to back for ``--seconds`` against ``chronyd -x`` (ntsserverkey/cert,
  ``ntsprocesses 0``) and against our KE server (workers/nts_ke_server.py) in its own
  process. The same client for both: the ratio compares the servers, though the
  client's own cost is in both figures.
* Round trip: ``--exchanges`` NTS-authenticated NTP exchanges against chronyd (build,
  send, receive, verify, take the new cookie) vs the same number of plain NTP
  exchanges; medians in microseconds.
* Throughput with the C load generator (benchmarks/ntp_loadgen.c, a fixed NTS request
  as its template; with it only replies of an authenticated reply's length count, and
  any other reply stops the run): chronyd plain vs chronyd NTS; the daemon's server
  worker (`ntpd-py run`) plain vs NTS (the C engine, workers/_nts_fast.c; one of its
  replies is then verified with the client's key); and benchmarks/nts_udp_loop.py (one
  process, one request at a time through the Python reference, core/nts_server.py).
* KE server memory: RSS of our KE server process idle, with ``--slow`` stalled TLS
  clients (ClientHello sent, then nothing), with twice as many attempts (the limit is
  ``--slow``) and after their deadline.
* Server cost (in process, no sockets): core/nts_server.py judging a request and
  building its authenticated reply with 1 fresh cookie, against core/ntp_server.py's
  plain ``Responder.respond``; requests/s of each and the ratio; and the C engine
  answering batches of 64 such requests (no session cache: every request is opened,
  verified and sealed from its own cookie).

chronyd and our KE server are stopped by PID at the end, also on errors. Loopback only;
chronyd never steers (-x). Needs root (chronyd drops to _chrony) and Debian's chrony.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ntpd_py.core.config import ServerConfig  # noqa: E402
from ntpd_py.core.events import LeapIndicator  # noqa: E402
from ntpd_py.core.ntp_server import Responder, ServerClockState  # noqa: E402
from ntpd_py.core.nts_cookies import CookieJar, CookieKey, NtsKeys, ServerKeySet  # noqa: E402
from ntpd_py.core.nts_extensions import AesSivCmac256, build_client_request  # noqa: E402
from ntpd_py.core.nts_server import Verdict, authenticated_reply, judge_request  # noqa: E402
from ntpd_py.core.packet import client_request  # noqa: E402
from ntpd_py.workers.nts_ke_client import KeOutcome, client_context, key_exchange  # noqa: E402

from tests.nts_helpers import free_tcp_port, make_pki, nts_exchange, verify  # noqa: E402


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ke(port: int, ca: Path, timeout_s: float = 15.0) -> KeOutcome:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        result = key_exchange("127.0.0.1", port, ca_file=str(ca), timeout=2.0)
        if isinstance(result, KeOutcome):
            return result
        time.sleep(0.2)
    raise SystemExit(f"no NTS-KE server on port {port}")


def handshakes_per_s(port: int, ca: Path, seconds: float) -> float:
    # One client context for every exchange: loading the system trust store is the
    # client's biggest cost and no server's.
    context = client_context(str(ca))
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        result = key_exchange("127.0.0.1", port, timeout=2.0, context=context)
        if not isinstance(result, KeOutcome):
            raise SystemExit(f"key exchange failed: {result}")
        count += 1
    return count / (time.perf_counter() - start)


def plain_rtt_us(port: int, count: int) -> float:
    times = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for i in range(count):
            start = time.perf_counter()
            s.sendto(client_request(i + 1, 4), ("127.0.0.1", port))
            s.recvfrom(2048)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def nts_rtt_us(outcome: KeOutcome, count: int) -> float:
    jar = CookieJar()
    jar.install(outcome.keys, outcome.response.cookies)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        verify(jar, nts_exchange(jar, outcome.ntp_port))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def server_cost(seconds: float) -> tuple[float, float, float]:
    keyset = ServerKeySet.generate(os.urandom, 0)
    keys = NtsKeys(os.urandom(32), os.urandom(32))
    request = build_client_request(client_request(7, 4), os.urandom(32),
                                   keyset.make_cookie(keys, os.urandom(16)), 0,
                                   AesSivCmac256(keys.c2s), os.urandom(16))
    state = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.001, 0.001, 1,
                             0xE8FE_6F1C_0000_0000)
    responder = Responder(ServerConfig(listen="127.0.0.1:123"), state=state)
    out = bytearray(2048)
    plain = client_request(7, 4)

    def rate(one: object) -> float:
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(200):
                one()  # type: ignore[operator]
            count += 200
        return count / (time.perf_counter() - start)

    def plain_one() -> None:
        responder.respond(plain, len(plain), b"\x7f\0\0\1", 0xE8FE_6F1C_0000_0000, 0, out)

    def nts_one() -> None:
        length = responder.respond(request, len(request), b"\x7f\0\0\1",
                                   0xE8FE_6F1C_0000_0000, 0, out)
        verdict = judge_request(request, keyset)
        assert verdict.verdict is Verdict.AUTHENTICATED
        authenticated_reply(bytes(out[:48]), verdict, keyset, os.urandom, len(request))
        assert length

    return rate(plain_one), rate(nts_one), engine_rate(keyset, request, seconds)


def engine_rate(keyset: ServerKeySet, request: bytes, seconds: float) -> float:
    """requests/s of the C engine alone, batches of 64 (0 if it is not built)."""
    try:
        from ntpd_py.workers import _nts_fast
    except ImportError:
        return 0.0
    n, stride = 64, 1152
    engine = _nts_fast.Engine([(k.key_id, k.key) for k in keyset.keys])
    data = bytearray(stride * n)
    for k in range(n):
        data[k * stride : k * stride + len(request)] = request
    lengths = struct.pack(f"={n}i", *[len(request)] * n)
    rx = struct.pack(f"={n}Q", *[0xE8FE_6F1C_0000_0000] * n)
    templates = bytes(4 * 48) + bytes([0x24]) + bytes(47) + bytes(3 * 48)
    out, verdicts = bytearray(stride * n), bytearray(n)
    names, iov, hdr = bytearray(32 * n), bytearray(16 * n), bytearray(64 * n)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        random = os.urandom(_nts_fast.RANDOM_PER_REQUEST * n)
        slots, _ = engine.serve(data, stride, lengths, rx, templates, out, stride, random, 0,
                                verdicts, names, 32, 16, iov, hdr)
        assert len(slots) == n and verdicts.count(_nts_fast.AUTHENTICATED) == n
        count += n
    return count / (time.perf_counter() - start)


def stalled_client(port: int, ca: Path) -> ssl.SSLSocket:
    """A client that sends its ClientHello and then nothing: the server holds TLS state."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["ntske/1"])
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setblocking(False)
    tls = context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls


def slow_client_memory(pki_ca: Path, chain: Path, key: Path, count: int) -> list[str]:
    """RSS of a KE server process idle, with ``count`` stalled clients, with twice as many
    attempts (the limit is ``count``), and after they time out."""
    import psutil

    port = free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ntpd_py.workers.nts_ke_server", "--listen", f"127.0.0.1:{port}",
         "--chain", str(chain), "--key", str(key), "--max-connections", str(count),
         "--timeout-ms", "8000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients: list[ssl.SSLSocket] = []
    try:
        wait_ke(port, pki_ca)
        for _ in range(20):  # warm the allocator with complete exchanges
            key_exchange("127.0.0.1", port, ca_file=str(pki_ca), timeout=2.0)
        rss = psutil.Process(proc.pid)
        figures = [f"idle {rss.memory_info().rss / 2**20:.1f} MiB"]
        for _ in range(count):
            clients.append(stalled_client(port, pki_ca))
        time.sleep(1.0)
        figures.append(f"{count} stalled {rss.memory_info().rss / 2**20:.1f} MiB")
        for _ in range(count):
            with contextlib.suppress(OSError):
                clients.append(stalled_client(port, pki_ca))
        time.sleep(1.0)
        figures.append(f"{2 * count} attempts (limit {count}) "
                       f"{rss.memory_info().rss / 2**20:.1f} MiB")
        time.sleep(8.0)
        ok = isinstance(key_exchange("127.0.0.1", port, ca_file=str(pki_ca), timeout=2.0),
                        KeOutcome)
        figures.append(f"after the deadline {rss.memory_info().rss / 2**20:.1f} MiB "
                       f"(a new exchange {'succeeds' if ok else 'FAILS'})")
        return figures
    finally:
        for client in clients:
            client.close()
        proc.terminate()
        proc.wait(5)


MAGIC = 0x4E545042  # what ntp_loadgen.c looks for in the origin's top 32 bits


def compile_loadgen(work: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the load generator")
    binary = work / "ntp_loadgen"
    subprocess.run([gcc, "-O2", "-o", str(binary), str(REPO / "benchmarks" / "ntp_loadgen.c")],
                   check=True)
    return binary


def nts_template(work: Path, name: str, keys: NtsKeys, cookie: bytes,
                 uid: bytes | None = None) -> Path:
    """One NTS request, sent as it is by the load generator (its transmit is signed)."""
    uid = uid or os.urandom(32)
    request = build_client_request(client_request((MAGIC << 32) | 1, 4), uid, cookie,
                                   0, AesSivCmac256(keys.c2s), os.urandom(16))
    path = work / name
    path.write_bytes(request)
    return path


# An authenticated reply with no cookie at all: header, uid echoed, authenticator.
MIN_NTS_REPLY = 48 + 36 + 40


def loadgen_rate(loadgen: Path, port: int, seconds: float, template: Path | None = None) -> float:
    """replies/s; with an NTS template only authenticated-length replies count, any other
    reply stops the benchmark (a NAK or plain reply must not pass for an NTS one)."""
    cmd = [str(loadgen), "127.0.0.1", str(port), str(seconds), "16", "32"]
    if template is not None:
        cmd += [str(template), str(MIN_NTS_REPLY)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                            check=True)
    figures = json.loads(result.stdout)
    if figures["kod"] or figures["bad"]:
        raise SystemExit(f"kiss-o'-death or unexpected replies from port {port}: {figures}")
    return float(figures["replies_per_s"])


def throughput(work: Path, chrony: KeOutcome, seconds: float) -> list[str]:
    """replies/s with the C load generator: chronyd plain and NTS, our loop plain and NTS."""
    loadgen = compile_loadgen(work)
    key = os.urandom(32)
    keyset = ServerKeySet([CookieKey(1, key)], 0)
    ours_keys = NtsKeys(os.urandom(32), os.urandom(32))
    ours_template = nts_template(work, "ours.req", ours_keys,
                                 keyset.make_cookie(ours_keys, os.urandom(16)))
    chrony_template = nts_template(work, "chrony.req", chrony.keys, chrony.response.cookies[0])
    rates = {
        "chronyd plain": loadgen_rate(loadgen, chrony.ntp_port, seconds),
        "chronyd NTS": loadgen_rate(loadgen, chrony.ntp_port, seconds, chrony_template),
    }
    for mode in ("plain", "nts"):
        port = free_udp_port()
        loop = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "nts_udp_loop.py"),
                                 str(port), mode, key.hex()])
        try:
            time.sleep(1.0)
            template = ours_template if mode == "nts" else None
            rates[f"our loop {mode}"] = loadgen_rate(loadgen, port, seconds, template)
        finally:
            loop.terminate()
            loop.wait(5)
    rates.update(daemon_rates(loadgen, work, seconds))
    rates.update(daemon_rates(
        loadgen, work, seconds,
        'allowlist = { filter = ["127.0.0.0/8"], action = "ignore" }\n', " allowlist"))
    lines = [f"  {name:16s} {rate:9.0f} replies/s" for name, rate in rates.items()]
    lines.append(f"  ratios: the daemon's NTS / its plain "
                 f"{rates['daemon nts'] / rates['daemon plain']:.3f}, the daemon's NTS / "
                 f"chronyd NTS {rates['daemon nts'] / rates['chronyd NTS']:.2f}")
    ours = rates["our loop nts"]
    lines.append(f"  ratios (the Python reference loop): our NTS / our plain "
                 f"{ours / rates['our loop plain']:.2f}"
                 f", our NTS / chronyd NTS {ours / rates['chronyd NTS']:.2f}"
                 f", chronyd NTS / chronyd plain "
                 f"{rates['chronyd NTS'] / rates['chronyd plain']:.2f}")
    return lines


def verify_one_reply(port: int, request: bytes, uid: bytes, keys: NtsKeys) -> None:
    """The load generator only looks at lengths: check that the server's reply to the same
    request verifies with the client's S2C key and carries a cookie that works."""
    from ntpd_py.core.nts_extensions import open_server_reply

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(request, ("127.0.0.1", port))
        reply = sock.recv(2048)
    opened = open_server_reply(reply, uid, AesSivCmac256(keys.s2c))
    if not opened.cookies:
        raise SystemExit(f"the NTS reply from port {port} verified but carried no cookie")


def daemon_rates(loadgen: Path, work: Path, seconds: float, server_extra: str = "",
                 label: str = "") -> dict[str, float]:
    """replies/s of the real daemon's server worker (`ntpd-py run`, one server process,
    simulated clock), plain and NTS, its keyset given in the file the cookies come from.
    ``server_extra``: more keys for its [[server]] table (an allowlist: the per-client
    decision the C engine's judging pass leaves to Python)."""
    from tests.adversarial.helpers import nts_server_daemon
    from tests.integration.daemon import wait_for

    port = free_udp_port()
    daemon, keyset = nts_server_daemon(port, server_extra)
    keys = NtsKeys(os.urandom(32), os.urandom(32))
    uid = os.urandom(32)
    template = nts_template(work, "daemon.req", keys, keyset.make_cookie(keys, os.urandom(16)),
                            uid)
    rates = {}
    with daemon:
        daemon.wait_running(["server"])
        def synchronized() -> bool:
            clock = (daemon.status() or {}).get("clock") or {}
            return bool(clock.get("synchronized") or (clock.get("system") or {})
                        .get("synchronized"))

        wait_for(synchronized, 30, "the daemon synchronized")
        rates[f"daemon plain{label}"] = loadgen_rate(loadgen, port, seconds)
        rates[f"daemon nts{label}"] = loadgen_rate(loadgen, port, seconds, template)
        verify_one_reply(port, template.read_bytes(), uid, keys)
    daemon.cleanup()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--exchanges", type=int, default=300)
    parser.add_argument("--slow", type=int, default=200, help="stalled TLS clients")
    args = parser.parse_args()
    if shutil.which("chronyd") is None or os.geteuid() != 0:
        print("needs chronyd and root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ntpd-py-nts-bench-"))
    work.chmod(0o755)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pki = make_pki(work / "pki")
        ntp_port, ke_port, our_ke_port = free_udp_port(), free_tcp_port(), free_tcp_port()
        (work / "nts").mkdir()
        (work / "nts").chmod(0o777)
        conf = work / "chrony.conf"
        conf.write_text(
            f"port {ntp_port}\nntsport {ke_port}\nbindaddress 127.0.0.1\nlocal stratum 1\n"
            f"allow 127.0.0.1\ncmdport 0\npidfile {work}/chronyd.pid\n"
            f"ntsserverkey {pki.server_key}\nntsservercert {pki.server_cert}\n"
            f"ntsdumpdir {work}/nts\nntsprocesses 0\n")
        procs.append(subprocess.Popen(["chronyd", "-x", "-d", "-f", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ntpd_py.workers.nts_ke_server", "--listen",
             f"127.0.0.1:{our_ke_port}", "--chain", str(pki.server_cert),
             "--key", str(pki.server_key)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        outcome = wait_ke(ke_port, pki.ca_cert)
        wait_ke(our_ke_port, pki.ca_cert)
        print(f"# loopback, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; our KE client for both servers")
        chrony_rate = handshakes_per_s(ke_port, pki.ca_cert, args.seconds)
        our_rate = handshakes_per_s(our_ke_port, pki.ca_cert, args.seconds)
        print(f"NTS-KE handshakes/s   chronyd {chrony_rate:8.1f}   ours {our_rate:8.1f}   "
              f"ratio ours/chronyd {our_rate / chrony_rate:.2f}")
        plain = plain_rtt_us(outcome.ntp_port, args.exchanges)
        nts = nts_rtt_us(wait_ke(ke_port, pki.ca_cert), args.exchanges)
        print(f"round trip vs chronyd (median of {args.exchanges})   plain NTP {plain:7.1f} us"
              f"   NTS {nts:7.1f} us   (client build+verify included)")
        print("KE server RSS under slow clients: " + "; ".join(
            slow_client_memory(pki.ca_cert, pki.server_cert, pki.server_key, args.slow)))
        print("replies/s, C load generator (16 sockets x 32 in flight), one process each:")
        print("\n".join(throughput(work, wait_ke(ke_port, pki.ca_cert), args.seconds)))
        plain_rate, nts_rate, engine = server_cost(args.seconds)
        print(f"server cost in process   plain {plain_rate:9.0f} req/s   NTS (Python reference) "
              f"{nts_rate:9.0f} req/s   ratio NTS/plain {nts_rate / plain_rate:.2f}   "
              f"NTS (C engine, batches of 64) {engine:9.0f} req/s")
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
