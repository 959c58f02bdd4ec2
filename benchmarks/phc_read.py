"""PHC read benchmark: our read paths and estimators against phc2sys and phc_ctl on one device.

Run it inside the QEMU guest (real kernel PHCs: igb /dev/ptp0, e1000e /dev/ptp1):

    python -m tests.vm run -- .venv/bin/python benchmarks/phc_read.py [--seconds 32]

Per PHC and per read path it prints readings/s (back-to-back ioctls), the
reading window (median, p99), and the offset jitter between successive samples
for each estimator (computed from the same polls). Jitter of a sample series:
each successive offset difference minus the PHC's frequency offset times the
time between the two samples (the frequency is the median of Δoffset/Δt, so
neither the drift nor irregular sample timing counts as noise), then median
and p99 of the absolute values. Ours and phc2sys run in alternating blocks so
load changes on the host hit both alike. phc2sys runs on the same device at the
same rate and readings per update, with the `ntpshm` servo (it only writes
samples to an NTP SHM segment) and without CAP_SYS_TIME (capsh), so it cannot
steer even the guest's clock; phc_ctl `cmp` runs back to back. Nothing here
adjusts any clock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ntpd_py.core.phc import PhcReadingRejected, ReadMethod
from ntpd_py.core.phc_estimate import Estimator, WindowSlope, default_estimator, estimate
from ntpd_py.workers._phc import PhcDevice, PhcError, open_phc

PATHS = (ReadMethod.EXTENDED, ReadMethod.BASIC, ReadMethod.CLOCK_GETTIME)
READINGS = 25


@dataclass
class Row:
    device: str
    who: str  # "ntpd-py <path> <estimator>", "phc2sys", "phc_ctl"
    readings_per_s: float | None
    window_med_ns: float | None  # every reading
    window_p99_ns: float | None
    best_med_ns: float | None  # the smallest window of each sample (what phc2sys reports)
    best_p99_ns: float | None
    jitter_med_ns: float
    jitter_p99_ns: float
    samples: int


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def deviations(times_ns: list[int], offsets: list[int]) -> list[float]:
    """Jitter of one uninterrupted series: |Δoffset - f·Δt| per successive pair, where f is
    the median Δoffset/Δt (the PHC's frequency offset), so irregular sample timing is not
    counted as measurement noise."""
    pairs = list(zip(itertools.pairwise(times_ns), itertools.pairwise(offsets), strict=True))
    freq = statistics.median((o1 - o0) / (t1 - t0) for (t0, t1), (o0, o1) in pairs)
    return [abs((o1 - o0) - freq * (t1 - t0)) for (t0, t1), (o0, o1) in pairs]


def readings_per_second(device: PhcDevice, method: ReadMethod, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += len(device.read(method, READINGS))
    return count / (time.perf_counter() - start)


def poll_series(device: PhcDevice, method: ReadMethod, rate_hz: int,
                seconds: float) -> tuple[list[int], list[int],
                                         dict[Estimator, tuple[list[int], list[int]]]]:
    """Poll on an absolute grid; return all windows, best windows, each estimator's offsets."""
    windows: list[int] = []
    best: list[int] = []
    offsets: dict[Estimator, tuple[list[int], list[int]]] = {e: ([], []) for e in Estimator}
    period = 1e9 / rate_hz
    slope = WindowSlope()  # fresh per block, as after a (re)open; warms up in 8 polls
    start = time.monotonic_ns()
    for k in range(int(seconds * rate_hz)):
        delay = start + k * period - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        readings = device.read(method, READINGS)
        assert isinstance(readings, list)
        try:
            results = {est: estimate(readings, est, slope) for est in Estimator}
        except PhcReadingRejected:
            continue
        slope.update(readings)
        for est, result in results.items():
            offsets[est][0].append(result.realtime_ns)
            offsets[est][1].append(result.offset_ns)
        windows += [r.window_ns for r in readings]
        best.append(min(r.window_ns for r in readings))
    return windows, best, offsets


@dataclass
class Series:
    """Pooled results of one reader over several blocks."""

    rps: float | None = None
    windows: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    devs: list[float] = field(default_factory=list)
    samples: int = 0

    def row(self, device: str, who: str) -> Row:
        def stat(values: list[float], q: float) -> float | None:
            return pct(values, q) if values else None

        return Row(device, who, self.rps, stat(self.windows, 0.5), stat(self.windows, 0.99),
                   stat(self.best, 0.5), stat(self.best, 0.99), stat(self.devs, 0.5) or 0.0,
                   stat(self.devs, 0.99) or 0.0, self.samples)


def ours_block(device: PhcDevice, method: ReadMethod, rate_hz: int, seconds: float,
               out: dict[Estimator, Series]) -> None:
    windows, best, offsets = poll_series(device, method, rate_hz, seconds)
    for est, (times, series) in offsets.items():
        pooled = out[est]
        pooled.windows += windows
        pooled.best += best
        pooled.devs += deviations(times, series)
        pooled.samples += len(series)


def phc2sys_block(path: str, rate_hz: int, seconds: float, out: Series) -> None:
    exe = shutil.which("phc2sys")
    if exe is None:
        return
    argv = [exe, "-s", path, "-c", "CLOCK_REALTIME", "-O", "0", "-E", "ntpshm", "-M", "7",
            "-R", str(rate_hz), "-N", str(READINGS), "-m", "-q"]
    capsh = shutil.which("capsh")
    if capsh is not None:  # belt and braces: no CAP_SYS_TIME, cannot steer the guest clock
        argv = [capsh, "--drop=cap_sys_time", "--", "-c", 'exec "$@"', "phc2sys", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out_text, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        out_text, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    found = re.findall(r"\[(\d+\.\d+)\]: .*offset\s+(-?\d+)\s+s\d\s+freq\s+\S+\s+"
                       r"delay\s+(\d+)", out_text)
    if len(found) < 3:
        print(f"# phc2sys on {path} gave no samples:\n{out_text[-2000:]}", file=sys.stderr)
        return
    # phc2sys prints CLOCK_MONOTONIC (ms) and system - PHC; "delay" is its best window
    times = [round(float(t) * 1e9) for t, _, _ in found]
    out.devs += deviations(times, [-int(o) for _, o, _ in found])
    out.best += [float(d) for _, _, d in found]
    out.samples += len(found)


def phc_ctl(path: str, count: int) -> Row | None:
    exe = shutil.which("phc_ctl")
    if exe is None:
        return None
    times, offsets = [], []
    for _ in range(count):
        out = subprocess.run([exe, path, "cmp"], capture_output=True, text=True,
                             timeout=30).stdout
        match = re.search(r"\[(\d+\.\d+)\]: offset from CLOCK_REALTIME is (-?\d+)ns", out)
        if match:
            times.append(round(float(match.group(1)) * 1e9))
            offsets.append(-int(match.group(2)))
    series = Series(devs=deviations(times, offsets), samples=len(offsets))
    return series.row(path, "phc_ctl cmp (one process per sample)")


def measure_device(path: str, rate_hz: int, seconds: float, rounds: int) -> list[Row]:
    """Our paths and phc2sys in alternating blocks, so load changes hit both alike."""
    device, _ = open_phc(path)
    ours: dict[ReadMethod, dict[Estimator, Series]] = {}
    theirs = Series()
    block = seconds / rounds
    try:
        for method in PATHS:
            try:
                rps = readings_per_second(device, method, 1.0)
            except PhcError as exc:
                print(f"# {path} {method}: {exc}", file=sys.stderr)
                continue
            ours[method] = {e: Series(rps=rps) for e in Estimator}
        for k in range(rounds):
            if k % 2:
                phc2sys_block(path, rate_hz, block, theirs)
            for method, pooled in ours.items():
                ours_block(device, method, rate_hz, block, pooled)
            if not k % 2:
                phc2sys_block(path, rate_hz, block, theirs)
    finally:
        device.close()
    rows = [s.row(path, f"ntpd-py {m} {e}{' *' if e is default_estimator(m) else ''}")
            for m, by in ours.items() for e, s in by.items()]
    if theirs.samples:
        rows.append(theirs.row(path, "phc2sys (ntpshm, min delay)"))
    return rows


def fmt(value: float | None, scale: float = 1.0, spec: str = "9.0f") -> str:
    return format(value / scale, spec) if value is not None else " " * (int(spec[0]) - 1) + "-"


def print_table(rows: list[Row]) -> None:
    print(f"{'device':10} {'reader':40} {'reads/s':>9} {'win med':>9} {'win p99':>9} "
          f"{'best med':>9} {'best p99':>9} {'jit med':>9} {'jit p99':>9} {'n':>5}  (ns)")
    for r in rows:
        print(f"{r.device:10} {r.who:40} {fmt(r.readings_per_s)} {fmt(r.window_med_ns)} "
              f"{fmt(r.window_p99_ns)} {fmt(r.best_med_ns)} {fmt(r.best_p99_ns)} "
              f"{fmt(r.jitter_med_ns)} {fmt(r.jitter_p99_ns)} {r.samples:5d}")


def print_ratios(rows: list[Row]) -> None:
    print("* = the estimator ntpd-py uses for that read path (core.phc.default_estimator)")
    print("\njitter ratio ntpd-py / phc2sys (median, p99; <= 1 means at least as good). The e1000e"
          " PHC runs ~2.5x fast and phc2sys stamps its lines to 1 ms, so on it phc2sys's jitter"
          " is its timestamp resolution: compare on the igb PHC only.")
    for dev in sorted({r.device for r in rows}):
        ref = next((r for r in rows if r.device == dev and r.who.startswith("phc2sys")), None)
        if ref is None or ref.jitter_med_ns > 100_000:
            print(f"  {dev}: not comparable (phc2sys jitter is its 1 ms timestamp resolution)")
            continue
        for r in rows:
            if r.device == dev and r.who.startswith("ntpd-py extended"):
                print(f"  {dev} {r.who:40} {r.jitter_med_ns / max(ref.jitter_med_ns, 1):5.2f} "
                      f"{r.jitter_p99_ns / max(ref.jitter_p99_ns, 1):5.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="*", default=["/dev/ptp0", "/dev/ptp1"])
    parser.add_argument("--rate", type=int, default=16, help="polls per second (default 16)")
    parser.add_argument("--seconds", type=float, default=32.0,
                        help="per reader and device, split in --rounds blocks (default 32)")
    parser.add_argument("--rounds", type=int, default=8, help="alternating blocks (default 8)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    for module in ("igb", "e1000e"):
        subprocess.run(["modprobe", module], check=False, capture_output=True)
    rows: list[Row] = []
    for dev in args.devices:
        if not os.path.exists(dev):
            print(f"# {dev} missing, skipped", file=sys.stderr)
            continue
        rows += measure_device(dev, args.rate, args.seconds, args.rounds)
        extra = phc_ctl(dev, max(10, int(args.seconds * 2)))
        if extra is not None:
            rows.append(extra)
    print(f"# {READINGS} readings per sample, {args.rate} samples/s, {args.seconds:g} s per "
          f"reader in {args.rounds} alternating blocks; kernel {os.uname().release}")
    print_table(rows)
    print_ratios(rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([r.__dict__ for r in rows], out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
