"""In the QEMU guest only: what an ADJ_FREQUENCY change does to CLOCK_REALTIME's phase.

    python -m tests.vm run -- .venv/bin/python -m tests.vm.freq_glitch [--seconds 40]

Measures the guest clock against the igb PHC (the e2e's truth reader: narrowest
of 25 EXTENDED readings) twice a second while the kernel frequency is held, or
changed once a second by random amounts of a few sizes. The phase the
frequencies should have produced is taken out; what is left is the kernel's own
error in carrying the changes out. Prints, per pattern, the leftover phase's sd,
the sd of its half-second steps and their lag-1 autocorrelation (-0.5: white
noise; near 0: persistent steps), and the first 60 values.

It steers the guest's clock (its own, never the host's: the guest is a TCG VM)
and puts it back to nominal at the end. Written for issue #18: a daemon that
changes the frequency every second pays each change's error, so the e2e's
figures carry it for both daemons (docs/phc-reading-models.md).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable

from .guest_tools import ADJ_FREQUENCY, KernelClock, _Timex
from .phc_truth import PhcReader

PHC = "/dev/ptp0"
READS_PER_S = 2


def _measure(clock: KernelClock, reader: PhcReader, seconds: int,
             pattern: Callable[[int], float], refresh_s: float = 0.0) -> list[float]:
    """Leftover phase (ns) after the commanded frequencies' own effect. ``refresh_s``:
    also write the same frequency again this often (each ADJ_FREQUENCY makes the
    kernel bring its timekeeping up to date, as a tick would)."""
    def err() -> int:
        got = reader.read()
        if isinstance(got, str):
            raise RuntimeError(f"{PHC}: {got}")
        real, phc, _ = got
        return real - phc

    def set_freq(ppm: float) -> None:
        clock._adj(_Timex(modes=ADJ_FREQUENCY, freq=round(ppm * 65536)))

    set_freq(0.0)
    time.sleep(0.5)
    errors: list[int] = []
    freqs: list[float] = []
    for second in range(seconds):
        freq = pattern(second)
        set_freq(freq)
        for _ in range(READS_PER_S):
            if refresh_s > 0.0:
                end = time.monotonic() + 1.0 / READS_PER_S
                while (left_s := end - time.monotonic()) > 0:
                    time.sleep(min(refresh_s, left_s))
                    set_freq(freq)
            else:
                time.sleep(1.0 / READS_PER_S)
            errors.append(err())
            freqs.append(freq)
    expected = [0.0]
    for freq in freqs[:-1]:  # ppm over 1/READS_PER_S s, in ns
        expected.append(expected[-1] + freq * 1e3 / READS_PER_S)
    left = [e - x for e, x in zip(errors, expected, strict=True)]
    mean = statistics.fmean(left)
    return [v - mean for v in left]


def _report(name: str, left: list[float]) -> str:
    steps = [b - a for a, b in itertools.pairwise(left)]
    var = statistics.pvariance(steps)
    lag1 = (sum(a * b for a, b in itertools.pairwise(steps)) / len(steps) / var) if var else 0.0
    return (f"{name}: leftover phase sd {statistics.pstdev(left):.1f} ns, step sd "
            f"{statistics.pstdev(steps):.1f} ns, lag-1 autocorrelation of steps {lag1:+.2f}\n"
            f"  first values: {' '.join(f'{v:.0f}' for v in left[:60])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    clock, reader = KernelClock(), PhcReader(PHC)
    clock.reset()
    patterns: list[tuple[str, Callable[[int], float], float]] = [
        ("held at 0", lambda _: 0.0, 0.0),
        ("random ±1 ppb every second", lambda _: rng.uniform(-0.001, 0.001), 0.0),
        ("random ±5 ppb every second", lambda _: rng.uniform(-0.005, 0.005), 0.0),
        ("random ±30 ppb every second", lambda _: rng.uniform(-0.03, 0.03), 0.0),
        # the NOHZ question: is the error the time the kernel runs on one multiplier
        # between updates? Then updates every 50 ms should shrink it.
        ("random ±5 ppb every second, rewritten every 50 ms",
         lambda _: rng.uniform(-0.005, 0.005), 0.05),
        ("held at 0, rewritten every 50 ms", lambda _: 0.0, 0.05),
    ]
    try:
        for name, pattern, refresh in patterns:
            print(_report(name, _measure(clock, reader, args.seconds, pattern, refresh)),
                  flush=True)
    finally:
        clock.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
