"""Everything the supervisor prepares before forking: checks, directories, devices, sockets.

The privileged part of the daemon lives here: as root it resolves the
unprivileged identity, checks that CAP_SYS_TIME is available when the system
clock is to be steered, creates the runtime and state directories for that
identity, opens the PHC devices read-only and binds the NTP server sockets,
so that the children never need a privilege to get them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ntpd_py.core.config import Config, PpsSourceConfig, PtpSourceConfig, SockSourceConfig
from ntpd_py.core.exit_codes import EX_CANTCREAT, EX_CONFIG, EX_NOPERM
from ntpd_py.core.worker_spec import WorkerSpec, build_specs
from ntpd_py.ipc.endpoints import Endpoints
from ntpd_py.ipc.messages import ProcessInfo
from ntpd_py.plumbing.privileges import (
    CAP_SYS_TIME,
    Identity,
    PrivilegeError,
    bounding_has,
    effective_caps,
    lookup_identity,
)

from .config_file import load_config_file
from .dirs import DirectoryError, ensure_dir, is_shared_sticky
from .metrics_listen import metrics_listener
from .slots import SlotError, SlotTable, make_bus_dir

if TYPE_CHECKING:
    from .nts_keys import KeysetOwner

__all__ = ["DaemonSetup", "StartupError", "prepare"]

# The server sockets' receive buffer. The kernel default (about 208 KiB) lost 23 % of a
# burst from 2000 client ports; 4 MiB holds about 45 000 requests (skb overhead included).
SERVER_RCVBUF = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux: beyond rmem_max, as root
RESOLVER_SLOT = "(pool resolver)"  # the slot whose uid the pool resolver helper runs as


def grow_receive_buffer(sock: socket.socket, size: int = SERVER_RCVBUF) -> int:
    """Ask for a ``size``-byte receive buffer; returns what the kernel granted (its doubled
    figure, as getsockopt reports it). SO_RCVBUFFORCE needs CAP_NET_ADMIN (the supervisor
    as root); without it SO_RCVBUF is capped at net.core.rmem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _bind_udp(listen: str, host: str, port: int, reuseport: bool,
              log: logging.Logger | None = None) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    granted = grow_receive_buffer(sock)
    if log is not None:
        # the kernel reports twice what it was asked for (half is bookkeeping)
        level = logging.INFO if granted >= SERVER_RCVBUF else logging.WARNING
        log.log(level, '[[server]] listen = "%s": receive buffer %d KiB (asked for %d KiB%s)',
                listen, granted // 1024, SERVER_RCVBUF // 1024,
                "" if granted >= SERVER_RCVBUF else "; raise net.core.rmem_max")
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
    from ntpd_py.plumbing.clock_guard import system_clock_refusal

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


def _make_dir(path: str, identity: Identity | None, mode: int,
              key: str = "[daemon] runtime-dir", allow_shared: bool = False,
              value: str | None = None) -> bool:
    """Create `path` owned by `identity` (None: this process) with `mode`, or check it.

    Never chowns or chmods an existing directory (supervisor/dirs.py says why);
    an unsafe one stops the start-up with exit 73 naming `key`. True if created.
    """
    owner = (os.geteuid(), os.getegid()) if identity is None else (identity.uid, identity.gid)
    try:
        return ensure_dir(path, key, owner, mode, allow_shared, value)
    except DirectoryError as exc:
        raise StartupError(str(exc), EX_CANTCREAT) from None


def _warn_if_not_writable(path: str, key: str, identity: Identity, log: logging.Logger) -> None:
    # Safe but perhaps unusable (say root-owned 0755): said here, because the
    # failure would otherwise surface later as a child's bind or save error.
    st = os.stat(path)
    if st.st_uid == identity.uid or (st.st_gid == identity.gid and st.st_mode & 0o020):
        return
    log.warning('%s = "%s" exists and belongs to uid %d: the workers\' user %s cannot '
                "create files in it (ntpd-py does not change directories it did not "
                "create; chown it to %s or remove it)", key, path, st.st_uid, identity.user,
                identity.user)


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
    slots: SlotTable | None = None  # the workers' uids and bus endpoints (supervisor.slots)
    # Feeders' sockets (mode = "sock"), by worker id: kept for the daemon's life, so a
    # restarted worker gets the same socket and the feeder never sees it vanish.
    sock_fds: dict[str, int] = field(default_factory=dict)
    # PPS devices (mode = "pps"), by worker id: kept like the feeder sockets, as the
    # capture edge was set on them with a privilege the supervisor may not keep.
    pps_fds: dict[str, int] = field(default_factory=dict)
    # The NTS cookie keyset (supervisor/nts_keys.py) when a server or NTS-KE server runs.
    nts_keys: KeysetOwner | None = None
    # Each [[nts-ke-server]]'s TCP listener and its certificate chain and private key (PEM,
    # read here as root: its worker's uid cannot read them), by worker id.
    ke_fds: dict[str, int] = field(default_factory=dict)
    ke_tls: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    def open_ke_servers(self) -> None:
        """Bind every NTS-KE listener and read its TLS files; a reload keeps those still
        configured and closes the others. Errors name the key and stop a start (or are
        refused by a reload)."""
        from ntpd_py.plumbing.tcp_listen import bind_listener

        from .config_file import read_nts_ke_files

        wanted = {spec.worker_id: spec.nts_ke for spec in self.specs if spec.role == "nts-ke"}
        for worker_id in [w for w in self.ke_fds if w not in wanted]:
            os.close(self.ke_fds.pop(worker_id))
            self.ke_tls.pop(worker_id, None)
        for index, (worker_id, ke) in enumerate(wanted.items()):
            assert ke is not None
            try:
                tls = read_nts_ke_files(index, ke)
            except ValueError as exc:
                raise StartupError(str(exc), EX_CONFIG) from None
            self.ke_tls[worker_id] = tls
            if worker_id in self.ke_fds:
                continue
            try:
                self.ke_fds[worker_id] = bind_listener(ke.listen).detach()
            except OSError as exc:
                raise StartupError(f'[[nts-ke-server]] listen = "{ke.listen}": cannot listen: '
                                   f"{exc.strerror or exc}", EX_CANTCREAT) from None

    def with_tls_fingerprints(self, specs: list[WorkerSpec]) -> list[WorkerSpec]:
        """The specs with each NTS-KE worker's fingerprint covering the certificate and key
        it was handed: a renewed certificate (new files, then SIGHUP) restarts the worker
        with them, an unchanged one leaves it running."""
        import dataclasses
        import hashlib

        out = []
        for spec in specs:
            tls = self.ke_tls.get(spec.worker_id) if spec.role == "nts-ke" else None
            if tls is not None:
                digest = hashlib.sha256(tls[0] + b"\0" + tls[1]).hexdigest()[:16]
                spec = dataclasses.replace(spec, fingerprint=f"{spec.fingerprint}:{digest}")
            out.append(spec)
        return out

    def close_ke_servers(self) -> None:
        for fd in self.ke_fds.values():
            os.close(fd)
        self.ke_fds = {}

    def open_nts_keys(self) -> None:
        from .nts_keys import KeysetOwner, needs_keyset

        if self.nts_keys is None and needs_keyset(self.config):
            self.nts_keys = KeysetOwner(self.config.keyset, self.log)

    def drop_for_helper(self) -> None:
        """In a short-lived helper child (the pool resolver): shed every privilege and
        become the resolver slot's uid (it parses DNS answers: untrusted input)."""
        from ntpd_py.plumbing.privileges import drop_privileges, set_parent_death_signal

        slot = self.slots.slots.get(RESOLVER_SLOT) if self.slots is not None else None
        identity = slot.identity() if slot is not None else None
        if identity is not None:
            drop_privileges(identity, None)
        elif self.identity is not None:
            drop_privileges(self.identity, None)
        set_parent_death_signal()
        from ntpd_py.plumbing.seccomp import install

        install("resolver", self.config.daemon.seccomp)  # DNS answers are network input

    def worker_user(self, spec: WorkerSpec) -> str:
        """Who the spec's process runs as, for `ntpctl workers` (a uid without a name)."""
        if spec.role == "clock-control" or self.slots is None:
            return self.user_name
        slot = self.slots.slots.get(spec.worker_id)
        return (slot.user() if slot is not None else "") or self.user_name

    def fds_for(self, spec: WorkerSpec) -> list[int]:
        if spec.role == "clock-control":
            # Every slot's listening socket: clock-control serves them (identity by channel).
            if self.slots is None:
                return []
            return [s.fd for s in self.slots.slots.values() if s.fd is not None]
        if spec.role == "metrics":
            return [] if self.metrics_fd is None else [self.metrics_fd]
        if spec.role == "ptp" and spec.worker_id in self.device_fds:
            return [self.device_fds[spec.worker_id]]
        if spec.role == "sock" and spec.worker_id in self.sock_fds:
            return [self.sock_fds[spec.worker_id]]
        if spec.role == "pps" and spec.worker_id in self.pps_fds:
            return [self.pps_fds[spec.worker_id]]
        if spec.role == "server" and spec.server_index < len(self.server_fds):
            return list(self.server_fds[spec.server_index])
        if spec.role == "nts-ke" and spec.worker_id in self.ke_fds:
            return [self.ke_fds[spec.worker_id]]
        return []

    def run_child(self, spec: WorkerSpec, link_fd: int, keep: list[int]) -> None:
        """In the forked child: set it up as the registry declares its role, run its main."""
        from ntpd_py.plumbing.child import ChildContext, run_child
        from ntpd_py.workers.registry import ROLES, role_main

        role = ROLES[spec.role]
        identity = self.identity
        bus_path = ""
        bus_slots = []
        if spec.role == "clock-control":
            # clock-control keeps the configured user: it owns the runtime dir and its state.
            if self.slots is not None:
                bus_slots = [(b, s.fd) for s in self.slots.slots.values()
                             if s.fd is not None and (b := s.bus_slot()) is not None]
        elif self.slots is not None:
            slot = self.slots.slots[spec.worker_id]
            bus_path = slot.path or ""
            if identity is not None:
                # The metrics worker is an observer: it asks clock-control over the control
                # socket, as ntpctl does, which is open to the daemon's group only.
                extra = identity.gid if role.bus == "control" else None
                identity = slot.identity(extra)
        ctx = ChildContext(
            config=self.config,
            worker_id=spec.worker_id,
            role=spec.role,
            supervisor_pid=os.getppid(),
            link_fd=link_fd,
            spec=spec,
            seccomp_profile=role.seccomp_profile,
            keep_fds=keep,
            identity=identity,
            keep_cap=role.keep_cap(self.config),
            bus_path=bus_path,
            bus_slots=bus_slots,
        )
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

    def open_sock_sockets(self) -> None:
        """Create the Unix datagram socket of every sock source (a feeder writes to it).

        Made here, as root, so the worker never binds: mode 0660 and the daemon's group
        (a feeder such as gpsd runs as root, or is put in that group); 0660 under the
        supervisor's own group when not root. Sockets of sources no longer configured
        are closed and removed.
        """
        from ntpd_py.plumbing.feeder_socket import create_sock_socket

        wanted = {spec.worker_id: spec.source for spec in self.specs
                  if isinstance(spec.source, SockSourceConfig)}
        for worker_id in [w for w in self.sock_fds if w not in wanted]:
            os.close(self.sock_fds.pop(worker_id))
            path = worker_id.removeprefix("sock:")
            with contextlib.suppress(OSError):
                os.unlink(path)
        gid = self.identity.gid if self.identity is not None else None
        for worker_id, source in wanted.items():
            if worker_id in self.sock_fds:
                continue
            assert source is not None
            try:
                sock = create_sock_socket(source.path, mode=0o660, gid=gid)
            except OSError as exc:
                raise StartupError(f'[[source]] mode = "sock", path = "{source.path}": cannot '
                                   f"create the socket: {exc.strerror or exc}",
                                   EX_CANTCREAT) from None
            self.sock_fds[worker_id] = sock.detach()
            self.log.info("%s: socket created for the feeder (mode 0660)", source.path)

    def open_pps_devices(self) -> None:
        """Open every pps source's device and set its capture edge when we can.

        PPS_SETPARAMS needs CAP_SYS_TIME: without it (a test run under capsh, a unit
        without the capability) the device is handed over as it is, and the worker's
        status says why the edge is not captured. A device that cannot be opened is
        logged; its worker is not started (it has nothing to read).
        """
        from ntpd_py.plumbing.pps_capture import set_pps_capture

        wanted = {spec.worker_id: spec.source for spec in self.specs
                  if isinstance(spec.source, PpsSourceConfig)}
        for worker_id in [w for w in self.pps_fds if w not in wanted]:
            os.close(self.pps_fds.pop(worker_id))
        for worker_id, source in wanted.items():
            if worker_id in self.pps_fds:
                continue
            assert isinstance(source, PpsSourceConfig)
            try:
                fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                self.log.warning("%s: %s; its pps worker cannot start", source.path,
                                 exc.strerror)
                continue
            try:
                set_pps_capture(fd, source.edge)
            except OSError as exc:
                why = ("PPS_SETPARAMS needs CAP_SYS_TIME" if exc.errno == errno.EPERM
                       else exc.strerror)
                self.log.warning("%s: cannot set the %s edge to be captured: %s", source.path,
                                 source.edge, why)
            self.pps_fds[worker_id] = fd

    def close_pps_devices(self) -> None:
        for fd in self.pps_fds.values():
            os.close(fd)
        self.pps_fds = {}

    def close_sock_sockets(self) -> None:
        for worker_id, fd in list(self.sock_fds.items()):
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(worker_id.removeprefix("sock:"))
        self.sock_fds = {}

    def bind_servers(self) -> None:
        """Bind every [[server]] address once per server process (SO_REUSEPORT if several)."""
        count = self.config.daemon.server_processes
        for _ in range(count):
            fds = []
            for server in self.config.server:
                try:
                    fds.append(_bind_udp(server.listen, *server.socket_addr(), count > 1,
                                         self.log))
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
                          [] if servers_changed else self.server_fds, self.started_at,
                          slots=self.slots, sock_fds=self.sock_fds, pps_fds=self.pps_fds,
                          nts_keys=self.nts_keys, ke_fds=self.ke_fds, ke_tls=dict(self.ke_tls))
        if servers_changed:
            new.bind_servers()  # raises StartupError and keeps the old ones on failure
            self.close_servers()
        new.open_devices()
        new.open_sock_sockets()  # raises StartupError if a new one cannot be made
        new.open_pps_devices()
        new.open_nts_keys()
        new.open_ke_servers()  # raises StartupError: the reload is refused
        listen = config.observability.metrics_exporter_listen
        new.metrics_fd = metrics_listener(self.metrics_fd, listen, self.log)
        return new

    def cleanup(self) -> None:
        if self.slots is not None:
            self.slots.close()
        self.close_sock_sockets()
        self.close_pps_devices()
        self.close_ke_servers()
        for path in (self.endpoints.state, self.endpoints.control_path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _load_world(path: str, log: logging.Logger) -> None:
    from ntpd_py.core.errors import ConfigError
    from ntpd_py.core.sim.scenario import load_scenario_text
    from ntpd_py.plumbing import sim_world
    from ntpd_py.supervisor.config_file import read_regular_file

    key = f'[daemon.simulation] scenario = "{path}"'
    try:
        # The same reader as the configuration: a FIFO or device never blocks the start.
        text = read_regular_file(path).decode("utf-8")
    except ConfigError as exc:
        raise StartupError(f"{key}: {exc.issues[0].message}", 78) from None
    except UnicodeDecodeError:
        raise StartupError(f"{key}: not valid UTF-8", 78) from None
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
        first, last = config.daemon.worker_uid_range
        log.info(
            "running as root: clock-control runs as %s:%s%s; every other worker runs as a "
            "uid of its own from [%d, %d], without capabilities",
            identity.user,
            identity.group,
            " with only CAP_SYS_TIME" if config.daemon.clock == "system" else "",
            first, last,
        )
    else:
        import pwd

        user_name = pwd.getpwuid(os.geteuid()).pw_name
        log.info("%s: everything runs as %s (no privilege or credential separation: "
                 "workers share one uid)",
                 "single-process mode" if single_process else "not running as root", user_name)
    endpoints = Endpoints(config.daemon.runtime_dir, config.control_socket_path())
    for problem in endpoints.problems():
        raise StartupError(problem, 78)
    # 0751 under root: workers (each its own uid, in no group) traverse the runtime
    # directory to reach their bus endpoint and the simulated clock file, but cannot
    # list it or write in it.
    for key, path, mode in (
        ("[daemon] runtime-dir", config.daemon.runtime_dir,
         0o751 if identity is not None else 0o750),
        ("[daemon] state-dir", config.daemon.state_dir, 0o750),
    ):
        if not _make_dir(path, identity, mode, key) and identity is not None:
            _warn_if_not_writable(path, key, identity, log)
            if mode & 0o001 and not os.stat(path).st_mode & 0o001:
                raise StartupError(
                    f'{key} = "{path}": this existing directory has mode '
                    f"{os.stat(path).st_mode & 0o7777:04o}; the workers (each its own uid, "
                    "in no group) must be able to pass through it to reach their bus "
                    "endpoint: make it 0751 (deploy/tmpfiles.d/ntpd-py.conf does) or remove "
                    "it and let ntpd-py create it", EX_CANTCREAT)
    control_dir = os.path.dirname(config.control_socket_path())
    if control_dir != config.daemon.runtime_dir:
        # A shared sticky parent (/tmp) is used as is and never changed.
        # 0751 under root, as the runtime directory: the supervisor (no CAP_DAC_* in the
        # unit's bounding set) must pass through to watch the socket clock-control binds.
        key = "[observability] observation-path"
        created = _make_dir(control_dir, identity, 0o751 if identity is not None else 0o750,
                            key, allow_shared=True, value=config.control_socket_path())
        st = os.stat(control_dir)
        if (not created and identity is not None and st.st_uid != os.geteuid()
                and not st.st_mode & 0o001 and not is_shared_sticky(st)):
            raise StartupError(
                f'{key} = "{config.control_socket_path()}": its existing directory '
                f"{control_dir} has mode {st.st_mode & 0o7777:04o}; the supervisor must be "
                "able to pass through it to watch the socket: make it 0751 "
                "(deploy/tmpfiles.d/ntpd-py.conf does for /run/ntpd-rs) or remove it and "
                "let ntpd-py create it", EX_CANTCREAT)
    setup = DaemonSetup(config, build_specs(config), identity, user_name, log, endpoints)
    if not single_process:
        try:
            make_bus_dir(endpoints.bus_dir, identity is not None)
        except SlotError as exc:
            raise StartupError(str(exc), EX_CANTCREAT) from None
        uid_range = config.daemon.worker_uid_range if identity is not None else None
        setup.slots = SlotTable(endpoints, uid_range, log)
        if identity is not None:  # a pool may come with a reload: reserve it now
            try:
                setup.slots.ensure(RESOLVER_SLOT, "resolver")
            except SlotError as exc:
                raise StartupError(str(exc), EX_CANTCREAT) from None
    if not single_process:
        from .preload import preload_for_roles

        preload_for_roles((s.role for s in setup.specs), config.daemon.clock == "simulated")
        from ntpd_py.plumbing.seccomp import prepare

        # Compiled once here and inherited: a child only loads its program (memory).
        prepare(sorted({s.role for s in setup.specs} | {"resolver"}), config.daemon.seccomp)
    if config.daemon.clock == "simulated":
        from ntpd_py.plumbing.simclock import SimClock

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
    setup.open_sock_sockets()
    setup.open_pps_devices()
    setup.open_nts_keys()
    setup.open_ke_servers()
    setup.specs = setup.with_tls_fingerprints(setup.specs)
    setup.bind_servers()
    setup.metrics_fd = metrics_listener(None, config.observability.metrics_exporter_listen, log)
    return setup
