"""Standalone NTP server runner (tests, interop, benchmarks): not the daemon's server worker.

    python -m ntpd_py.workers.ntp_serve --listen 127.0.0.1:12345 [--stratum 2]
        [--synchronized | --unsynchronized] [--reuseport] [--rate-limit-cutoff-ms MS]
        [--rate-limit-cache-size N] [--deny CIDR]... [--allow CIDR]... [--allow-action A]

Serves a fixed clock state taken from the local clock at start (reference time
= now, root delay/dispersion as given), with the same sans-IO responder and
batched I/O the daemon's server worker uses. Prints ``listening on ADDR`` when
ready and, on SIGTERM/SIGINT, one JSON line with the counters.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys
import time
from types import FrameType
from typing import Literal, cast

from ntpd_py.core.config import FilterList, ServerConfig, parse_socket_addr
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.ntp_server import Responder, ServerClockState
from ntpd_py.core.packet import refid_from_text
from ntpd_py.core.timestamps import precision_log2, unix_ns_to_ntp64

from ._mmsg import ServerBatchIO
from ._udp import open_server_socket

__all__ = ["build_responder", "main", "serve"]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ntp_serve", description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="IP:PORT ([v6]:PORT for IPv6)")
    p.add_argument("--stratum", type=int, default=2)
    sync = p.add_mutually_exclusive_group()
    sync.add_argument("--synchronized", dest="synchronized", action="store_true", default=True)
    sync.add_argument("--unsynchronized", dest="synchronized", action="store_false")
    p.add_argument("--local-stratum", type=int, default=16)
    p.add_argument("--refid", default="LOCL", help="reference id (≤ 4 ASCII characters)")
    p.add_argument("--root-delay", type=float, default=0.0)
    p.add_argument("--root-dispersion", type=float, default=0.0)
    p.add_argument("--reuseport", action="store_true", help="set SO_REUSEPORT (several processes)")
    p.add_argument("--rate-limit-cutoff-ms", type=int, default=0)
    p.add_argument("--rate-limit-cache-size", type=int, default=0)
    p.add_argument("--deny", action="append", default=[], metavar="CIDR")
    p.add_argument("--allow", action="append", default=None, metavar="CIDR")
    p.add_argument("--allow-action", choices=("deny", "ignore"), default="ignore")
    p.add_argument("--accept-versions", default="3,4")
    p.add_argument("--batch", type=int, default=64)
    return p.parse_args(argv)


def build_responder(args: argparse.Namespace) -> Responder:
    config = ServerConfig(
        listen=args.listen,
        rate_limiting_cache_size=args.rate_limit_cache_size,
        rate_limiting_cutoff_ms=args.rate_limit_cutoff_ms,
        denylist=FilterList(filter=args.deny, action="deny") if args.deny else None,
        allowlist=(
            FilterList(filter=args.allow, action=args.allow_action)
            if args.allow is not None
            else None
        ),
        # The model checks each version is 3 or 4; the cast only tells mypy so.
        accept_ntp_versions=cast(
            "list[Literal[3, 4]]", [int(v) for v in args.accept_versions.split(",")]
        ),
    )
    precision = precision_log2(time.clock_getres(time.CLOCK_REALTIME))
    refid = refid_from_text(args.refid)
    if args.synchronized:
        state = ServerClockState(
            synchronized=True,
            leap=LeapIndicator.NONE,
            stratum=args.stratum,
            precision_log2=precision,
            root_delay_s=args.root_delay,
            root_dispersion_s=args.root_dispersion,
            reference_id=refid,
            reference_time_ntp=unix_ns_to_ntp64(time.clock_gettime_ns(time.CLOCK_REALTIME)),
        )
    else:
        state = ServerClockState.unsynchronized(precision, refid)
    return Responder(config, local_stratum=args.local_stratum, state=state)


_stop = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def serve(io: ServerBatchIO) -> None:
    """Answer requests until SIGTERM/SIGINT."""
    poller = select.poll()
    poller.register(io.fd, select.POLLIN)
    while not _stop:
        if poller.poll(500):
            io.handle_ready()


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    host, port = parse_socket_addr(args.listen)
    responder = build_responder(args)
    sock = open_server_socket(host, port, reuseport=args.reuseport)
    io = ServerBatchIO(sock, responder, batch=args.batch)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"listening on {args.listen}", flush=True)
    try:
        serve(io)
    finally:
        sock.close()
        print(json.dumps({"counters": responder.counters(), "batches": io.batches}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
