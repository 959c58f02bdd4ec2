"""Standalone NTP client runner (tests, interop, diagnostics): not the daemon's NTP worker.

    python -m ntpd_py.workers.ntp_probe HOST[:PORT] [--count N] [--json] [--timeout S]
        [--poll-min P] [--poll-max P] [--initial-poll P] [--burst N] [--advise-poll P]

Runs the sans-IO client state machine against one server over real sockets
(fresh random source port per request, kernel timestamps) and prints every
sample; stops after ``--count`` samples, a DENY/RSTR kiss, or ``--timeout``
seconds. The last line (with ``--json``: a JSON object) summarises the
counters, poll interval and reach register. Never touches the clock.
Exit status: 0 if at least one sample was taken, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ntpd_py.core.config import NTP_PORT, parse_host_port
from ntpd_py.core.ntp_client import (
    ClientAction,
    ClientSettings,
    Demobilize,
    NtpClient,
    Publish,
    ReportUnreachable,
)
from ntpd_py.core.packet import kiss_code

from ._udp import ClientChannel, client_io_step, monotonic_ns

__all__ = ["main", "run_probe"]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ntp_probe", description=__doc__.split("\n")[0])
    p.add_argument("server", help="HOST[:PORT] (numeric IPv4/IPv6; [v6]:port)")
    p.add_argument("--count", type=int, default=4, help="stop after this many samples")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--poll-min", type=int, default=4)
    p.add_argument("--poll-max", type=int, default=10)
    p.add_argument("--initial-poll", type=int, default=None)
    p.add_argument("--burst", type=int, default=4, help="start-up burst length (0 = none)")
    p.add_argument("--burst-interval", type=float, default=2.0, help="seconds between burst polls")
    p.add_argument(
        "--advise-poll",
        type=int,
        default=None,
        help="after the first sample, advise this poll interval (log2 s)",
    )
    p.add_argument(
        "--no-tx-timestamps",
        action="store_true",
        help="use the user-space send time instead of the kernel's",
    )
    return p.parse_args(argv)


def _emit(action: ClientAction, as_json: bool) -> None:
    if isinstance(action, Publish):
        s = action.sample
        if as_json:
            record = asdict(s)
            record["kind"] = str(s.kind)
            record["leap"] = int(s.leap)
            print(json.dumps({"sample": record}), flush=True)
        else:
            print(
                f"offset {s.offset_s:+.9f} s  delay {s.delay_s:.9f} s  stratum {s.stratum}"
                f"  leap {int(s.leap)}  refid {s.reference_id:08x}  poll {s.poll_log2}",
                flush=True,
            )
    elif isinstance(action, ReportUnreachable):
        print(
            json.dumps({"unreachable": action.unanswered_polls})
            if as_json
            else f"unreachable after {action.unanswered_polls} unanswered polls",
            flush=True,
        )
    elif isinstance(action, Demobilize):
        print(
            json.dumps({"demobilize": str(action.reason)})
            if as_json
            else f"demobilized: kiss {action.reason}",
            flush=True,
        )


def run_probe(args: argparse.Namespace) -> tuple[NtpClient, int]:
    host, port = parse_host_port(args.server, NTP_PORT)
    initial = args.poll_min if args.initial_poll is None else args.initial_poll
    settings = ClientSettings(
        source_id=f"{host}:{port}",
        poll_min=args.poll_min,
        poll_max=args.poll_max,
        initial_poll=initial,
        burst_count=args.burst,
        burst_interval_ns=int(args.burst_interval * 1e9),
    )
    client = NtpClient(settings)
    channel = ClientChannel(host, port, tx_timestamps=not args.no_tx_timestamps)
    end = monotonic_ns() + int(args.timeout * 1e9)
    samples = 0
    deadline: int | None = None
    try:
        while samples < args.count and monotonic_ns() < end:
            deadline, actions = client_io_step(
                client, channel, deadline, max(end - monotonic_ns(), 0)
            )
            for action in actions:
                _emit(action, args.json)
                if isinstance(action, Publish):
                    samples += 1
                    if samples == 1 and args.advise_poll is not None:
                        more = client.advise_poll(args.advise_poll, monotonic_ns())
                        for timer in more:
                            deadline = getattr(timer, "deadline_mono_ns", deadline)
                elif isinstance(action, Demobilize):
                    return client, samples
    finally:
        channel.close()
    return client, samples


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    client, samples = run_probe(args)
    status = client.status()
    summary = {
        "samples": samples,
        **asdict(status),
        "last_other_kiss": kiss_code(0) if not client.last_other_kiss else client.last_other_kiss,
    }
    print(json.dumps({"summary": summary}) if args.json else f"summary: {summary}", flush=True)
    return 0 if samples else 1


if __name__ == "__main__":
    sys.exit(main())
