"""A demand curve driven against the local cluster while an autoscaler resizes it: the closed loop.

The staged-ramp experiment holds every rate until it is measured; here the rate follows a curve
minute by minute and the task count is left to a scaling policy, as it would be in production.
The clock is compressed: a "minute" lasts ``minute_s`` real seconds (a few), and everything that
is counted in minutes or seconds is scaled alike, so that the loop is the production loop, only
faster:

* the curve's minute m is offered for ``minute_s`` seconds, at the curve's mean rate over it;
* the metric's datapoint for minute m is the mean of the metric source's service-level samples
  taken in it, and reaches the policy one minute later (CloudWatch's publication delay);
* the policy is asked at the end of every minute, with the time in simulated seconds (its
  cooldowns are in simulated seconds too);
* a task the policy adds is launched after ``start_delay_s`` simulated seconds and serves once
  the cluster has health-checked it, so its real start time (a second or two of the local
  cluster's) is on top; a task it removes leaves rotation at once and is drained.

What the loop knows of the policy and of the metric is what the caller passes in
(``LoopPolicy``): the run side stays independent of the analysis. Each minute is written to
``minutes.jsonl`` as it ends, so an interrupted loop keeps every minute it finished.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from scalefinder.core.errors import InfrastructureError, Interrupted
from scalefinder.core.slo import step_met
from scalefinder.loadgen.engine.client import EngineProcess
from scalefinder.loadgen.engine.protocol import engine_config
from scalefinder.loadgen.engine.recorder import LoadRecorder, StepInfo
from scalefinder.loadgen.profile import Profile, with_secrets
from scalefinder.loadgen.signals import RunSignals, Stopped

logger = logging.getLogger(__name__)

PHASE = "closed_loop"
PUMP_S = 0.1  # how often the engine's messages are read while a minute runs
DRAIN_SLACK_S = 2.0
MINUTES_FILE = "minutes.jsonl"
SCALE_TIMEOUT_S = 60.0


class LoopPolicy(Protocol):
    """What the loop needs of a scaling policy and its metric."""

    def reading(self, rows: list[dict[str, Any]]) -> float | None:
        """The minute's datapoint from the metric rows sampled in it (None: no sample)."""

    def decide(self, now_s: float, datapoints: list[float], desired: int) -> int | None:
        """The new desired count, or None; ``now_s`` in simulated seconds, datapoints oldest first."""


@dataclass(frozen=True)
class LoopPlan:
    minutes: int
    rate_of_minute: Callable[[int], float]  # req/s offered during each minute
    minute_s: float  # real seconds per simulated minute
    start_tasks: int
    min_tasks: int
    max_tasks: int
    start_delay_s: float  # simulated seconds before an added task is launched
    publish_delay_minutes: int = 1
    metric_interval_s: float = 0.5  # real seconds between metric samples

    @property
    def time_scale(self) -> float:
        """Real seconds per simulated second."""
        return self.minute_s / 60.0


@dataclass
class LoopMinute:
    minute: int
    offered_rps: float
    tasks: int  # desired at the end of the minute: serving and starting, what is paid for
    serving: int  # in rotation at the end of the minute
    metric: float | None  # the minute's datapoint, in the caller's unit
    requests: int = 0
    failures: int = 0
    dropped: int = 0
    p95_ms: float | None = None
    breached: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class ScaleAction:
    minute: int
    previous: int
    desired: int
    decided_unix_s: float
    applied_unix_s: float | None = None  # every task in rotation (or out of it)
    error: str | None = None

    @property
    def took_s(self) -> float | None:
        """Real seconds from the decision to the tasks in (or out of) rotation."""
        return None if self.applied_unix_s is None else self.applied_unix_s - self.decided_unix_s


@dataclass
class LoopResult:
    minutes: list[LoopMinute] = field(default_factory=list)
    actions: list[ScaleAction] = field(default_factory=list)
    status: str = "complete"


class _Scaler:
    """Applies the policy's decisions to the cluster in order, off the loop's thread: a scale-out
    waits the start delay, then launches and health-checks its tasks (``scale_to`` blocks for
    that); a scale-in is applied at once."""

    def __init__(self, cluster: Any, start_delay_real_s: float, on_event: Callable[..., None]):
        self.cluster = cluster
        self.start_delay_real_s = start_delay_real_s
        self.on_event = on_event
        self._orders: queue.Queue[ScaleAction | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="closed-loop-scaler", daemon=True)
        self._thread.start()

    def order(self, action: ScaleAction) -> None:
        self._orders.put(action)

    def close(self, timeout_s: float) -> None:
        self._orders.put(None)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while (action := self._orders.get()) is not None:
            if action.desired > action.previous:
                time.sleep(max(0.0, action.decided_unix_s + self.start_delay_real_s - time.time()))
            try:
                self.cluster.scale_to(action.desired, SCALE_TIMEOUT_S)
                action.applied_unix_s = time.time()
            except Exception as exc:  # recorded with the action; the loop goes on with the tasks it has
                action.error = f"{type(exc).__name__}: {exc}"
                logger.warning("scaling to %d tasks failed: %s", action.desired, exc)
            self.on_event(action)


class ClosedLoop:
    def __init__(self, profile: Profile, cluster: Any, plan: LoopPlan, policy: LoopPolicy, out_dir: Path,
                 on_minute: Callable[[LoopMinute], None] | None = None):
        self.profile = profile
        self.cluster = cluster
        self.plan = plan
        self.policy = policy
        self.out_dir = out_dir
        self.on_minute = on_minute or (lambda minute: None)
        self.recorder = LoadRecorder(profile.slo, profile.workload.late_tolerance_ms)
        self.result = LoopResult()
        self._rows: list[dict[str, Any]] = []
        self._rows_lock = threading.Lock()
        self._engine: EngineProcess | None = None
        self._judged: set[int] = set()

    def run(self) -> LoopResult:
        """Drive every minute of the plan; a stop (Ctrl-C) keeps the minutes already finished."""
        plan = self.plan
        if len(self.cluster.running_tasks()) != plan.start_tasks:
            self.cluster.scale_to(plan.start_tasks, SCALE_TIMEOUT_S)
        source = self.cluster.metric_source(interval_s=plan.metric_interval_s)
        scaler = _Scaler(self.cluster, plan.start_delay_s * plan.time_scale, self._on_scaled)
        signals = RunSignals()
        try:
            with signals.stop_the_run(), EngineProcess(engine_config(with_secrets(self.profile),
                                                                     self.cluster.url)) as engine:
                self._engine = engine
                source.start(self._on_metrics)
                try:
                    self._drive(scaler)
                except Stopped as exc:
                    engine.stop()
                    # Requests cut off by the stop say nothing about the target: the minutes not
                    # yet judged are kept, unjudged (breached null).
                    for record in self.result.minutes:
                        if record.minute not in self._judged:
                            self._write(record)
                    self.result.status = "interrupted"
                    raise Interrupted(f"the closed loop was stopped by {exc.signal_name} after "
                                      f"{len(self.result.minutes)} of {plan.minutes} minutes; they are in "
                                      f"{self.out_dir / MINUTES_FILE}") from None
                finally:
                    source.stop()
        finally:
            scaler.close(SCALE_TIMEOUT_S)
        return self.result

    # -- the minutes --------------------------------------------------------------------------
    def _drive(self, scaler: _Scaler) -> None:
        plan = self.plan
        desired = plan.start_tasks
        datapoints: list[float] = []
        readings: list[float | None] = []
        lag = max(1, math.ceil((self.profile.workload.timeout_s + DRAIN_SLACK_S) / plan.minute_s))
        begun = time.time()
        for minute in range(plan.minutes):
            rate = plan.rate_of_minute(minute)
            start = begun + minute * plan.minute_s
            end = start + plan.minute_s
            self.recorder.begin_step(StepInfo(minute, PHASE, desired, rate))
            self._running_engine.set_rate(minute, rate)
            self._pump_until(end)
            with self._rows_lock:
                rows = [r for r in self._rows if start <= r["time_unix_s"] < end]
                self._rows = [r for r in self._rows if r["time_unix_s"] >= end]
            reading = self.policy.reading(rows)
            readings.append(reading)
            record = LoopMinute(minute, rate, desired, len(self.cluster.running_tasks()), reading)
            if len(readings) > plan.publish_delay_minutes:
                published = readings[-1 - plan.publish_delay_minutes]
                if published is not None:
                    datapoints.append(published)
                wanted = self.policy.decide((minute + 1) * 60.0, datapoints, desired)
                if wanted is not None:
                    wanted = max(plan.min_tasks, min(plan.max_tasks, wanted))
                if wanted is not None and wanted != desired:
                    action = ScaleAction(minute, desired, wanted, time.time())
                    self.result.actions.append(action)
                    scaler.order(action)
                    desired = wanted
            record.tasks = desired
            self.result.minutes.append(record)
            # A minute is judged once its last arrivals have finished or timed out.
            if minute >= lag:
                self._judge(self.result.minutes[minute - lag])
        self._running_engine.pause()
        self._wait_drained(plan.minutes - 1)
        for record in self.result.minutes[max(0, plan.minutes - lag):]:
            self._judge(record)

    def _judge(self, record: LoopMinute) -> None:
        """The minute's requests (those due in it) against the SLO, then the minute is written."""
        outcomes = self.recorder.outcomes(record.minute)
        sent = [o for o in outcomes if not o.dropped]
        latencies = np.array([o.latency_ms for o in sent], dtype=float)
        record.requests = len(outcomes)
        record.failures = sum(1 for o in sent if o.error)
        record.dropped = len(outcomes) - len(sent)
        slo = self.profile.slo
        record.p95_ms = float(np.percentile(latencies, slo.percentile)) if latencies.size else None
        met = step_met(record.p95_ms, record.failures, record.dropped, len(sent), slo)
        record.breached = None if met is None else not met
        self.recorder.forget(record.minute)
        self._write(record)

    def _write(self, record: LoopMinute) -> None:
        self._judged.add(record.minute)
        with open(self.out_dir / MINUTES_FILE, "a", encoding="utf-8") as out:
            out.write(json.dumps(record.to_dict()) + "\n")
        self.on_minute(record)

    # -- plumbing -----------------------------------------------------------------------------
    def _pump_until(self, until_unix_s: float) -> None:
        while (left := until_unix_s - time.time()) > 0:
            for message in self._running_engine.messages(time.monotonic() + min(left, PUMP_S)):
                self.recorder.feed(message)

    def _wait_drained(self, step_id: int) -> None:
        deadline = time.time() + self.profile.workload.timeout_s + DRAIN_SLACK_S
        while step_id not in self.recorder.drained and time.time() < deadline:
            self._pump_until(min(deadline, time.time() + PUMP_S))

    @property
    def _running_engine(self) -> EngineProcess:
        if self._engine is None:
            raise InfrastructureError("the load generator is not running")
        return self._engine

    def _on_metrics(self, rows: list[dict[str, Any]]) -> None:
        with self._rows_lock:
            self._rows.extend(rows)

    def _on_scaled(self, action: ScaleAction) -> None:
        delay = action.took_s
        logger.info("minute %d: %d -> %d tasks%s", action.minute, action.previous, action.desired,
                    f" ({action.error})" if action.error else (f" in {delay:.1f} s" if delay is not None else ""))
