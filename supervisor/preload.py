"""Import, in the supervisor, everything any child will need — before any fork.

Two reasons. After dropping privileges a child may not be able to read the
Python installation at all (an interpreter under /root, a 0700 virtualenv),
so a lazy import in a worker would fail at run time. And modules imported
before fork are shared copy-on-write by every child, which keeps the whole
process tree small (see benchmarks/memory.py).
"""

from __future__ import annotations

import importlib

__all__ = ["preload_worker_modules"]

MODULES = (
    "encodings.idna",  # getaddrinfo of a non-ASCII name, in the NTP worker
    "zmq",
    "msgpack",
    "psutil",
    "ntpd_py.ipc.endpoints",
    "ntpd_py.ipc.framing",
    "ntpd_py.ipc.link",
    "ntpd_py.workers.child",
    "ntpd_py.workers.roles",
    "ntpd_py.workers.runtime",
    "ntpd_py.workers.base",
    "ntpd_py.workers.logutil",
    "ntpd_py.workers.simclock",
    "ntpd_py.workers.clock_backends",
    "ntpd_py.workers.clock_control",
    "ntpd_py.workers.clock_control_setup",
    "ntpd_py.workers.state_store",
    "ntpd_py.workers.status_view",
    "ntpd_py.workers.bus_guard",
    "ntpd_py.workers.ntp",
    "ntpd_py.workers.server",
    "ntpd_py.workers.ptp",
    "ntpd_py.workers.sim_phc",
    "ntpd_py.workers.sim_world",
    "ntpd_py.core.sim.rng",
    "http.server",  # the metrics worker's HTTP server and its exporter library
    "prometheus_client",
    "prometheus_client.exposition",
    "prometheus_client.openmetrics.exposition",
    "ntpd_py.workers.metrics",
    "ntpd_py.workers.metrics_http",
    "ntpd_py.workers.metrics_render",
    "ntpd_py.core.controller",
    "ntpd_py.core.drift",
    "ntpd_py.supervisor.privileges",
)


def preload_worker_modules() -> None:
    for name in MODULES:
        importlib.import_module(name)
