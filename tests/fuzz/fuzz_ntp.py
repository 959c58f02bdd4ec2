"""Coverage-guided fuzzing (atheris/libFuzzer) of everything that reads NTP bytes from the net.

Not part of the test run (pytest does not collect ``fuzz_*.py``). Run it by hand:

    pip install -e '.[fuzz]'
    python tests/fuzz/fuzz_ntp.py -max_total_time=60 [corpus_dir]

One input goes through the packet parser, the server responder (single and batch
path, with an access list and rate limiting on) and the client's reply checks
(with a request outstanding whose origin the fuzzer can discover through
libFuzzer's comparison tracing). Any exception other than ``PacketError`` from
the parser, or any exception at all from the responder or the client, is a
crash. The hypothesis tests in tests/core cover the same contract in the
default run; this finds deeper paths.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from ntpd_py.core.config import FilterList, ServerConfig
    from ntpd_py.core.errors import PacketError
    from ntpd_py.core.events import LeapIndicator
    from ntpd_py.core.ntp_client import ClientSettings, LocalTime, NtpClient
    from ntpd_py.core.ntp_server import Responder, ServerClockState
    from ntpd_py.core.packet import parse

NOW_NTP = 0xE8FE_6F1C_0000_0000
STATE = ServerClockState(True, LeapIndicator.NONE, 2, -20, 0.001, 0.001, 1, NOW_NTP)
CONFIG = ServerConfig(listen="127.0.0.1:123", rate_limiting_cache_size=16,
                      rate_limiting_cutoff_ms=1,
                      allowlist=FilterList(filter=["127.0.0.0/8"], action="deny"))
OUT = bytearray(48 * 4)
T = LocalTime(1_700_000_000 * 10**9, 10**12)


def one_input(data: bytes) -> None:
    with contextlib.suppress(PacketError):  # the only exception parse() may raise
        parse(data)
    responder = Responder(CONFIG, state=STATE)
    responder.respond(data, len(data), b"\x7f\x00\x00\x01", NOW_NTP, 0, OUT)
    plain = Responder(ServerConfig(listen="127.0.0.1:123"), state=STATE)
    stride = max(len(data), 48)
    batch = bytearray(data.ljust(stride, b"\0")) * 3
    plain.respond_batch(batch, stride, [len(data)] * 3, [NOW_NTP] * 3, None, 0, OUT)
    client = NtpClient(ClientSettings(source_id="fuzz"), random_bytes=lambda n: b"\x11" * n)
    client.handle_timer(0)
    client.handle_reply(data, T, T)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
