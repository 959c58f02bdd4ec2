"""`python -m ntpd_py.workers.ptp_probe /dev/ptp0`: read a PHC through the PHC source state
machine, without the daemon, and print its samples and status.

Read-only: it opens the device O_RDONLY and never adjusts any clock. Exit
status: 0 when ``--count`` samples were taken, 1 on timeout, 2 when the source
failed for good (not a PTP clock) or with permission denied.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.events import Sample
from ntpd_py.core.exit_codes import EX_USAGE
from ntpd_py.core.phc import ReadMethod
from ntpd_py.core.phc_estimate import Estimator
from ntpd_py.core.ptp_events import (
    CloseDevice,
    OpenDevice,
    PtpAction,
    PtpSourceState,
    PtpStatus,
    Publish,
    ReadDevice,
    Report,
    SetTimer,
)
from ntpd_py.core.ptp_source import PtpSource

from ._phc import PhcDevice, execute

__all__ = ["drive", "main"]


def _mono() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def drive(
    source: PtpSource,
    *,
    deadline_mono_ns: int,
    on_sample: Callable[[Sample], None],
    on_report: Callable[[PtpStatus], None],
    stop: Callable[[], bool],
) -> None:
    """Run ``source`` against its device until ``stop()`` or the deadline: the smallest
    complete worker loop (sleep until the timer, carry out actions, feed events back)."""
    device: PhcDevice | None = None
    pending: list[PtpAction] = source.start(_mono())
    try:
        while not stop():
            while pending:
                action = pending.pop(0)
                if isinstance(action, OpenDevice | ReadDevice | CloseDevice):
                    device, event = execute(device, source.config.path, action)
                    if event is not None:
                        pending += source.handle_event(event, _mono())
                elif isinstance(action, Publish):
                    on_sample(action.sample)
                elif isinstance(action, Report):
                    on_report(action.status)
                elif isinstance(action, SetTimer):
                    pass  # source.deadline_ns holds the latest one
            if stop():
                return
            due = source.deadline_ns
            if due is None or due >= deadline_mono_ns:
                return
            time.sleep(max(0, due - _mono()) / 1e9)
            pending = source.handle_timer(_mono())
    finally:
        if device is not None:
            device.close()


def _jsonable(obj: Any) -> Any:
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(obj).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ntpd_py.workers.ptp_probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("path", help="PHC device, e.g. /dev/ptp0")
    parser.add_argument(
        "--method",
        choices=[m.value for m in ReadMethod],
        help="use only this read method (default: best the device supports)",
    )
    parser.add_argument("--count", type=int, default=5, help="samples to take (default 5)")
    parser.add_argument("--interval", type=int, default=-2, help="poll log2 s (default -2)")
    parser.add_argument("--precision", type=float, default=1e-7, help="1-sigma s (default 1e-7)")
    parser.add_argument(
        "--estimator",
        choices=[e.value for e in Estimator],
        help="default: the read method's own (core.phc.default_estimator)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    config = PtpSourceConfig(
        mode="ptp", path=args.path, interval=args.interval, precision=args.precision
    )
    estimator = Estimator(args.estimator) if args.estimator else None
    source = PtpSource(
        config,
        args.path,
        estimator=estimator,
        method=ReadMethod(args.method) if args.method else None,
    )
    samples: list[Sample] = []

    def on_sample(sample: Sample) -> None:
        samples.append(sample)
        if args.json:
            print(json.dumps({"sample": _jsonable(sample)}), flush=True)
        else:
            print(
                f"offset {sample.offset_s * 1e6:+12.3f} µs  window {sample.delay_s * 1e6:8.3f} µs"
                f"  uncertainty {sample.uncertainty_s * 1e6:8.3f} µs",
                flush=True,
            )

    def on_report(status: PtpStatus) -> None:
        if args.json:
            print(json.dumps({"report": _jsonable(status)}), flush=True)
        else:
            print(f"[{status.state}] {status.message}", flush=True)

    def stop() -> bool:
        return len(samples) >= args.count or source.state is PtpSourceState.FAILED

    drive(
        source,
        deadline_mono_ns=_mono() + int(args.timeout * 1e9),
        on_sample=on_sample,
        on_report=on_report,
        stop=stop,
    )
    status = source.status()
    if args.json:
        print(json.dumps({"status": _jsonable(status)}), flush=True)
    else:
        print(
            f"status: {status.state}, method {status.method}, "
            f"{status.readings_per_sample} readings/sample, polls {status.polls}, "
            f"samples {status.samples}, errors {status.errors or 'none'}"
        )
    if status.state is PtpSourceState.FAILED:
        return EX_USAGE
    return 0 if len(samples) >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
