"""Import, in the supervisor, everything any child will need — before any fork.

Two reasons. After dropping privileges a child may not be able to read the
Python installation at all (an interpreter under /root, a 0700 virtualenv),
so a lazy import in a worker would fail at run time. And modules imported
before fork are shared copy-on-write by every child, which keeps the whole
process tree small (see benchmarks/memory.py). Only what the configured roles
need, though: the metrics exporter's HTTP stack (which drags in ssl and
libcrypto) costs about 3 MB and is loaded only when a metrics worker will run;
a reload that adds one loads it then, before that fork.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

__all__ = ["preload_for_roles"]

MODULES = (
    "encodings.idna",  # getaddrinfo of a non-ASCII name, in the NTP worker
    "zmq",
    "msgpack",
    "psutil",
    "ntpd_py.ipc.endpoints",
    "ntpd_py.ipc.framing",
    "ntpd_py.ipc.link",
    "ntpd_py.plumbing.child",
    "ntpd_py.plumbing.clocks",
    "ntpd_py.plumbing.signals",
    "ntpd_py.workers.registry",
    "ntpd_py.plumbing.scheduler",
    "ntpd_py.plumbing.seccomp",  # and pyseccomp/ctypes.util: each child installs its filter
    "ntpd_py.workers.base",
    "ntpd_py.plumbing.logutil",
    "ntpd_py.plumbing.simclock",
    "ntpd_py.workers.clock_backends",
    "ntpd_py.workers.clock_control",
    "ntpd_py.workers.clock_control_setup",
    "ntpd_py.workers.state_store",
    "ntpd_py.workers.status_view",
    "ntpd_py.workers.bus_guard",
    "ntpd_py.workers.ntp",
    "ntpd_py.workers.server",
    "ntpd_py.workers.ptp",
    "ntpd_py.core.controller",
    "ntpd_py.core.drift",
    "ntpd_py.plumbing.privileges",
)
SIMULATED_MODULES = (
    "ntpd_py.workers.sim_phc",
    "ntpd_py.plumbing.sim_world",
    "ntpd_py.core.sim.rng",
)
ROLE_MODULES = {
    "sock": ("ntpd_py.workers.sock", "ntpd_py.workers.refclock_io", "ntpd_py.core.sock_source"),
    "pps": ("ntpd_py.workers.pps", "ntpd_py.workers.refclock_io", "ntpd_py.core.pps_source"),
    "nts-ke": ("ntpd_py.workers.nts_ke", "ntpd_py.workers.nts_ke_server", "OpenSSL.SSL"),
    "metrics": (
        "http.server",  # the metrics worker's HTTP server and its exporter library
        "prometheus_client",
        "prometheus_client.exposition",
        "prometheus_client.openmetrics.exposition",
        "ntpd_py.workers.metrics",
        "ntpd_py.workers.metrics_http",
        "ntpd_py.workers.metrics_render",
    ),
}


def preload_for_roles(roles: Iterable[str], simulated: bool) -> None:
    """Import what children of these roles need (cheap when already imported)."""
    names = [*MODULES, *(SIMULATED_MODULES if simulated else ())]
    for role in sorted(set(roles)):
        names += ROLE_MODULES.get(role, ())
    for name in names:
        importlib.import_module(name)
