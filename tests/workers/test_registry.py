"""The role registry: every role declared once, and the task builders both modes use."""

from __future__ import annotations

import socket
import typing
from pathlib import Path

import pytest
from ntpd_py.core.config import Config
from ntpd_py.core.config_load import load_config_text
from ntpd_py.core.worker_spec import Role as RoleName
from ntpd_py.core.worker_spec import WorkerSpec, build_specs
from ntpd_py.ipc.messages import SourceStatus
from ntpd_py.plumbing.seccomp_profiles import ROLES as PROFILES
from ntpd_py.workers.ntp import NtpTask
from ntpd_py.workers.ptp import PtpTask
from ntpd_py.workers.registry import (
    CAP_SYS_TIME,
    ROLES,
    Wiring,
    build_task,
    clock_control_main,
    role_main,
    worker_main,
)
from ntpd_py.workers.server import ServerTask

from tests.doubles import FakeChannel, FakeClock, FakeLink, LogCapture, channel_pair


def _config(text: str, tmp_path: Path, clock: str = "observe") -> Config:
    return load_config_text(f'[daemon]\nclock = "{clock}"\nruntime-dir = "{tmp_path}"\n' + text)


def _spec(config: Config, role: str) -> WorkerSpec:
    return next(s for s in build_specs(config, {0: ["127.0.0.1"]}) if s.role == role)


def _wiring(config: Config, spec: WorkerSpec, fds: list[int] | None = None
            ) -> tuple[Wiring, FakeChannel]:
    """The wiring a mode would give the role, and the worker's end of the bus."""
    bus, _clock_control = channel_pair()
    wiring = Wiring(config=config, spec=spec, log=LogCapture(spec.worker_id).logger,
                    clock=FakeClock(), bus=bus, link=FakeLink(), fds=fds or [])
    return wiring, bus


def test_every_role_of_a_spec_is_declared_with_a_filter_profile() -> None:
    assert set(ROLES) == set(typing.get_args(RoleName))
    for name, role in ROLES.items():
        assert role.name == name
        assert role.seccomp_profile in PROFILES, name
        assert role.in_single_process or role.why_not_single, name


def test_only_clock_control_keeps_a_capability_and_only_to_steer_the_system_clock(
        tmp_path: Path) -> None:
    system = _config("", tmp_path, clock="system")
    observe = _config("", tmp_path)
    assert ROLES["clock-control"].keep_cap(system) == CAP_SYS_TIME
    assert ROLES["clock-control"].keep_cap(observe) is None
    assert all(role.keep_cap(system) is None for name, role in ROLES.items()
               if name != "clock-control")


def test_each_child_runs_its_roles_main() -> None:
    assert role_main("clock-control") is clock_control_main
    assert {role_main(name) for name in ROLES if name != "clock-control"} == {worker_main}
    with pytest.raises(ValueError, match="unknown role"):
        role_main("ntp-pool")


def test_the_hub_is_not_built_as_a_worker(tmp_path: Path) -> None:
    config = _config("", tmp_path)
    wiring, _ = _wiring(config, _spec(config, "clock-control"))
    with pytest.raises(ValueError, match="hub"):
        build_task(ROLES["clock-control"], wiring)


def test_a_ptp_task_is_built_for_its_configured_device_and_says_what_it_waits_for(
        tmp_path: Path) -> None:
    missing = tmp_path / "ptp9"
    config = _config(f'[[source]]\nmode = "ptp"\npath = "{missing}"\n', tmp_path)
    spec = _spec(config, "ptp")
    wiring, bus = _wiring(config, spec)
    task = build_task(ROLES["ptp"], wiring)
    assert isinstance(task, PtpTask)
    assert task.worker_id == spec.worker_id == f"ptp:{missing}"
    assert wiring.bus in task.pollables()
    clock = wiring.clock
    assert isinstance(clock, FakeClock)
    for _ in range(3):  # time passed in; no device needed to build and step it
        task.step(clock.now())
        clock.advance(1_000_000_000)
    statuses = [m for m in bus.sent_messages() if isinstance(m, SourceStatus)]
    assert statuses and statuses[-1].source_id == spec.worker_id
    # Not "running" with samples it cannot have: it says what it is waiting for.
    assert statuses[-1].state == "starting" and str(missing) in (statuses[-1].detail or "")
    assert statuses[-1].counters.get("samples", 0) == 0
    task.close()


def test_an_ntp_task_talks_to_the_pool_member_its_spec_names(tmp_path: Path) -> None:
    config = _config('[[source]]\nmode = "pool"\naddress = "pool.example"\ncount = 1\n',
                     tmp_path)
    spec = _spec(config, "ntp")
    assert spec.peer == "127.0.0.1"
    wiring, _ = _wiring(config, spec)
    task = build_task(ROLES["ntp"], wiring)
    assert isinstance(task, NtpTask)
    assert task.worker_id == spec.worker_id
    assert task.host == "127.0.0.1"
    assert task.sim is None  # only a simulated clock gives the task a simulated network
    task.close()


def test_a_server_task_gets_one_socket_per_listen_address_in_order(tmp_path: Path) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
        config = _config("".join(f'[[server]]\nlisten = "127.0.0.1:{p}"\n' for p in ports),
                         tmp_path)
        spec = _spec(config, "server")
        fds = [s.detach() for s in socks]
        wiring, _ = _wiring(config, spec, fds)
        task = build_task(ROLES["server"], wiring)
        assert isinstance(task, ServerTask)
        # The task owns the descriptors now (they close with it).
        assert [server.listen for server, _, _ in task.serving] == [
            f"127.0.0.1:{p}" for p in ports]
        assert [io.fd for _, _, io in task.serving] == fds
        # A spec and its descriptors that do not match is a wiring bug: it raises.
        short, _ = _wiring(config, spec, [])
        with pytest.raises(ValueError):
            build_task(ROLES["server"], short)
    finally:
        for sock in socks:
            if sock.fileno() != -1:
                sock.close()
