"""A deterministic, seeded simulated world for the clock algorithm (sans-IO).

Models (each evaluable at any true time from the seed alone, so separate
processes can share one world): :mod:`.clock` (the local clock), :mod:`.phc`
(PTP hardware clocks), :mod:`.ntp` (NTP servers). :mod:`.scenario` reads a
scenario file's text; :mod:`.runner` runs the real :class:`ClockController`
against the world, faster than real time; :mod:`.metrics` summarizes a run.
"""

__all__: list[str] = []
