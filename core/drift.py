"""The drift file's text: the frequency correction and its uncertainty, for a quick restart.

Format (UTF-8, one data line; lines starting with ``#`` are comments)::

    # ntpd-py drift file: frequency correction (ppm, positive = local clock sped up)
    # and its 1-sigma uncertainty (ppm)
    +12.345678 0.004321

Parsing is strict: a truncated, garbled or absurd file (not two finite
numbers, a frequency beyond ±500 ppm, an uncertainty not in (0, 500] ppm) is
a :class:`DriftFileError`, which the caller reports and then ignores. Writing
the file (temp file, fsync, rename) is the worker's job; this module only
makes and reads the text.
"""

from __future__ import annotations

import math

from .errors import CoreError

__all__ = ["MAX_DRIFT_FILE_BYTES", "DriftFileError", "encode_drift", "parse_drift"]

MAX_DRIFT_FILE_BYTES = 4096
MAX_FREQ_PPM = 500.0
_HEADER = (
    "# ntpd-py drift file: frequency correction (ppm, positive = local clock sped up)\n"
    "# and its 1-sigma uncertainty (ppm)\n"
)


class DriftFileError(CoreError):
    """The drift file cannot be used (the message says why)."""


def _check(freq_ppm: float, unc_ppm: float) -> None:
    if not (math.isfinite(freq_ppm) and math.isfinite(unc_ppm)):
        raise DriftFileError("frequency and uncertainty must be finite numbers")
    if abs(freq_ppm) > MAX_FREQ_PPM:
        raise DriftFileError(f"frequency {freq_ppm:+.6f} ppm is beyond ±{MAX_FREQ_PPM:g} ppm")
    if not 0.0 < unc_ppm <= MAX_FREQ_PPM:
        raise DriftFileError(f"uncertainty {unc_ppm:g} ppm is not in (0, {MAX_FREQ_PPM:g}] ppm")


def encode_drift(freq: float, uncertainty: float) -> str:
    """The file text for a frequency and its uncertainty, both in s/s."""
    freq_ppm, unc_ppm = freq * 1e6, max(uncertainty * 1e6, 1e-6)
    _check(freq_ppm, unc_ppm)
    return f"{_HEADER}{freq_ppm:+.6f} {unc_ppm:.6f}\n"


def parse_drift(text: str) -> tuple[float, float]:
    """(frequency, uncertainty) in s/s from a drift file's text; DriftFileError if unusable."""
    if len(text) > MAX_DRIFT_FILE_BYTES:
        raise DriftFileError(f"larger than {MAX_DRIFT_FILE_BYTES} bytes; not a drift file")
    lines = [line.strip() for line in text.splitlines()]
    data = [line for line in lines if line and not line.startswith("#")]
    if len(data) != 1:
        raise DriftFileError(
            f"expected one line '<frequency ppm> <uncertainty ppm>', found {len(data)}"
        )
    fields = data[0].split()
    if len(fields) != 2:
        raise DriftFileError(f"expected two numbers on the data line, found {len(fields)}")
    try:
        freq_ppm, unc_ppm = float(fields[0]), float(fields[1])
    except ValueError:
        raise DriftFileError(f"not numbers: {data[0][:60]!r}") from None
    _check(freq_ppm, unc_ppm)
    return freq_ppm * 1e-6, unc_ppm * 1e-6
