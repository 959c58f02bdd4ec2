"""A pool name that keeps not resolving is logged once, then once a minute with a count."""

from __future__ import annotations

import logging
import os

import pytest
from ntpd_py.core.config_load import load_config_text
from ntpd_py.supervisor.pools import Pools, _Resolver

NS = 1_000_000_000


def test_repeated_resolve_failures_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config_text('[[source]]\nmode = "pool"\naddress = "p.example"\ncount = 2\n')
    log = logging.getLogger("test-pools")
    pools = Pools(config, lambda: None, log)
    (pool,) = pools.pools.values()
    with caplog.at_level(logging.INFO, logger="test-pools"):
        for i in range(30):  # 30 failed resolutions, 1 s apart (an empty answer each)
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            os.close(write_fd)
            # _read, not step(): step would run the retry timer and fork a real resolver
            pools._read(pool, _Resolver(pid=0, fd=read_fd, deadline_ns=10**18), i * NS)
            pools.limited.flush(i * NS)
        first = [r.getMessage() for r in caplog.records]
        pools.limited.flush(61 * NS)  # the window has passed: the last one, with the count
        later = [r.getMessage() for r in caplog.records][len(first):]
    assert first == ["pool p.example: could not resolve; retrying later"]
    assert later == ["pool p.example: could not resolve; retrying later "
                     "(last of 29 since last report)"]
