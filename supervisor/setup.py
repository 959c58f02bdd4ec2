"""Everything the supervisor prepares before forking: checks, directories, devices, sockets.

The privileged part of the daemon lives here: as root it resolves the
unprivileged identity, checks that CAP_SYS_TIME is available when the system
clock is to be steered, creates the runtime and state directories for that
identity, opens the PHC devices read-only and binds the NTP server sockets,
so that the children never need a privilege to get them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from ntpd_py.core.config import Config, PtpSourceConfig
from ntpd_py.ipc.endpoints import Endpoints
from ntpd_py.ipc.messages import ProcessInfo

from .config_file import load_config_file
from .metrics_listen import metrics_listener
from .privileges import (
    CAP_SYS_TIME,
    Identity,
    PrivilegeError,
    bounding_has,
    effective_caps,
    lookup_identity,
)
from .spec import WorkerSpec, build_specs

__all__ = ["DaemonSetup", "StartupError", "prepare"]

EX_NOPERM = 77
EX_CANTCREAT = 73


def _bind_udp(listen: str, host: str, port: int, reuseport: bool) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f'[[server]] listen = "{listen}": cannot bind: {exc.strerror}',
                           EX_CANTCREAT) from None
    return sock.detach()


class StartupError(Exception):
    def __init__(self, message: str, code: int = EX_NOPERM) -> None:
        super().__init__(message)
        self.code = code


def _check_system_clock(config: Config) -> None:
    if config.daemon.clock != "system":
        return
    from ntpd_py.workers.clock_backends import system_clock_refusal

    refusal = system_clock_refusal()
    if refusal:
        raise StartupError(f'refusing clock = "system": {refusal}')
    if not bounding_has(CAP_SYS_TIME):
        raise StartupError(
            'clock = "system" needs CAP_SYS_TIME, which has been removed from this '
            "process's capability bounding set (capsh --drop, a container, or systemd's "
            "CapabilityBoundingSet): grant it, or run with --clock observe to compute "
            "without steering"
        )
    if not effective_caps() & (1 << CAP_SYS_TIME):
        raise StartupError(
            'clock = "system" needs CAP_SYS_TIME: run ntpd-py as root (it keeps only '
            "CAP_SYS_TIME in clock-control), or use --clock observe"
        )


def _make_dir(path: str, identity: Identity | None, mode: int) -> None:
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        # A directory that is already right is left alone: under systemd, tmpfiles.d
        # made it, and the supervisor needs neither CAP_CHOWN nor CAP_FOWNER.
        st = os.stat(path)
        if identity is not None and (st.st_uid, st.st_gid) != (identity.uid, identity.gid):
            os.chown(path, identity.uid, identity.gid)
        if st.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise StartupError(
            f"cannot create {path}: {exc.strerror}; set [daemon] runtime-dir / "
            "state-dir to a directory you may write",
            EX_CANTCREAT,
        ) from None


@dataclass
class DaemonSetup:
    config: Config
    specs: list[WorkerSpec]
    identity: Identity | None
    user_name: str
    log: logging.Logger
    endpoints: Endpoints
    device_fds: dict[str, int] = field(default_factory=dict)
    server_fds: list[list[int]] = field(default_factory=list)  # one list per server process
    started_at: float = field(default_factory=time.time)
    metrics_fd: int | None = None

    def drop_for_helper(self) -> None:
        """In a short-lived helper child (the pool resolver): shed every privilege."""
        from .privileges import drop_privileges, set_parent_death_signal

        if self.identity is not None:
            drop_privileges(self.identity, None)
        set_parent_death_signal()
        from ntpd_py.workers.seccomp import install

        install("resolver", self.config.daemon.seccomp)  # DNS answers are network input

    def fds_for(self, spec: WorkerSpec) -> list[int]:
        if spec.role == "metrics":
            return [] if self.metrics_fd is None else [self.metrics_fd]
        if spec.role == "ptp" and spec.worker_id in self.device_fds:
            return [self.device_fds[spec.worker_id]]
        if spec.role == "server" and spec.server_index < len(self.server_fds):
            return list(self.server_fds[spec.server_index])
        return []

    def run_child(self, spec: WorkerSpec, link_fd: int, keep: list[int]) -> None:
        from ntpd_py.workers.child import ChildContext, run_child
        from ntpd_py.workers.roles import role_main

        keep_cap = None
        if spec.role == "clock-control" and self.config.daemon.clock == "system":
            keep_cap = CAP_SYS_TIME
        ctx = ChildContext(
            self.config,
            spec.worker_id,
            spec.role,
            os.getppid(),
            link_fd,
            keep,
            self.identity,
            keep_cap,
        )
        ctx.spec = spec  # type: ignore[attr-defined]
        run_child(ctx, role_main(spec.role))

    def self_info(self) -> ProcessInfo:
        import psutil

        proc = psutil.Process()
        return ProcessInfo(
            worker_id="supervisor",
            role="supervisor",
            pid=os.getpid(),
            user=proc.username(),
            state="running",
            uptime_s=time.time() - self.started_at,
            restarts=0,
            rss_bytes=proc.memory_info().rss,
            cpu_percent=None,
            cpu_seconds=sum(proc.cpu_times()[:2]),
        )

    def open_devices(self) -> None:
        if self.config.daemon.clock == "simulated":
            return
        for spec in self.specs:
            if isinstance(spec.source, PtpSourceConfig) and spec.worker_id not in self.device_fds:
                try:
                    fd = os.open(spec.source.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    self.log.warning(
                        "%s: %s; its worker will wait for it", spec.source.path, exc.strerror
                    )
                    continue
                self.device_fds[spec.worker_id] = fd

    def bind_servers(self) -> None:
        """Bind every [[server]] address once per server process (SO_REUSEPORT if several)."""
        count = self.config.daemon.server_processes
        for _ in range(count):
            fds = []
            for server in self.config.server:
                try:
                    fds.append(_bind_udp(server.listen, *server.socket_addr(), count > 1))
                except StartupError:
                    self.close_servers()
                    for fd in fds:
                        os.close(fd)
                    raise
            self.server_fds.append(fds)

    def close_servers(self) -> None:
        for fds in self.server_fds:
            for fd in fds:
                os.close(fd)
        self.server_fds = []

    def reloaded(self, config_path: str) -> DaemonSetup:
        config = load_config_file(config_path)
        config = config.model_copy(update={"daemon": self.config.daemon})
        servers_changed = (
            [s.model_dump() for s in config.server] != [s.model_dump() for s in self.config.server]
            or config.daemon.server_processes != self.config.daemon.server_processes
        )
        new = DaemonSetup(config, build_specs(config), self.identity, self.user_name, self.log,
                          self.endpoints, dict(self.device_fds),
                          [] if servers_changed else self.server_fds, self.started_at)
        if servers_changed:
            new.bind_servers()  # raises StartupError and keeps the old ones on failure
            self.close_servers()
        new.open_devices()
        listen = config.observability.metrics_exporter_listen
        new.metrics_fd = metrics_listener(self.metrics_fd, listen, self.log)
        return new

    def cleanup(self) -> None:
        for path in (self.endpoints.bus, self.endpoints.state, self.endpoints.control_path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _load_world(path: str, log: logging.Logger) -> None:
    from ntpd_py.core.errors import ConfigError
    from ntpd_py.core.sim.scenario import load_scenario_text
    from ntpd_py.workers import sim_world

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1 << 22)
    except OSError as exc:
        raise StartupError(f"[daemon.simulation] scenario = \"{path}\": {exc.strerror}",
                           78) from None
    try:
        scenario = load_scenario_text(text, path)
    except ConfigError as exc:
        raise StartupError("\n".join(i.render() for i in exc.issues), 78) from None
    sim_world.CURRENT = sim_world.world_from_scenario(scenario)
    log.info("simulated world: scenario %s (seed %d)", scenario.scenario.name,
             scenario.scenario.seed)


def prepare(config_path: str, clock: str | None, log: logging.Logger,
            single_process: bool = False) -> DaemonSetup:
    """Load and check everything; raise ConfigError or StartupError."""
    config = load_config_file(config_path)
    if clock is not None:
        config = config.model_copy(
            update={"daemon": config.daemon.model_copy(update={"clock": clock})}
        )
    _check_system_clock(config)
    identity: Identity | None = None
    if os.geteuid() == 0 and not single_process:
        try:
            identity = lookup_identity(config.daemon.user, config.daemon.group)
        except PrivilegeError as exc:
            raise StartupError(str(exc)) from None
        user_name = identity.user
        log.info(
            "running as root: workers run as %s:%s without capabilities%s",
            identity.user,
            identity.group,
            "; clock-control keeps CAP_SYS_TIME" if config.daemon.clock == "system" else "",
        )
    else:
        import pwd

        user_name = pwd.getpwuid(os.geteuid()).pw_name
        log.info("%s: everything runs as %s (no privilege separation)",
                 "single-process mode" if single_process else "not running as root", user_name)
    endpoints = Endpoints(config.daemon.runtime_dir, config.control_socket_path())
    for problem in endpoints.problems():
        raise StartupError(problem, 78)
    _make_dir(config.daemon.runtime_dir, identity, 0o750)
    _make_dir(config.daemon.state_dir, identity, 0o750)
    control_dir = os.path.dirname(config.control_socket_path())
    if control_dir != config.daemon.runtime_dir:
        _make_dir(control_dir, identity, 0o750)
    setup = DaemonSetup(config, build_specs(config), identity, user_name, log, endpoints)
    if not single_process:
        from .preload import preload_for_roles

        preload_for_roles((s.role for s in setup.specs), config.daemon.clock == "simulated")
    if config.daemon.clock == "simulated":
        from ntpd_py.workers.simclock import SimClock

        sim = config.daemon.simulation
        path = os.path.join(config.daemon.runtime_dir, "sim-clock")
        if sim.scenario is not None:
            _load_world(sim.scenario, log)
            SimClock.create(path, 0.0, 0.0)  # the scenario's local clock model takes over
        else:
            SimClock.create(path, sim.initial_offset, sim.initial_frequency_ppm * 1e-6)
        if identity is not None:
            os.chown(path, identity.uid, identity.gid)
    setup.open_devices()
    setup.bind_servers()
    setup.metrics_fd = metrics_listener(None, config.observability.metrics_exporter_listen, log)
    return setup
