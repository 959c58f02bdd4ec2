"""The discrete-event runner: the real ClockController against a simulated world.

Events (PHC reads, NTP requests and answers, sample delivery, the
controller's timer, metric ticks) are processed in true-time order. Each
controller call gets CLOCK_MONOTONIC/CLOCK_REALTIME of the simulated clock at
that instant, and the actions it returns are carried out on the simulated
clock at once, in order, as clock-control does with a real backend.

Client behaviour modelled for NTP sources: the first ``iburst`` requests go
2 s apart, then one per poll interval as advised by the controller
(AdvisePoll) within the source's limits; a KoD RATE lengthens the poll, a KoD
DENY stops polling; after three unanswered requests in a row the source is
reported unreachable. An exchange during which the clock was stepped is
discarded (a real client sees it by comparing its two clocks).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..actions import AdvisePoll, ClockAction, Panic, SetFrequency, Step
from ..controller import ClockController
from ..events import Sample
from ..phc import PhcReadingRejected, Reading, ReadMethod
from ..phc_estimate import Estimator, WindowSlope, build_sample, default_estimator, estimate
from ..pps_abi import PPS_CANWAIT, PPS_CAPTUREBOTH, PpsFetch
from ..pps_source import PpsSource, whole_seconds_from
from ..refclock_events import PpsDeviceChecked, PulseFetched
from ..refclock_sock import encode_sock_sample
from ..sock_source import SockSource
from ..source_actions import Publish
from ..units import NS_PER_S
from . import rng
from .metrics import Summary, Trace, summarize
from .ntp import Exchange, KissOfDeath, ntp_sample
from .phc import phc_sample
from .scenario import Scenario
from .world import PhcSource, PpsFeed, ServerSource, SimSourceModel, SockFeed, World, build_world

__all__ = ["Progress", "SimResult", "Simulation"]

IBURST_SPACING_NS = 2 * NS_PER_S
# the read path a simulated PHC model stands for ("white": the old one-figure model, whose
# windows are EXTENDED-like triplets)
_METHODS = {"white": ReadMethod.EXTENDED, "extended": ReadMethod.EXTENDED,
            "basic": ReadMethod.BASIC, "precise": ReadMethod.PRECISE}
UNREACHABLE_AFTER = 3


@dataclass(frozen=True, slots=True)
class Progress:
    t_s: float
    offset_s: float
    freq_correction: float
    synchronized: bool
    states: str  # e.g. "*/dev/ptp0 x192.0.2.5"


@dataclass(slots=True)
class SimResult:
    summary: Summary
    trace: Trace
    panic_message: str | None
    panic_exit_code: int | None
    messages: list[str]


@dataclass(slots=True)
class _Client:
    """Per-source client state (poll, request counter, reachability)."""

    source: SimSourceModel
    poll_log2: int = 0
    requests: int = 0
    burst_left: int = 0
    unanswered: int = 0
    awaiting: bool = False
    denied: bool = False
    slope: WindowSlope | None = None  # a PHC's window-offset relation, as the worker keeps it
    # the worker's own state machine of a sock or PPS source (core/sock_source.py, pps_source.py)
    refclock: SockSource | PpsSource | None = None


class Simulation:
    """One run of a scenario (use once)."""

    def __init__(
        self, scenario: Scenario, *, seed: int | None = None, duration_s: float | None = None
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.scenario.seed if seed is None else seed
        self.duration_s = scenario.scenario.duration if duration_s is None else duration_s
        self.world: World = build_world(scenario, self.seed)
        self.clock = self.world.clock
        self.controller = ClockController(
            scenario.synchronization,
            now_mono_ns=self.clock.mono_ns(0),
            now_real_ns=self.clock.realtime_ns(0),
        )
        self.trace = Trace()
        self.steps: list[tuple[float, float]] = []
        self.messages: list[str] = []
        self.falseticker_selected_s = 0.0
        self._last_metric: tuple[int, float] | None = None  # (t, error without steps)
        self.panic: Panic | None = None
        self._queue: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self._timer_generation = 0
        self.clients: dict[str, _Client] = {}
        for src in self.world.sources:
            self._add(src)

    # -- setup ---------------------------------------------------------------------

    def _push(self, t_ns: int, kind: str, data: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t_ns, self._seq, kind, data))

    def _add(self, src: SimSourceModel) -> None:
        phase = int(rng.uniform(self.seed, src.source_id, "phase", 0) * NS_PER_S)
        if isinstance(src, SockFeed):
            self.controller.add_source(src.source_id, src.kind, poll_log2=0)
            sock = SockSource(src.config, src.source_id)
            sock.start(self.clock.mono_ns(0))
            client = _Client(src, refclock=sock)
            self._push(int(src.config.sim.interval * NS_PER_S), "sock", client)
        elif isinstance(src, PpsFeed):
            period_ns = round(src.config.period * NS_PER_S)
            poll = round(math.log2(src.config.period))
            self.controller.add_source(src.source_id, src.kind, poll_log2=poll)
            pps = PpsSource(src.config, src.source_id)
            pps.start(self.clock.mono_ns(0))
            pps.handle_event(PpsDeviceChecked(PPS_CAPTUREBOTH | PPS_CANWAIT), self.clock.mono_ns(0))
            client = _Client(src, poll_log2=poll, refclock=pps)
            self._push(period_ns, "pps", client)
        elif isinstance(src, PhcSource):
            poll = src.config.interval
            self.controller.add_source(src.source_id, src.kind, poll_log2=poll)
            client = _Client(src, poll_log2=poll)
            self._push(min(phase, int(2.0**poll * NS_PER_S)), "phc", client)
        else:
            self.controller.add_source(
                src.source_id, src.kind, poll_log2=src.poll_log2, poll_limits=src.poll_limits
            )
            client = _Client(src, poll_log2=src.poll_log2, burst_left=src.iburst)
            self._push(phase, "send", client)
        self.clients[src.source_id] = client

    def schedule_external_step(self, at_s: float, step_s: float) -> None:
        """Someone else steps CLOCK_REALTIME at ``at_s`` (tests of meddling detection)."""
        self._push(int(at_s * NS_PER_S), "external-step", round(step_s * NS_PER_S))

    # -- running ---------------------------------------------------------------------

    def run(
        self, progress: Callable[[Progress], None] | None = None, progress_every_s: float = 60.0
    ) -> SimResult:
        interval_ns = int(self.scenario.scenario.metric_interval * NS_PER_S)
        end_ns = int(self.duration_s * NS_PER_S)
        self._push(0, "metric")
        if progress is not None:
            every_ns = int(progress_every_s * NS_PER_S)
            self._push(every_ns, "progress", every_ns)
        handlers: dict[str, Callable[[int, Any], None]] = {
            "phc": self._on_phc,
            "send": self._on_send,
            "answer": self._on_answer,
            "deliver": self._on_deliver,
            "timer": self._on_timer,
            "external-step": self._on_external_step,
            "sock": self._on_sock,
            "sock-datagram": self._on_sock_datagram,
            "pps": self._on_pps,
        }
        while self._queue and self.panic is None:
            t, _, kind, data = heapq.heappop(self._queue)
            if t > end_ns:
                break
            if kind == "metric":
                self._record(t, interval_ns)
                self._push(t + interval_ns, "metric")
            elif kind == "progress":
                assert progress is not None
                progress(self._progress(t))
                self._push(t + data, "progress", data)
            else:
                handlers[kind](t, data)
        return self._result()

    def _call(self, t: int, actions: list[ClockAction]) -> None:
        for action in actions:
            if isinstance(action, SetFrequency):
                self.clock.set_frequency(t, action.freq)
            elif isinstance(action, Step):
                self.clock.step(action.offset_ns)
                self.steps.append((t / NS_PER_S, action.offset_ns / NS_PER_S))
            elif isinstance(action, AdvisePoll):
                client = self.clients.get(action.source_id)
                if client is not None and isinstance(client.source, ServerSource):
                    low, high = client.source.poll_limits
                    client.poll_log2 = min(max(action.poll_log2, low), high)
            elif isinstance(action, Panic):
                self.panic = action
                break
        self.messages.extend(f"{t / NS_PER_S:10.3f}s {m}" for m in self.controller.take_messages())
        self._timer_generation += 1
        due = self.controller.next_timer_mono_ns()
        if due is not None:
            self._push(self.clock.true_time_at_mono(due, t), "timer", self._timer_generation)

    def _now(self, t: int) -> dict[str, int]:
        return {"now_mono_ns": self.clock.mono_ns(t), "now_real_ns": self.clock.realtime_ns(t)}

    def _on_timer(self, t: int, generation: Any) -> None:
        if generation == self._timer_generation:
            self._call(t, self.controller.handle_timer(**self._now(t)))

    def _on_external_step(self, t: int, step_ns: Any) -> None:
        self.clock.step(step_ns)

    def _on_deliver(self, t: int, sample: Any) -> None:
        self._call(t, self.controller.handle_sample(sample, **self._now(t)))

    def _on_phc(self, t: int, client: Any) -> None:
        src: PhcSource = client.source
        self._push(t + int(2.0**client.poll_log2 * NS_PER_S), "phc", client)
        readings = src.model.read(t, client.requests, self.clock, 2.0**client.poll_log2)
        client.requests += 1
        if readings is None:
            return  # a failed read produces no sample (the worker counts it)
        cfg = src.config
        if cfg.sim.method != "white" or cfg.sim.estimator != "default":
            self._phc_estimate(t, client, readings)
            return
        try:
            sample = phc_sample(
                src.source_id,
                readings,
                precision_s=cfg.precision,
                mono_minus_real_ns=self.clock.mono_epoch_ns
                - self.clock.real_epoch_ns
                - self.clock.steps_ns,
                root_delay_s=cfg.delay,
                stratum=cfg.stratum,
                reference_id=src.reference_id,
                poll_log2=cfg.interval,
            )
        except ValueError:
            return  # a rejected poll (system time went backwards), as the worker drops it
        self._push(t + int(src.latency_s * NS_PER_S) + 1, "deliver", sample)

    def _phc_estimate(self, t: int, client: _Client, raw: list[tuple[int, int, int]]) -> None:
        """A reading-level poll through the worker's own estimator (core/phc_estimate.py)."""
        src = client.source
        assert isinstance(src, PhcSource)
        cfg = src.config
        method = _METHODS[cfg.sim.method]
        name = cfg.sim.estimator
        chosen = default_estimator(method) if name == "default" else Estimator(name)
        if client.slope is None:
            client.slope = WindowSlope()
        readings = [Reading(*r) for r in raw]
        try:
            est = estimate(readings, chosen, client.slope)
        except PhcReadingRejected:
            return  # a rejected poll (system time went backwards), as the worker drops it
        client.slope.update(readings)  # after use, as core/ptp_source.py does
        mono_minus_real = self.clock.mono_epoch_ns - self.clock.real_epoch_ns - self.clock.steps_ns
        sample = build_sample(est, cfg, source_id=src.source_id, device_index=None,
                              mono_ns=est.realtime_ns + mono_minus_real,
                              realtime_ns=est.realtime_ns, poll_log2=cfg.interval)
        sample = dataclasses.replace(sample, reference_id=src.reference_id)
        self._push(t + int(src.latency_s * NS_PER_S) + 1, "deliver", sample)

    def _on_sock(self, t: int, client: Any) -> None:
        """The feeder learns of true second ``t`` after its delay and sends a SOCK sample."""
        src: SockFeed = client.source
        sim = src.config.sim
        self._push(t + round(sim.interval * NS_PER_S), "sock", client)
        k = client.requests
        client.requests += 1
        if rng.uniform(self.seed, src.source_id, "loss", k) < sim.loss:
            return
        late_s = sim.delay + rng.normal(self.seed, src.source_id, "jitter", k, sim.jitter)
        # the feeder's local timestamp of the moment it learns of second t (jitter both
        # ways around the mean delay: no clamping, which would bias the mean)
        stamp = self.clock.realtime_ns(t + round(late_s * NS_PER_S))
        offset_s = (self.clock.real_epoch_ns + t - stamp) / NS_PER_S  # reference - local
        arrive = t + max(0, round(late_s * NS_PER_S)) + round(sim.latency * NS_PER_S)
        self._push(arrive, "sock-datagram", (client, encode_sock_sample(stamp, offset_s)))

    def _on_sock_datagram(self, t: int, data: Any) -> None:
        client, datagram = data
        sock: SockSource = client.refclock
        for action in sock.handle_datagram(datagram, self.clock.mono_ns(t),
                                           self.clock.realtime_ns(t)):
            if isinstance(action, Publish):
                self._call(t, self.controller.handle_sample(action.sample, **self._now(t)))

    def _on_pps(self, t: int, client: Any) -> None:
        """A pulse at true period boundary ``t``, stamped by the kernel on the local clock."""
        src: PpsFeed = client.source
        sim = src.config.sim
        pps: PpsSource = client.refclock
        self._push(t + pps.period_ns, "pps", client)
        k = client.requests
        client.requests += 1
        if rng.uniform(self.seed, src.source_id, "loss", k) < sim.loss:
            return
        noise_s = sim.bias + rng.normal(self.seed, src.source_id, "jitter", k, sim.jitter)
        stamp = self.clock.realtime_ns(t) + round(noise_s * NS_PER_S)
        seen = t + round(sim.latency * NS_PER_S)
        # the worker's view of the clock algorithm: who knows the whole seconds
        pps.update_whole_seconds(whole_seconds_from(
            self.controller.source_snapshots(now_mono_ns=self.clock.mono_ns(seen))))
        event = PulseFetched(PpsFetch(k + 1, 0, stamp, 0, PPS_CAPTUREBOTH),
                             self.clock.mono_ns(seen), self.clock.realtime_ns(seen))
        for action in pps.handle_event(event, self.clock.mono_ns(seen)):
            if isinstance(action, Publish):
                self._push(seen, "deliver", action.sample)

    def _on_send(self, t: int, client: Any) -> None:
        src: ServerSource = client.source
        if client.denied:
            return
        if client.awaiting:
            client.unanswered += 1
            if client.unanswered >= UNREACHABLE_AFTER:
                self._call(t, self.controller.handle_unreachable(src.source_id, **self._now(t)))
        client.awaiting = True
        if client.burst_left > 1:
            client.burst_left -= 1
            self._push(t + IBURST_SPACING_NS, "send", client)
        else:
            client.burst_left = 0
            self._push(t + int(2.0**client.poll_log2 * NS_PER_S), "send", client)
        result = src.model.exchange(t, client.requests, self.clock)
        client.requests += 1
        if result is not None:
            sent = (self.clock.realtime_ns(t), self.clock.mono_ns(t), self.clock.steps_ns)
            self._push(result.arrival_ns, "answer", (client, result, sent))

    def _on_answer(self, t: int, data: Any) -> None:
        client, result, (t1, mono_t1, steps_then) = data
        src: ServerSource = client.source
        client.awaiting, client.unanswered = False, 0
        if isinstance(result, KissOfDeath):
            if result.code == "DENY":
                client.denied = True
                self._call(t, self.controller.handle_unreachable(src.source_id, **self._now(t)))
            else:
                client.poll_log2 = min(client.poll_log2 + 1, src.poll_limits[1])
            return
        assert isinstance(result, Exchange)
        if self.clock.steps_ns != steps_then:
            return  # the clock was stepped during the exchange
        p = src.model.params
        sample: Sample = ntp_sample(
            src.source_id,
            t1,
            result.t2_ns,
            result.t3_ns,
            self.clock.realtime_ns(t),
            mono_t1_ns=mono_t1,
            mono_t4_ns=self.clock.mono_ns(t),
            stratum=p.stratum,
            root_delay_s=p.root_delay_s,
            root_dispersion_s=p.root_dispersion_s,
            leap=p.leap,
            reference_id=src.reference_id,
            poll_log2=client.poll_log2,
        )
        self._call(t, self.controller.handle_sample(sample, **self._now(t)))

    # -- measuring -------------------------------------------------------------------

    def _record(self, t: int, interval_ns: int) -> None:
        snap = self.controller.system_snapshot(now_mono_ns=self.clock.mono_ns(t))
        threshold = self.scenario.scenario.falseticker_threshold
        by_id = {c.source.source_id: c.source for c in self.clients.values()}
        if any(
            abs(by_id[s].time_error(t)) > threshold for s in snap.selected_sources if s in by_id
        ):
            self.falseticker_selected_s += interval_ns / NS_PER_S
        error = self.clock.error(t)
        # Steps are not a rate: the mean rate over the interval is taken from the
        # continuous part of the error alone.
        continuous = error - self.clock.steps_ns / NS_PER_S
        mean_rate = 0.0
        if self._last_metric is not None and t > self._last_metric[0]:
            elapsed_s = (t - self._last_metric[0]) / NS_PER_S
            mean_rate = (continuous - self._last_metric[1]) / elapsed_s
        self._last_metric = (t, continuous)
        self.trace.append(
            t / NS_PER_S,
            error,
            self.clock.rate_error(t),
            self.clock.correction,
            snap.synchronized,
            mean_rate,
        )

    def _progress(self, t: int) -> Progress:
        states = ", ".join(
            f"{s.state.value} {s.source_id}"
            for s in self.controller.source_snapshots(now_mono_ns=self.clock.mono_ns(t))
        )
        return Progress(
            t / NS_PER_S,
            self.clock.error(t),
            self.clock.correction,
            self.controller.synchronized,
            states,
        )

    def _result(self) -> SimResult:
        summary = summarize(
            self.trace,
            scenario=self.scenario.scenario.name,
            seed=self.seed,
            duration_s=self.duration_s,
            measure_from_s=self.scenario.measure_from_s(self.duration_s),
            step_list=self.steps,
            falseticker_selected_s=self.falseticker_selected_s,
            panic=None if self.panic is None else self.panic.message,
        )
        return SimResult(
            summary,
            self.trace,
            None if self.panic is None else self.panic.message,
            None if self.panic is None else self.panic.exit_code,
            self.messages,
        )
