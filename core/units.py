"""Unit constants shared by the whole package: one definition of each time unit.

Absolute instants are integer nanoseconds everywhere (see DESIGN.md), so these are the
factors between nanoseconds and the coarser units, plus the fixed points of the NTP
timescale.  Every module imports them from here instead of spelling the literal again, so a
reader never has to check that two `1_000_000_000`s under different names are the same.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "NS_PER_MS",
    "NS_PER_S",
    "NS_PER_US",
    "NTP64_ONE_SECOND",
    "NTP_UNIX_OFFSET_S",
    "PPM",
]

NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000
NS_PER_US: Final = 1_000
PPM: Final = 1e-6  # one part per million, as a dimensionless frequency offset
NTP_UNIX_OFFSET_S: Final = 2_208_988_800  # 1900-01-01 (NTP era 0) to 1970-01-01, seconds
NTP64_ONE_SECOND: Final = 1 << 32  # one second in the 32.32 fixed-point NTP timestamp
