"""The supervisor: the root parent of every ntpd-py process.

It validates the configuration, prepares the runtime and state directories,
opens what needs privilege (PHC devices, the NTP server sockets), forks
clock-control, one worker per source and the server worker, and then runs
one poll loop like OpenBSD ntpd's parent: it restarts children that die or
stop heartbeating (with backoff), passes devices on request, reloads on
SIGHUP and stops everything on SIGTERM. It is never on the sample path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from ntpd_py.core.config import PtpSourceConfig
from ntpd_py.core.controller_state import StepBounds
from ntpd_py.core.errors import ConfigError
from ntpd_py.core.exit_codes import EX_CANTCREAT, EX_SOFTWARE, EX_TEMPFAIL
from ntpd_py.core.fsm import IllegalTransition
from ntpd_py.core.token_bucket import TokenBucket
from ntpd_py.core.worker_spec import WorkerSpec, build_specs
from ntpd_py.ipc.link import LinkClosed
from ntpd_py.ipc.messages import (
    DeviceReply,
    DeviceRequest,
    Heartbeat,
    NtsKeyset,
    PeerFailed,
    ProcessTable,
    SteeringBounds,
)
from ntpd_py.plumbing.handover import Handover, give
from ntpd_py.plumbing.nts_handover import NtsHandover
from ntpd_py.plumbing.nts_handover import give as give_nts
from ntpd_py.plumbing.scheduler import drain
from ntpd_py.plumbing.seccomp import prepare as prepare_seccomp

from .children import Child, ChildEvent, ChildMessage, ChildState
from .config_file import shown_issues
from .logs import reopen_and_share_logs
from .notify import SystemdNotifier
from .nts_keys import NTS_ROLES
from .pidfile import remove_pidfile, write_pidfile
from .policy import HEARTBEAT_TIMEOUT_NS, STOP_GRACE_NS
from .pools import Pools
from .preload import preload_for_roles
from .reload import plan_reload
from .runtime_watch import RuntimeWatch
from .setup import DaemonSetup, StartupError
from .slots import SlotError, kill_uid
from .sources import source_set

__all__ = ["Supervisor"]

# The table (pid, user, RSS, CPU) goes to clock-control when a child starts or
# exits and otherwise every 10 s: polling /proc for every child more often than
# that was a visible part of the daemon's idle CPU (benchmarks/memory.py).
PROCESS_TABLE_INTERVAL_NS = 10_000_000_000
MAX_SLEEP_NS = 5_000_000_000
# A child's link: frames read per wake-up, and a token bucket (a heartbeat every 5 s, a
# device request or pool verdict now and then: generous bursts). A child over its bucket
# is not listened to for LINK_MUTE_NS (its frames wait in its socket, or are dropped).
LINK_FRAMES_PER_WAKE = 16
LINK_RATE_PER_S = 5.0
LINK_BURST = 50.0
LINK_MUTE_NS = 200_000_000


def _mono() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False
    reap: bool = False


class Supervisor:
    def __init__(self, setup: DaemonSetup, config_path: str, log: logging.Logger) -> None:
        self.setup = setup
        self.config = setup.config
        self.config_path = config_path
        self.log = log
        self.flags = _Flags()
        self.children: dict[str, Child] = {}
        self.exit_code = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._next_table = 0
        self.pools = Pools(self.config, self.setup.drop_for_helper, log)
        # The slot endpoints the running clock-control has (worker id -> slot serial).
        self._cc_slots: dict[str, int] = {}
        self.systemd = SystemdNotifier(log)
        # Per child (worker id): its link and that link's bucket; when muted until.
        self._link_buckets: dict[str, tuple[object, TokenBucket]] = {}
        self._link_muted_until: dict[str, int] = {}
        # Kept here (root) so that no restart and no file can reset them: see plumbing/handover.py.
        self.state_key = os.urandom(32)
        self.step_bounds: StepBounds | None = None
        self._clock_control_starts = 0
        self.watch = RuntimeWatch(setup.endpoints.runtime_dir, setup.endpoints.control_path)

    # -- signals ----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: object) -> None:
            self.flags.stop = True

        def on_hup(signum: int, frame: object) -> None:
            self.flags.reload = True

        def on_chld(signum: int, frame: object) -> None:
            self.flags.reap = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGCHLD, on_chld)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    # -- children ---------------------------------------------------------------------------

    def _start(self, spec: WorkerSpec, now: int) -> None:
        slots = self.setup.slots
        if spec.role != "clock-control" and slots is not None:
            slot = slots.ensure(spec.worker_id, spec.role)  # raises SlotError
            if slot.uid is not None:
                # Whatever still runs as this slot's uid (a compromised worker's
                # leftovers) must not meet the restarted worker on its endpoint.
                kill_uid(slot.uid, self.log)
        elif slots is not None:
            self._cc_slots = {s.worker_id: s.serial for s in slots.slots.values()
                              if s.fd is not None}  # inherited at fork
        child = self.children.get(spec.worker_id)
        if child is None:
            child = Child(spec, self.setup.user_name)
            self.children[spec.worker_id] = child
        child.spec = spec
        child.user = self.setup.worker_user(spec)
        # A reload may add a role (a metrics listener) whose modules are not loaded yet.
        preload_for_roles([spec.role], self.config.daemon.clock == "simulated")
        prepare_seccomp([spec.role], self.config.daemon.seccomp)  # cached after the first
        keep = self.setup.fds_for(spec)
        body = lambda link_fd: self.setup.run_child(spec, link_fd, keep)  # noqa: E731
        if spec.role == "clock-control":
            body = self._clock_control_body(spec, keep)
        elif spec.role in NTS_ROLES and self.setup.nts_keys is not None:
            body = self._nts_body(spec, keep)
        try:
            child.spawn(now, body, keep)
        except IllegalTransition as exc:  # a supervisor bug: nothing was forked
            self.log.error("internal error, %s not started: %s", spec.worker_id, exc)
            self._close_device_fds([spec.worker_id])
            return
        self._close_device_fds([spec.worker_id])
        self._fire(child, ChildEvent.STARTED)
        self.log.info("started %s (pid %d)", spec.worker_id, child.pid)
        self._next_table = min(self._next_table, now)
        if spec.role == "clock-control":
            self._send_source_set()

    def _clock_control_body(self, spec: WorkerSpec, keep: list[int]) -> Callable[[int], None]:
        """The forked clock-control's first act: take over the key and the step bounds."""
        handover = Handover(self.state_key, self.step_bounds, self._clock_control_starts == 0)
        self._clock_control_starts += 1

        def body(link_fd: int) -> None:
            give(handover)
            self.setup.run_child(spec, link_fd, keep)

        return body

    def _nts_body(self, spec: WorkerSpec, keep: list[int]) -> Callable[[int], None]:
        """A forked NTP-server or NTS-KE worker's first act: take the current keyset."""
        assert self.setup.nts_keys is not None
        chain, key = self.setup.ke_tls.get(spec.worker_id, (b"", b""))
        handover = NtsHandover(self.setup.nts_keys.current(), chain, key)

        def body(link_fd: int) -> None:
            give_nts(handover)
            self.setup.run_child(spec, link_fd, keep)

        return body

    def _rotate_nts_keys(self) -> None:
        """Rotate the cookie keys when due and send them to every server and NTS-KE worker
        (a worker that misses them, being restarted, takes them at its fork)."""
        keys = self.setup.nts_keys
        if keys is None or not keys.rotate_if_due():
            return
        message = NtsKeyset(keyset=keys.current())
        told = [c.spec.worker_id for c in self.children.values()
                if c.spec.role in NTS_ROLES and c.link is not None and c.link.send(message)]
        self.log.info("NTS cookie keys rotated (key id %d); sent to %s",
                      keys.keyset.primary.key_id, ", ".join(told) or "no running server")

    def _note_bounds(self, child: Child, message: SteeringBounds) -> None:
        if child.spec.role != "clock-control":
            return  # only clock-control steers; anyone else sending this is ignored
        reported = StepBounds(message.steps, message.accumulated_steps_s, message.startup_over)
        # They only grow: a lower report (a bug, a replayed state) cannot lower them.
        self.step_bounds = reported.stricter(self.step_bounds)

    def _close_device_fds(self, worker_ids: list[str]) -> None:
        """Drop our copy of PHC fds once a child has its own (or will never get it).

        A kept fd of a PHC whose driver is unloaded pins its /dev/ptpN index, so
        after `rmmod; modprobe` the device would come back under another name
        and its worker would wait forever. A restarted worker asks for a fresh
        fd over its link instead (DeviceRequest).
        """
        for worker_id in worker_ids:
            fd = self.setup.device_fds.pop(worker_id, None)
            if fd is not None:
                os.close(fd)

    def _send_source_set(self) -> None:
        cc = self.children.get("clock-control")
        if cc is None or cc.link is None:
            return
        base = source_set(self.config, [c.spec for c in self.children.values()])
        slots = self.setup.slots
        if slots is None:
            cc.link.send(base)
            return
        listed = slots.bus_slots()
        new = [s for s in slots.slots.values()
               if s.fd is not None and self._cc_slots.get(s.worker_id) != s.serial]
        # The endpoints clock-control does not have yet go along, a few per message.
        chunks = [new[i:i + 4] for i in range(0, len(new), 4)] or [[]]
        for chunk in chunks:
            message = base.model_copy(update={
                "slots": listed, "fd_slots": [s.worker_id for s in chunk]})
            if cc.link.send(message, [s.fd for s in chunk if s.fd is not None]):
                self._cc_slots.update((s.worker_id, s.serial) for s in chunk)

    def _reap(self, now: int) -> None:
        self.flags.reap = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children.values() if c.pid == pid), None)
            if child is None:
                continue
            how = child.exited(status)
            self._next_table = min(self._next_table, now)
            if child.state is ChildState.STOPPING or self.flags.stop:
                self._fire(child, ChildEvent.EXITED)
                self.log.info("%s stopped (%s)", child.spec.worker_id, how)
                continue
            if (
                child.spec.role == "clock-control"
                and os.WIFEXITED(status)
                and os.WEXITSTATUS(status) == EX_SOFTWARE
            ):
                self.log.error(
                    "clock-control refused to steer (panic threshold); stopping "
                    "ntpd-py: see its message above, fix the clock by hand, restart"
                )
                self.exit_code = EX_SOFTWARE
                self.flags.stop = True
                self._fire(child, ChildEvent.GAVE_UP)
                continue
            child.restart_at_ns = child.restart.on_exit(now)
            self._fire(child, ChildEvent.CRASHED)
            delay = (child.restart_at_ns - now) / 1e9
            self.log.warning(
                "lost %s (%s); restarting in %.1f s (restart #%d)",
                child.spec.worker_id,
                how,
                delay,
                child.restart.restarts,
            )

    def _serve_links(self, ready: set[int], now: int) -> None:
        """Read the children's links: a bounded number of frames per child and wake-up,
        within a token bucket per child (heartbeats come every 5 s). A child beyond its
        bucket has the frames read this time dropped and counted (heartbeats still
        noted: they only say it lives), and its link is not polled for a moment, so a
        flooding child costs the supervisor little and cannot crowd out the others."""
        for child in list(self.children.values()):
            link = child.link
            if link is None or link.fileno() not in ready:
                continue
            worker_id = child.spec.worker_id
            kept = self._link_buckets.get(worker_id)
            if kept is None or kept[0] is not link:  # a new link (a restart): a new bucket
                kept = self._link_buckets[worker_id] = (link, TokenBucket(LINK_RATE_PER_S,
                                                                          LINK_BURST))
            bucket = kept[1]
            try:
                frames = 0
                while frames < LINK_FRAMES_PER_WAKE:
                    before = link.malformed
                    item = link.recv()
                    # Malformed frames (skipped inside recv) cost tokens too.
                    skipped = link.malformed - before
                    frames += skipped + (item is not None)
                    if skipped and not all([bucket.take(now) for _ in range(skipped)]):
                        self._link_muted_until[worker_id] = now + LINK_MUTE_NS
                    if item is None:
                        if skipped:
                            continue
                        break
                    message, fds = item
                    for fd in fds:
                        os.close(fd)
                    if isinstance(message, Heartbeat):
                        child.last_heartbeat_ns = now
                    if not bucket.take(now):
                        link.dropped += 1
                        self._link_muted_until[worker_id] = now + LINK_MUTE_NS
                        continue
                    try:
                        self._link_message(child, message, now)
                    except Exception as exc:  # contain it: one frame, not the supervisor
                        self.log.error("%s: handling %s from its link raised %s: %s",
                                       child.spec.worker_id, type(message).__name__,
                                       type(exc).__name__, exc)
            except LinkClosed:
                child.link.close() if child.link else None
                child.link = None

    def _fire(self, child: Child, event: ChildEvent) -> None:
        """Move a child's state; an event its table does not allow is a supervisor bug,
        logged and contained (the state stays) so that it cannot stop the daemon."""
        try:
            child.fire(event)
        except IllegalTransition as exc:
            self.log.error("internal error, state kept: %s", exc)

    def _link_message(self, child: Child, message: object, now: int) -> None:
        # A child's link decodes only CHILD_ACCEPTS; anything else would be a bug here.
        if isinstance(message, ChildMessage):
            self._child_message(child, message, now)

    def _child_message(self, child: Child, message: ChildMessage, now: int) -> None:
        match message:
            case Heartbeat():
                self.systemd.heartbeat(child.spec.worker_id, message.status)
            case SteeringBounds():
                self._note_bounds(child, message)
            case DeviceRequest():
                self._open_device_for(child)
            case PeerFailed():
                if self.pools.peer_failed(message.worker_id, message.reason, now):
                    self._converge(now, "pool member replaced")
            case _:
                assert_never(message)

    def _link_polled(self, child: Child, now: int) -> bool:
        """Whether to wait on this child's link now (not while it is muted for flooding)."""
        if child.link is None:
            return False
        until = self._link_muted_until.get(child.spec.worker_id)
        if until is None:
            return True
        if now >= until:
            del self._link_muted_until[child.spec.worker_id]
            return True
        return False

    def _open_device_for(self, child: Child) -> None:
        source = child.spec.source
        if not isinstance(source, PtpSourceConfig) or child.link is None:
            return
        try:
            fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            child.link.send(
                DeviceReply(
                    ok=False, errno=exc.errno or 0, message=f"{source.path}: {exc.strerror}"
                )
            )
            return
        try:
            child.link.send(DeviceReply(ok=True, resolved=os.path.realpath(source.path)), [fd])
        finally:
            os.close(fd)

    def _check(self, now: int) -> None:
        self._rotate_nts_keys()
        for child in self.children.values():
            if (
                child.state is ChildState.BACKOFF
                and child.restart_at_ns is not None
                and now >= child.restart_at_ns
                and not self.flags.stop
            ):
                self._start(child.spec, now)
            elif (
                child.pid is not None
                and child.state is ChildState.RUNNING
                and now - child.last_heartbeat_ns > HEARTBEAT_TIMEOUT_NS
            ):
                self.log.warning(
                    "%s (pid %d) sent no heartbeat for %.0f s: killing it",
                    child.spec.worker_id,
                    child.pid,
                    (now - child.last_heartbeat_ns) / 1e9,
                )
                child.signal(signal.SIGKILL)
                child.last_heartbeat_ns = now
        if now >= self._next_table:
            cc = self.children.get("clock-control")
            if cc is not None and cc.link is not None:
                cc.link.send(
                    ProcessTable(
                        processes=[self.setup.self_info()]
                        + [c.info() for c in self.children.values()]
                    )
                )
            self._next_table = now + PROCESS_TABLE_INTERVAL_NS

    def _check_runtime(self, now: int) -> None:
        cc = self.children.get("clock-control")
        vanished = self.watch.check(now, cc.pid if cc is not None else None)
        if vanished is not None and not self.flags.stop:
            self.log.error("runtime: %s; workers can no longer reach clock-control: stopping "
                           "every process and exiting %d so that the service manager restarts "
                           "ntpd-py with a fresh runtime directory", vanished, EX_TEMPFAIL)
            self.exit_code = EX_TEMPFAIL
            self.flags.stop = True

    # -- reload and stop --------------------------------------------------------------------

    def _reload(self, now: int) -> None:
        self.flags.reload = False
        self.log.info("SIGHUP: re-reading %s", self.config_path)
        try:
            new_setup = self.setup.reloaded(self.config_path)
        except ConfigError as exc:
            for line in shown_issues(exc):
                self.log.error("reload rejected: %s", line)
            self.log.error("keeping the running configuration")
            return
        except StartupError as exc:
            self.log.error("reload rejected: %s; keeping the running configuration", exc)
            return
        except Exception as exc:  # whatever the file holds, SIGHUP never ends the daemon
            self.log.error("reload rejected: %s: %s; keeping the running configuration",
                           type(exc).__name__, str(exc)[:300])
            return
        self.setup = new_setup
        if [s.model_dump() for s in new_setup.config.source] != \
                [s.model_dump() for s in self.config.source]:
            old_pools = self.pools
            self.pools = Pools(new_setup.config, new_setup.drop_for_helper, self.log)
            for index, pool in self.pools.pools.items():
                kept = old_pools.pools.get(index)
                if kept is not None and kept.source == pool.source:
                    self.pools.pools[index] = kept  # same pool: keep its members
                else:
                    self.pools.start_one(index, now)
        self.config = new_setup.config
        for warning in new_setup.config.warnings():  # as at start (supervisor/daemon.py)
            self.log.warning("%s: %s", self.config_path, warning)
        self._converge(now, "reload done")

    def _converge(self, now: int, why: str) -> None:
        """Start and stop children until they match the configuration and pool members."""
        specs = self.setup.with_tls_fingerprints(build_specs(self.config, self.pools.members()))
        plan = plan_reload([c.spec for c in self.children.values()], specs)
        self.setup.specs = specs
        for worker_id in plan.stop:
            child = self.children[worker_id]
            self._stop_one(child)
            if worker_id not in {s.worker_id for s in plan.start}:
                del self.children[worker_id]
                if self.setup.slots is not None:
                    self.setup.slots.release(worker_id)  # its uid and endpoint are free
                self._cc_slots.pop(worker_id, None)
        for spec in plan.start:
            try:
                self._start(spec, now)
            except SlotError as exc:
                self.log.error("cannot start %s: %s", spec.worker_id, exc)
        self._close_device_fds(list(self.setup.device_fds))  # opened for kept workers
        self._send_source_set()
        self.log.info("%s: %d stopped, %d started, %d unchanged", why, len(plan.stop),
                      len(plan.start), len(plan.keep))

    def _stop_one(self, child: Child) -> None:
        if child.pid is None:
            self._fire(child, ChildEvent.STOP)
            return
        self._fire(child, ChildEvent.STOP)
        child.signal(signal.SIGTERM)
        deadline = _mono() + STOP_GRACE_NS
        while child.pid is not None and _mono() < deadline:
            time.sleep(0.02)
            self._reap(_mono())
        if child.pid is not None:
            self.log.warning("%s did not stop within 5 s: killing it", child.spec.worker_id)
            child.signal(signal.SIGKILL)
            os.waitpid(child.pid, 0)
            child.exited(0)
            self._fire(child, ChildEvent.EXITED)

    def _stop_all(self) -> None:
        live = [c for c in self.children.values() if c.pid is not None]
        for child in live:
            self._fire(child, ChildEvent.STOP)
            child.signal(signal.SIGTERM)
        deadline = _mono() + STOP_GRACE_NS
        while any(c.pid is not None for c in live) and _mono() < deadline:
            time.sleep(0.02)
            self._reap(_mono())
        for child in live:
            if child.pid is not None:
                self.log.warning("%s did not stop within 5 s: killing it", child.spec.worker_id)
                child.signal(signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, 0)
                child.exited(signal.SIGKILL)
                self._fire(child, ChildEvent.EXITED)

    # -- the loop ---------------------------------------------------------------------------

    def _timeout_ms(self, now: int) -> int:
        """Sleep until a restart, a heartbeat expiry, a process-table push or a systemd
        notification is due (signals and messages wake us earlier)."""
        deadlines = [self._next_table, now + MAX_SLEEP_NS, self.watch.next_check_ns]
        for extra in (self.pools.next_deadline_ns(), self.systemd.next_deadline_ns()):
            if extra is not None:
                deadlines.append(extra)
        deadlines += [t for t in self._link_muted_until.values() if t > now]
        for c in self.children.values():
            if c.state is ChildState.BACKOFF and c.restart_at_ns is not None:
                deadlines.append(c.restart_at_ns)
            elif c.pid is not None and c.state is ChildState.RUNNING:
                deadlines.append(c.last_heartbeat_ns + HEARTBEAT_TIMEOUT_NS + 1)
        return max(0, (min(deadlines) - now + 999_999) // 1_000_000)

    def run(self) -> int:
        self._install_signals()
        write_pidfile(self.config.daemon.runtime_dir, self.log)  # ntpctl: alive, not answering
        now = _mono()
        try:
            if self.setup.slots is not None:
                # Every endpoint exists before clock-control starts, which inherits them.
                for spec in self.setup.specs:
                    if spec.role != "clock-control":
                        self.setup.slots.ensure(spec.worker_id, spec.role)
            for spec in self.setup.specs:
                self._start(spec, now)
        except SlotError as exc:
            self.log.error("%s", exc)
            self._stop_all()
            self.setup.cleanup()
            return EX_CANTCREAT
        self._send_source_set()
        self.pools.start(now)
        self.watch.arm(now, (self.setup.endpoints.state,))
        poller = select.poll()
        try:
            while not self.flags.stop:
                poller = select.poll()
                poller.register(self._wake_r, select.POLLIN)
                for child in self.children.values():
                    if child.link is not None and self._link_polled(child, _mono()):
                        poller.register(child.link.fileno(), select.POLLIN)
                for fd in self.pools.fds():
                    poller.register(fd, select.POLLIN)
                try:
                    events = poller.poll(self._timeout_ms(_mono()))
                except InterruptedError:
                    events = []
                now = _mono()
                ready = {fd for fd, _ in events}
                if self._wake_r in ready:
                    drain(self._wake_r)
                self._reap(now)
                self._serve_links(ready, now)
                if self.pools.step(ready, now):
                    self._converge(now, "pool members changed")
                if self.flags.reload:
                    self.systemd.reloading()
                    self._reload(now)
                    reopen_and_share_logs(
                        self.config.observability, self.children.values(), self.log
                    )
                    self.systemd.reloaded()
                self._check(now)
                self._check_runtime(now)
                self.systemd.tick(now, self.children)
        finally:
            self.systemd.stopping()
            self.log.info("stopping all processes")
            self._stop_all()
            self.setup.cleanup()
            remove_pidfile(self.config.daemon.runtime_dir)
        return self.exit_code
