"""The guard that keeps the system clock backend off a host where it must never run.

The test suite sets FORBID_ENV on the machine it runs on; the supervisor refuses
to start with the system backend, and the backend itself refuses to be built.
"""

from __future__ import annotations

import os

__all__ = ["FORBID_ENV", "SystemClockForbidden", "system_clock_refusal"]

# Set by the test suite on a host: the system backend must be unreachable there.
FORBID_ENV = "NTPD_PY_FORBID_SYSTEM_CLOCK"


class SystemClockForbidden(RuntimeError):
    """The system backend was asked for where it must never run (tests on a host)."""


def system_clock_refusal() -> str | None:
    """Why the system backend must not be used here, or None if it may."""
    if os.environ.get(FORBID_ENV):
        return (
            f"{FORBID_ENV} is set (the test suite on a host): the system clock "
            "backend may only run inside the QEMU guest"
        )
    return None
