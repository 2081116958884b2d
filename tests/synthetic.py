"""Synthetic run directories with a known answer, for testing the read side without load.

``write_synthetic_run(path, kind)`` writes a complete run directory through
``scalefinder.core.rundir.RunWriter``, shaped like one ``scalefinder run`` writes: a staged ramp at
``tasks`` tasks until the SLO breaks, a refine bisection, a replay of the rates below capacity
at twice the tasks, and a ``beyond`` phase at twice the tasks past the old capacity. Every
utilization metric is sampled each second per task and as a service average, with warm-up
transients at the start of each hold and autocorrelated noise, so the analyzer meets the
difficulties of a real run. The manifest's ``target.ground_truth`` states the answer.

Kinds (after ``method.md`` section 7):

* ``cpu``       - CPU linear in per-task load, plateau near 90% at capacity; memory small, flat.
* ``memory``    - memory linear in concurrency, the task dies at its limit (crash events);
  CPU light.
* ``retaining`` - like ``cpu``, plus memory growing with the requests served (never freed).
* ``jvm``       - like ``cpu``, with memory flat near the limit from the first second.
* ``workers``   - W workers per task; concurrency per task reaches W at capacity; 503s beyond.
* ``waiting``   - like ``workers`` with a downstream connection pool; little CPU.
* ``shared``    - one downstream shared by all tasks: capacity does not grow with tasks.
* ``queue``     - a job processor: requests enqueue jobs in one shared queue whose depth
  (``queue_backlog``, a service total) is about zero below capacity and grows linearly with
  time within each hold above it, up to a bound of ``queue_bound`` jobs (100); CPU light.
  ``backlog="flat"`` (a backlog that never drains nor grows) and ``backlog="growing"``
  (growth at every rate) are the shapes the analyzer must not take for a job processor. A
  small ``queue_bound`` with long holds gives a full bounded queue: it fills early in each
  overloaded hold and then sits flat at its bound.
* ``thrashing`` - CPU linear up to about 92% at capacity, then falling past the knee (about
  75% at 1.3x capacity: contention); memory small and flat.
* ``highwater`` - like ``cpu``, with memory at a large baseline (60%) that rises with load to a
  high-water mark (+25 points at capacity) and never comes down when load falls.
* ``partial``   - like ``cpu`` per task, behind a shared downstream that takes at most 1.5x the
  initial tasks' capacity: twice the tasks carry only 1.5x. (Not to be confused with the
  ``partial=True`` argument, which cuts a run short.)
* ``tie``       - CPU and memory both linear in load and both flattening at about 90% at the
  same knee: either is an answer, and naming only one hides the other.

``cpu_plateau`` moves the level at which the CPU-bound kinds (``cpu``, ``retaining``, ``jvm``,
``highwater``, ``partial``, ``tie``) settle at capacity: 90 by default, 100 for a service that
uses all its CPU before it slows down, 75 for one whose latency breaks first, 50 for a
single-threaded process on a 2-vCPU task (with ``cpu_units=2048``).

Sampling and noise. By default every metric is sampled each second with absolute AR(1) noise
(``NOISE_SD * noise``). ``sample_s`` reports the mean of each wall-clock bucket of that many
seconds instead, the way CloudWatch reports 1-minute data, and keeps them the way scalefinder's
CloudWatch source does: only periods lying wholly inside a step, stamped at their middle (the
steps are not aligned to minutes, so each hold loses its partial first and last minute).
``noise_cv`` makes
the noise relative to the level and adds it to the reported samples, after any averaging, so
it is the coefficient of variation of what the analyzer reads in either regime. ``REGIMES``
holds the two hold/sampling regimes the robustness benchmark uses.

Everything is a pure function of the arguments (``seed`` included); no clock is read for the
data, so two calls with the same arguments give the same tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from scalefinder.core.rundir import RunWriter, iso_utc
from scalefinder.loadgen.plan import aligned_hold_end

KINDS = ("cpu", "memory", "retaining", "jvm", "workers", "waiting", "shared", "queue",
         "thrashing", "highwater", "partial", "tie")
BACKLOG_SHAPES = ("saturating", "flat", "growing")
MAX_BACKLOG_JOBS = 100.0
# Kinds whose CPU follows the CPU-bound line, and so whose plateau ``cpu_plateau`` sets.
CPU_LINE_KINDS = ("cpu", "retaining", "jvm", "highwater", "partial", "tie")
# The ``partial`` kind's shared downstream: the most it takes, in multiples of the service's
# capacity at the initial task count.
PARTIAL_LIMIT = 1.5
# A memory task that keeps being overloaded dies again: once per this many seconds of a hold.
# Only holds longer than about a minute see a second crash.
CRASH_PERIOD_S = 60.0
# The ``retaining`` kind's leak by default: points of memory per request a task served.
RETAINED_PCT_PER_REQUEST = 0.012

# Ramp rates as fractions of the service capacity at the initial task count: six steps below
# capacity (enough for an exact Kendall test), one at 0.95 and the first breach at 1.1.
DEFAULT_RAMP = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.1)
DEFAULT_START_UNIX_S = 1_795_000_000.0  # 2026-11-18, a fixed instant so outputs are reproducible
SCALE_GAP_S = 6  # seconds between phases while tasks start or stop

# The two regimes of the robustness benchmark. "1s": what the embedded cluster records, short
# holds. "60s": what CloudWatch Container Insights gives on ECS: 1-minute averages, holds of
# five minutes so each leaves about four samples after its warm-up, and a minute between phases
# for new tasks to start (ECS takes that long to place and start a task and pass its health
# check). The warm-up transient's time constant is warmup_s / 2.5, so 92% of a change in level
# has happened by the end of the declared warm-up in both regimes.
REGIMES = {
    "1s": {"sample_s": 1, "hold_s": 20, "warmup_s": 4},
    "60s": {"sample_s": 60, "hold_s": 300, "warmup_s": 60, "scale_gap_s": 60},
}
# The ECS designs the robustness benchmark compares at one-minute data: holds that end on minute
# boundaries as the experiment makes them with a CloudWatch source (so a step keeps
# (hold - warm-up) / 60 whole minutes), 4 or 3 replay steps at twice the tasks, and no "beyond"
# phase, or with one ("-beyond"). "ecs-7m-r4" is profiles/ecs-emulated.toml before 3 Dec
# afternoon (6 samples a step, no beyond phase).
ECS_REGIMES = {
    f"ecs-{hold // 60}m-r{replay}{'-beyond' if beyond else ''}": {
        "sample_s": 60, "hold_s": hold, "warmup_s": 60, "scale_gap_s": 60, "align_s": 60,
        "replay_steps": replay, "beyond": beyond}
    for beyond in (False, True) for hold in (420, 300) for replay in (4, 3)
    if not beyond or (hold, replay) == (420, 4)
}
SLO = {"percentile": 95, "latency_ms": 250.0, "error_budget_pct": 1.0}

UNITS = {
    "cpu_utilization": "percent",
    "memory_utilization": "percent",
    "concurrency_per_task": "requests",
    "requests_per_task": "requests/s",
    "network_rx_bytes_per_s": "bytes/s",
    "running_task_count": "tasks",
}
# Standard deviation of the per-second noise of each metric, before ``noise`` scales it.
NOISE_SD = {
    "cpu_utilization": 2.0,
    "memory_utilization": 0.4,
    "concurrency_per_task": 0.15,
    "requests_per_task": 0.5,
    "network_rx_bytes_per_s": 600.0,
}
# With ``noise_cv`` the noise's standard deviation is noise_cv * max(level, floor): the floor
# keeps some noise on series that sit near zero (an idle CPU, an empty queue), as real ones do.
NOISE_FLOOR = {
    "cpu_utilization": 2.0,
    "memory_utilization": 2.0,
    "concurrency_per_task": 0.2,
    "requests_per_task": 0.5,
    "network_rx_bytes_per_s": 1000.0,
    "queue_backlog": 0.5,
}
# How much each task's own noise adds to the noise every task shares, relative to it. The own
# part is centred across the tasks at each instant, so it cancels in the service average, whose
# coefficient of variation is then exactly ``noise_cv``; a task's is a few percent more.
OWN_NOISE_SHARE = 0.5
PERCENT_METRICS = ("cpu_utilization", "memory_utilization")

EXPECTED = {
    "cpu": ("cpu_utilization", "cpu_bound", "cpu"),
    "memory": ("memory_utilization", "memory_bound", "memory"),
    "retaining": ("cpu_utilization", "memory_not_freed", "cpu"),
    "jvm": ("cpu_utilization", "gc_runtime", "cpu"),
    "workers": ("concurrency_per_task", "worker_based", "concurrency"),
    "waiting": ("concurrency_per_task", "waiting", "concurrency"),
    "shared": (None, "shared_bottleneck", "shared_downstream"),
    "queue": ("queue_backlog_per_task", "job_processor", "queue"),
    "thrashing": ("cpu_utilization", "cpu_bound", "cpu"),
    "highwater": ("cpu_utilization", "cpu_bound", "cpu"),
    "partial": ("cpu_utilization", "cpu_bound", "cpu"),
    "tie": ("cpu_utilization", "cpu_bound", "cpu_and_memory"),
}
# Further right answers of a kind besides EXPECTED's metric, written into the ground truth.
ALSO_RIGHT = {"tie": ("memory_utilization",)}


def ramp_fractions(count: int) -> tuple[float, ...]:
    """``count`` ramp rates as fractions of capacity: ``count - 1`` below it, evenly spaced up
    to 0.9 (k * 0.9 / (count - 1)), then the first breach at 1.1.

    Even spacing from zero makes the lowest step as far from idle as the steps are from each
    other; 0.9 keeps the last good step close to the knee without touching it, and 1.1 breaks
    the SLO clearly. For example 5 gives 0.225, 0.45, 0.675, 0.9, 1.1 and 6 gives 0.18, 0.36,
    0.54, 0.72, 0.9, 1.1. The refine phase then bisects between 0.9 and 1.1, and its first
    midpoint is exactly 1.0, which meets the SLO here (the model breaks only above capacity):
    so a run with refinement has one more step that met the SLO than the ramp's ``count - 1``.
    """
    if count < 2:
        raise ValueError(f"a ramp needs at least 2 steps (one below capacity, one breach); got {count}")
    below = count - 1
    return tuple(round(0.9 * k / below, 4) for k in range(1, below + 1)) + (1.1,)


@dataclass(frozen=True)
class StepPlan:
    step_id: int
    phase: str
    tasks: int
    offered_rps: float
    start_unix_s: float
    hold_s: int


@dataclass
class _State:
    """Per-task values carried across steps: the level each metric last settled at, and memory
    already retained. Mutable on purpose: it is the generator's memory between holds."""

    level: dict[tuple[str, str], float] = field(default_factory=dict)
    served: dict[str, float] = field(default_factory=dict)
    mark: dict[str, float] = field(default_factory=dict)  # highest load each task has seen


def write_synthetic_run(
    path: str | Path,
    kind: str = "cpu",
    *,
    tasks: int = 2,
    capacity_per_task_rps: float = 25.0,
    seed: int = 0,
    steps: Iterable[float] = DEFAULT_RAMP,
    hold_s: int = 20,
    warmup_s: int = 4,
    refine: bool = True,
    replay: bool = True,
    beyond: bool = True,
    noise: float = 1.0,
    metrics: Iterable[str] | None = None,
    generator_bound_from: float | None = None,
    partial: bool = False,
    start_unix_s: float = DEFAULT_START_UNIX_S,
    backlog: str = "saturating",
    sample_s: int = 1,
    noise_cv: float | None = None,
    cpu_units: int = 256,
    cpu_plateau: float = 90.0,
    queue_bound: float = MAX_BACKLOG_JOBS,
    leak_pct: float | None = None,
    scale_gap_s: int = SCALE_GAP_S,
    align_s: int | None = None,
    replay_steps: int = 4,
) -> Path:
    """Write a synthetic run directory at ``path`` and return its path.

    ``steps`` are the ramp's offered rates as fractions of the service capacity at ``tasks``
    tasks (``tasks * capacity_per_task_rps``); the ramp stops after the first step that breaks
    the SLO, as the real experiment does. ``metrics`` limits the metrics written (default: all
    of ``UNITS``). ``generator_bound_from`` marks every step from that fraction of capacity up
    as limited by the load generator (achieved rate short, ``valid=false``). ``partial`` leaves
    the run as a hard kill would: status ``running``, cut in the middle of the replay phase,
    with the last line of ``metrics.csv`` cut short. ``backlog`` shapes the ``queue`` kind's
    queue (``BACKLOG_SHAPES``) and ``queue_bound`` is the most jobs it holds.

    ``sample_s`` is the metrics' sampling period: above 1, each sample is the mean of the
    1-second series over a wall-clock bucket of ``sample_s`` seconds, stamped at its start
    (``load.csv`` and ``steps.csv`` stay per second). ``noise_cv`` replaces the absolute noise
    with AR(1) noise (phi 0.5) of standard deviation ``noise_cv * max(level, NOISE_FLOOR)``
    added to the reported samples. ``cpu_units`` is the task's CPU reservation written to the
    manifest (1024 = 1 vCPU). ``cpu_plateau`` is the CPU level the CPU-bound kinds settle at
    when overloaded. ``leak_pct`` makes the ``retaining`` kind's leak add that many points of
    memory over the whole run whatever its holds and steps (default: 0.012 points per request
    served, which long holds would drive past 100%). ``scale_gap_s`` is the time between
    phases. ``align_s`` ends every hold on a boundary of that period, as the experiment does with
    a whole-period source (``loadgen.plan.aligned_hold_end``), so a step after another starts on
    a boundary and one after a phase change anywhere. ``replay_steps`` is how many of the highest
    rates that held are replayed at twice the tasks.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {', '.join(KINDS)}")
    if backlog not in BACKLOG_SHAPES:
        raise ValueError(f"unknown backlog shape {backlog!r}; expected one of {', '.join(BACKLOG_SHAPES)}")
    if int(sample_s) != sample_s or sample_s < 1:
        raise ValueError(f"sample_s must be a whole number of seconds >= 1; got {sample_s!r}")
    if noise_cv is not None and not noise_cv >= 0:
        raise ValueError(f"noise_cv must be >= 0; got {noise_cv!r}")
    if not 0 < cpu_plateau <= 100:
        raise ValueError(f"cpu_plateau must be in (0, 100]; got {cpu_plateau!r}")
    model = _Model(kind, tasks, capacity_per_task_rps, backlog, cpu_plateau=cpu_plateau, queue_bound=queue_bound)
    rng = np.random.default_rng(seed)
    names = [m for m in (metrics or UNITS) if m in UNITS]
    plans = _plan(model, list(steps), hold_s, refine, replay, beyond, start_unix_s, scale_gap_s,
                  warmup_s=warmup_s, align_s=align_s, replay_steps=replay_steps)
    if leak_pct is not None:
        model.retained_pct_per_request = leak_pct / max(_served_by_first_task(model, plans), 1e-9)
    cut_unix_s = _cut_time(plans) if partial else None
    # The default output is written step by step exactly as it always was; resampled or
    # relative-noise metrics need the whole run first (buckets straddle steps; noise runs on).
    resample = sample_s != 1 or noise_cv is not None
    extras = {key: value for key, value, default in (
        ("sample_s", sample_s, 1), ("noise_cv", noise_cv, None), ("cpu_plateau", cpu_plateau, 90.0),
        ("queue_bound", queue_bound, MAX_BACKLOG_JOBS), ("leak_pct", leak_pct, None),
        ("scale_gap_s", scale_gap_s, SCALE_GAP_S)) if value != default}

    writer = RunWriter.create(path, _manifest(model, seed, hold_s, warmup_s, start_unix_s, sample_s=int(sample_s),
                                              cpu_units=cpu_units, extras=extras))
    state = _State()
    phases: list[dict] = []
    metric_frames: list[pd.DataFrame] = []
    for plan in plans:
        if cut_unix_s is not None and plan.start_unix_s >= cut_unix_s:
            break
        _note_phase(writer, phases, plan)
        step_row, load_frame, metric_frame, crashes = _step(
            model, plan, warmup_s, state, names, rng, noise, generator_bound_from,
            raw=resample, relative=noise_cv is not None
        )
        finished = cut_unix_s is None or plan.start_unix_s + plan.hold_s <= cut_unix_s
        if not finished:
            load_frame = load_frame[load_frame["time_unix_s"] < cut_unix_s]
            metric_frame = metric_frame[metric_frame["time_unix_s"] < cut_unix_s]
        for row in _records(load_frame):
            writer.append_load(row)
        metric_frames.append(metric_frame)
        if not resample:
            writer.append_metrics(metric_frame.to_dict("records"))
        _write_step_events(writer, plan, crashes, step_row if finished else None)
        if finished:
            writer.append_step(step_row)
    if resample:
        windows = [(plan.start_unix_s, plan.start_unix_s + plan.hold_s) for plan in plans]
        reported = _reported(metric_frames, int(sample_s), noise_cv, rng, cut_unix_s, windows)
        writer.append_metrics(_records(reported))
    end_unix_s = cut_unix_s if cut_unix_s is not None else plans[-1].start_unix_s + plans[-1].hold_s
    if cut_unix_s is None:
        phases[-1]["end_utc"] = iso_utc(end_unix_s)
        phases.append({"name": "restore", "tasks": tasks, "start_utc": iso_utc(end_unix_s),
                       "end_utc": iso_utc(end_unix_s + SCALE_GAP_S)})
        writer.update_manifest(phases=phases, status="complete", finished_utc=iso_utc(end_unix_s + SCALE_GAP_S))
        writer.event("run_end", status="complete", reason=None, **_when(end_unix_s + SCALE_GAP_S))
    else:
        writer.update_manifest(phases=phases)
    writer.close()
    if partial:
        _cut_last_line(Path(path) / "metrics.csv")
    return Path(path)


class _Model:
    """The steady-state behaviour of one archetype: what each metric settles at for a load."""

    def __init__(self, kind: str, tasks: int, capacity_per_task_rps: float, backlog: str = "saturating", *,
                 cpu_plateau: float = 90.0, queue_bound: float = MAX_BACKLOG_JOBS):
        self.kind = kind
        self.backlog = backlog
        self.cpu_plateau = cpu_plateau
        self.queue_bound = queue_bound
        self.retained_pct_per_request = RETAINED_PCT_PER_REQUEST
        self.tasks = tasks
        self.capacity_per_task_rps = capacity_per_task_rps
        self.workers = 8
        self.service_s = self.workers / capacity_per_task_rps  # W workers, capacity W / S
        self.hold_mib = 4.0

    def service_capacity_rps(self, tasks: int) -> float:
        if self.kind == "shared":
            return self.tasks * self.capacity_per_task_rps  # fixed, whatever the task count
        if self.kind == "partial":  # the tasks' own capacity, up to what the downstream takes
            return min(tasks, PARTIAL_LIMIT * self.tasks) * self.capacity_per_task_rps
        return tasks * self.capacity_per_task_rps

    def utilization(self, offered_rps: float, tasks: int) -> float:
        """Offered load over the service's capacity: above 1 the service is overloaded."""
        return offered_rps / self.service_capacity_rps(tasks)

    def served_rps(self, offered_rps: float, tasks: int) -> float:
        return min(offered_rps, self.service_capacity_rps(tasks) * 1.02)

    def p95_ms(self, rho: float) -> float:
        base_ms = 20.0
        if rho <= 1.0:
            return base_ms + (0.85 * SLO["latency_ms"] - base_ms) * rho**8
        return SLO["latency_ms"] * (1.5 + 10.0 * (rho - 1.0))

    def error_pct(self, rho: float) -> float:
        if rho <= 1.0:
            return 0.0
        return {"memory": 12.0, "workers": 20.0, "waiting": 15.0}.get(self.kind, 0.5 + 5.0 * (rho - 1.0))

    def steady(self, metric: str, per_task_rps: float, rho: float, latency_s: float, served_total: float,
               mark: float = 0.0) -> float:
        """The level ``metric`` settles at for one task taking ``per_task_rps``; ``mark`` is the
        highest load the task took before (the ``highwater`` kind's memory keeps it)."""
        load = min(per_task_rps / self.capacity_per_task_rps, 1.0)  # the task's own utilization
        over = max(rho - 1.0, 0.0)
        kind = self.kind
        if metric == "requests_per_task":
            return per_task_rps
        if metric == "network_rx_bytes_per_s":
            return 800.0 + 1500.0 * per_task_rps
        if metric == "concurrency_per_task":
            if kind in ("workers", "waiting"):
                return self.workers * load + (3.0 * over * self.workers if over else 0.0)
            return per_task_rps * latency_s
        if metric == "cpu_utilization":
            if kind in CPU_LINE_KINDS:
                # 4% idle, the plateau less 2 at capacity, the last 2 points when overloaded
                return 4.0 + (self.cpu_plateau - 6.0) * load + 2.0 * min(over, 1.0)
            if kind == "thrashing":
                if over <= 0.0:
                    return 4.0 + 88.0 * load
                # past the knee the task spends its CPU contending, not working: 75% at 1.3x
                return max(92.0 - (17.0 / 0.3) * over, 40.0)
            if kind == "memory":
                return 3.0 + 25.0 * load
            if kind == "shared":
                return 2.0 + 8.0 * per_task_rps / self.capacity_per_task_rps
            return 2.0 + 10.0 * load
        if metric == "memory_utilization":
            if kind == "memory":
                return 30.0 + 62.0 * load
            if kind == "jvm":
                return 91.0
            if kind == "retaining":
                return 15.0 + self.retained_pct_per_request * served_total
            if kind == "highwater":
                return 60.0 + 25.0 * max(mark, load)
            if kind == "tie":
                return 6.0 + 82.0 * load + 2.0 * min(over, 1.0)  # CPU's shape: both flatten at 90
            return 18.0
        raise KeyError(metric)


def _plan(model: _Model, ramp: list[float], hold_s: int, refine: bool, replay: bool, beyond: bool,
          start_unix_s: float, scale_gap_s: int = SCALE_GAP_S, *, warmup_s: int = 4,
          align_s: int | None = None, replay_steps: int = 4) -> list[StepPlan]:
    n, capacity = model.tasks, model.service_capacity_rps(model.tasks)
    plans: list[StepPlan] = []
    clock = start_unix_s

    def add(phase: str, tasks: int, rate: float) -> None:
        nonlocal clock
        if plans and plans[-1].phase != phase:
            clock += scale_gap_s
        length = hold_s
        if align_s is not None:
            # whole seconds: the generator writes one row a second
            length = math.ceil(aligned_hold_end(clock, hold_s, warmup_s, align_s) - clock - 1e-9)
        plans.append(StepPlan(len(plans), phase, tasks, round(rate, 3), clock, length))
        clock += length

    good: list[float] = []
    bad = None
    for fraction in ramp:
        add("ramp", n, fraction * capacity)
        if model.utilization(fraction * capacity, n) > 1.0:
            bad = fraction * capacity
            break
        good.append(fraction * capacity)
    if refine and good and bad is not None:
        low, high = good[-1], bad
        for _ in range(2):
            middle = (low + high) / 2
            add("refine", n, middle)
            if model.utilization(middle, n) > 1.0:
                high = middle
            else:
                low = middle
    if replay:
        for rate in good[-replay_steps:]:
            add("replay", 2 * n, rate)
    if beyond:
        rate = capacity * 1.2
        while rate <= capacity * 2.6:
            add("beyond", 2 * n, rate)
            if model.utilization(rate, 2 * n) > 1.0:
                break
            rate += capacity * 0.2
    return plans


def _served_by_first_task(model: _Model, plans: list[StepPlan]) -> float:
    """Requests the first task serves over the whole run, with the balancer's shares even: the
    scale of the ``retaining`` kind's leak when ``leak_pct`` fixes its total."""
    return sum(model.served_rps(p.offered_rps, p.tasks) / p.tasks * p.hold_s for p in plans)


def _sources(sample_s: int) -> dict:
    """What the metric source would say about itself: 1-minute multiples are CloudWatch's
    periods (Average statistic, stamped at the period's start), finer ones a local sampler's."""
    if sample_s >= 60 and sample_s % 60 == 0:
        return {"cloudwatch": {"kind": "cloudwatch", "interval_s": sample_s, "period_s": sample_s,
                               "statistic": "Average", "stamped_at": "period start", "synthetic": True}}
    return {"local": {"kind": "local", "interval_s": sample_s}}


def _manifest(model: _Model, seed: int, hold_s: int, warmup_s: int, start_unix_s: float, *, sample_s: int = 1,
              cpu_units: int = 256, extras: dict | None = None) -> dict:
    metric, pattern, bottleneck = EXPECTED[model.kind]
    ground_truth = {
        "archetype": model.kind,
        "pattern": pattern,
        "bottleneck": bottleneck,
        "capacity_rps_per_task": model.capacity_per_task_rps,
        "expected_metric": metric,
        "expected_verdict": "recommended" if metric else "no_task_level_metric",
        "tasks": model.tasks,
    }
    if model.kind in ALSO_RIGHT:
        ground_truth["also_right"] = list(ALSO_RIGHT[model.kind])
    if model.kind == "partial":
        ground_truth["capacity_ratio_at_twice_the_tasks"] = PARTIAL_LIMIT
    params = {"synthetic": True, "seed": seed, **(extras or {})}
    profile = {
        "name": f"synthetic-{model.kind}",
        "description": f"synthetic {model.kind} run (seed {seed})",
        "target": {"kind": "local", "archetype": model.kind, "cpu_units": cpu_units, "memory_mib": 256},
        "slo": dict(SLO),
        "ramp": {"hold_s": hold_s, "warmup_s": warmup_s},
        "capacity": {"controller": "local", "tasks": model.tasks},
        "analysis": {"headroom": 0.7, "availability_zones": 3},
    }
    return {
        "run_id": f"20261118T000000Z-synthetic-{model.kind}",
        "started_utc": iso_utc(start_unix_s),
        "profile": profile,
        "profile_path": None,
        "environment": {"tool_version": "synthetic", "python": "", "libraries": {},
                        "host": {"name": "synthetic", "cpus": 2, "memory_mib": 4096},
                        "cgroup_mode": "unenforced"},
        "target": {
            "kind": "local",
            "archetype": model.kind,
            "params": params,
            "cpu_units": cpu_units,
            "memory_mib": 256,
            # The same keys as loadgen.cluster.archetypes.ground_truth (and a few for new kinds).
            "ground_truth": ground_truth,
        },
        "slo": dict(SLO),
        "capacity": {"controller": "local", "original": {"tasks": model.tasks}, "initial_tasks": model.tasks},
        "sources": _sources(sample_s),
        "generator": {"mode": "local", "workers": 0},
    }


def _step(model: _Model, plan: StepPlan, warmup_s: int, state: _State, names: list[str],
          rng: np.random.Generator, noise: float, generator_bound_from: float | None, *, raw: bool = False,
          relative: bool = False):
    """One hold: its step row, load seconds, metric samples and crashes. With ``raw`` the
    metric frame is the 1-second per-task series and the service-only series (time, task,
    metric, value), left for ``_reported`` to average, add noise to and format; ``relative``
    leaves out the absolute noise, which ``_reported`` replaces."""
    rho = model.utilization(plan.offered_rps, plan.tasks)
    generator_bound = (
        generator_bound_from is not None
        and plan.offered_rps >= generator_bound_from * model.service_capacity_rps(model.tasks) - 1e-9
    )
    served = model.served_rps(plan.offered_rps, plan.tasks)
    if generator_bound:
        served = min(served, 0.8 * plan.offered_rps)
    p95 = model.p95_ms(rho)
    error_pct = model.error_pct(rho)
    seconds = np.arange(plan.hold_s, dtype=float)
    times = plan.start_unix_s + seconds
    ids = [f"task-{i + 1}" for i in range(plan.tasks)]
    # A least-outstanding balancer spreads load nearly, not exactly, evenly.
    shares = 1.0 + rng.normal(0.0, 0.02, plan.tasks)
    shares = shares / shares.mean()
    crashes = _crash_plan(model, plan, rho, ids)

    frames = []
    columns: dict[str, list] = {"time_unix_s": [], "task": [], "metric": [], "value": []}
    for index, task in enumerate(ids):
        per_task = served / plan.tasks * shares[index]
        for metric in names:
            if metric == "running_task_count":
                continue
            values = _series(model, metric, task, per_task, rho, p95 / 1000.0, state, seconds, warmup_s,
                             rng, None if relative else noise, crashes.get(task))
            if raw:  # one frame for the step at the end: far cheaper than one per series
                columns["time_unix_s"].append(times)
                columns["task"].append(np.full(len(times), task, dtype=object))
                columns["metric"].append(np.full(len(times), metric, dtype=object))
                columns["value"].append(values)
            else:
                frames.append(pd.DataFrame({"time_unix_s": times, "task": task, "metric": metric, "value": values}))
        state.served[task] = state.served.get(task, 0.0) + per_task * plan.hold_s
        if model.kind == "highwater":
            state.mark[task] = max(state.mark.get(task, 0.0), min(per_task / model.capacity_per_task_rps, 1.0))
    if raw:
        per_task_frame = (pd.DataFrame({key: np.concatenate(parts) for key, parts in columns.items()})
                          if columns["value"] else _empty_metrics())
    else:
        per_task_frame = pd.concat(frames, ignore_index=True) if frames else _empty_metrics()
    if raw:
        extra = []
        if "running_task_count" in names:
            extra.append(pd.DataFrame({"time_unix_s": times, "task": "", "metric": "running_task_count",
                                       "value": float(plan.tasks)}))
        if model.kind == "queue":
            depth = _backlog(model, plan, state, seconds, rng, exact=relative)
            extra.append(pd.DataFrame({"time_unix_s": times, "task": "", "metric": "queue_backlog", "value": depth}))
        metrics = pd.concat([per_task_frame, *extra], ignore_index=True)
        load = _load_frame(plan, served, p95, error_pct, generator_bound, rng)
        step_row = _step_row(plan, warmup_s, load, p95, error_pct, generator_bound, rho)
        return step_row, load, metrics, crashes
    service = (per_task_frame.groupby(["metric", "time_unix_s"], as_index=False)["value"].mean()
               .assign(task=""))
    if "running_task_count" in names:
        service = pd.concat([service, pd.DataFrame({"time_unix_s": times, "metric": "running_task_count",
                                                    "value": float(plan.tasks), "task": ""})])
    if model.kind == "queue":
        depth = _backlog(model, plan, state, seconds, rng)
        service = pd.concat([service, pd.DataFrame({"time_unix_s": times, "metric": "queue_backlog",
                                                    "value": depth, "task": ""})])
    metrics = pd.concat([per_task_frame, service], ignore_index=True)
    metrics = metrics.dropna(subset=["value"])
    metrics["source"] = "local"
    metrics["unit"] = metrics["metric"].map({**UNITS, "queue_backlog": "jobs"})
    metrics["value"] = metrics["value"].round(4)
    metrics = metrics.sort_values(["time_unix_s", "metric", "task"], kind="stable")[
        ["time_unix_s", "source", "metric", "task", "value", "unit"]]

    load = _load_frame(plan, served, p95, error_pct, generator_bound, rng)
    step_row = _step_row(plan, warmup_s, load, p95, error_pct, generator_bound, rho)
    return step_row, load, metrics, crashes


def _crash_plan(model: _Model, plan: StepPlan, rho: float, ids: list[str]) -> dict[str, list[float]]:
    """Seconds into the hold at which each task dies: only memory tasks, only when overloaded.
    The first death comes a few seconds in; a task still overloaded after its restart fills up
    and dies again every ``CRASH_PERIOD_S``, which only holds over a minute long see."""
    if model.kind != "memory" or rho <= 1.0:
        return {}
    plan_out = {}
    for i, task in enumerate(ids):
        first = 6.0 + 2.0 * i
        plan_out[task] = [first] + [float(at) for at in np.arange(first + CRASH_PERIOD_S, plan.hold_s, CRASH_PERIOD_S)]
    return plan_out


def _series(model: _Model, metric: str, task: str, per_task: float, rho: float, latency_s: float,
            state: _State, seconds: np.ndarray, warmup_s: int, rng: np.random.Generator, noise: float | None,
            crash_at: list[float] | None) -> np.ndarray:
    """One task's 1-second series of ``metric`` through a hold; ``noise`` None leaves it clean."""
    served_before = state.served.get(task, 0.0)
    served_total = served_before + per_task * (seconds + 1.0)
    if model.kind == "retaining" and metric == "memory_utilization":
        target = np.array([model.steady(metric, per_task, rho, latency_s, s) for s in served_total])
    else:
        target = np.full(seconds.shape, model.steady(metric, per_task, rho, latency_s, served_before,
                                                     state.mark.get(task, 0.0)))
    key = (task, metric)
    previous = state.level.get(key, target[0])
    # Each hold starts with a transient from the previous level, the warm-up MSER must cut.
    settle = 1.0 - np.exp(-seconds / max(warmup_s / 2.5, 0.5))
    values = previous + (target - previous) * settle
    if metric == "memory_utilization" and crash_at is not None:
        values = _crashing_memory(seconds, crash_at)
    if noise is not None:
        values = values + _ar1(rng, len(seconds), NOISE_SD.get(metric, 0.0) * noise)
    if metric in ("cpu_utilization", "memory_utilization"):
        values = np.clip(values, 0.0, 100.0)
    values = np.maximum(values, 0.0)
    if crash_at is not None:
        for at in crash_at:
            gap = (seconds >= at) & (seconds < at + 2.0)
            values = np.where(gap, np.nan, values)  # no samples from a dead task
    state.level[key] = float(target[-1])
    return values


def _crashing_memory(seconds: np.ndarray, crashes: list[float]) -> np.ndarray:
    """A memory task overloaded through a hold: at its limit until it dies, 30% after each
    restart (2 s later). After the only restart of a short hold it creeps up 5 points over the
    hold; between repeated deaths it climbs back to the limit in time for the next one."""
    first = crashes[0]
    values = np.where(seconds < first, np.minimum(97.0 + 0.3 * seconds, 99.5), np.nan)
    if len(crashes) == 1:
        restarted = seconds >= first + 2.0
        values[restarted] = 30.0 + 5.0 * (seconds[restarted] - first - 2.0) / max(seconds[-1], 1.0)
        return values
    climb = (97.0 - 30.0) / (CRASH_PERIOD_S - 2.0)  # points a second back up to the limit
    for at in crashes:
        restarted = seconds >= at + 2.0
        values[restarted] = 30.0 + climb * (seconds[restarted] - at - 2.0)
    return values


def _backlog(model: _Model, plan: StepPlan, state: _State, seconds: np.ndarray,
             rng: np.random.Generator, exact: bool = False) -> np.ndarray:
    """The shared queue's depth each second: it fills at the arrival rate and drains at the
    service's capacity, from where the last hold left it, within [0, queue_bound]. ``exact``
    gives the depth itself, for relative noise to be added to later."""
    key = ("", "queue_backlog")
    start = state.level.get(key, 0.0)
    if model.backlog == "flat":
        depth = np.full(seconds.shape, 6.0 * model.tasks)
    elif model.backlog == "growing":
        depth = start + 0.05 * plan.offered_rps * (seconds + 1.0)  # a leak of jobs at every rate
    else:
        net = plan.offered_rps - model.service_capacity_rps(plan.tasks)
        depth = np.clip(start + net * (seconds + 1.0), 0.0, model.queue_bound)
    state.level[key] = float(depth[-1])
    if exact:
        return depth
    # Jobs arrive one by one: an empty queue shows a waiting job now and then.
    jitter = np.where(depth > 0, rng.normal(0.0, 1.0, len(seconds)), (rng.random(len(seconds)) < 0.05) * 1.0)
    return np.maximum(np.round(depth + jitter), 0.0)


def _reported(frames: list[pd.DataFrame], sample_s: int, noise_cv: float | None, rng: np.random.Generator,
              cut_unix_s: float | None, windows: list[tuple[float, float]] | None = None) -> pd.DataFrame:
    """From the whole run's 1-second series to what the metric source reports: bucket means
    over ``sample_s``, relative noise on them, the service average over the tasks, formatted as
    metrics.csv rows.

    Coarse buckets are kept as scalefinder's CloudWatch source keeps its periods: only those
    lying wholly inside a step's ``windows`` (a period that straddles two load levels is dropped,
    never averaged in), stamped at their middle."""
    raw = pd.concat(frames, ignore_index=True) if frames else _empty_metrics()
    raw["task"] = raw["task"].astype(str)
    if sample_s > 1:
        raw["time_unix_s"] = np.floor(raw["time_unix_s"] / sample_s) * sample_s
        raw = raw.groupby(["metric", "task", "time_unix_s"], as_index=False, sort=True)["value"].mean()
        if cut_unix_s is not None:  # a killed collector never reported the bucket it was in
            raw = raw[raw["time_unix_s"] + sample_s <= cut_unix_s]
        if windows:
            starts = np.array([w[0] for w in windows])
            ends = np.array([w[1] for w in windows])
            begin = raw["time_unix_s"].to_numpy(float)
            index = np.clip(np.searchsorted(starts, begin, side="right") - 1, 0, len(starts) - 1)
            inside = (begin >= starts[index]) & (begin + sample_s <= ends[index])
            raw = raw[inside]
        raw = raw.assign(time_unix_s=raw["time_unix_s"] + sample_s / 2)
    raw = raw.dropna(subset=["value"]).sort_values(["metric", "task", "time_unix_s"], kind="stable")
    raw = raw.reset_index(drop=True)
    if noise_cv is not None:
        raw["value"] = raw["value"] + _relative_noise(raw, noise_cv, rng)
    percent = raw["metric"].isin(PERCENT_METRICS)
    raw.loc[percent, "value"] = raw.loc[percent, "value"].clip(0.0, 100.0)
    raw["value"] = raw["value"].clip(lower=0.0)
    per_task = raw[raw["task"] != ""]
    service = (per_task.groupby(["metric", "time_unix_s"], as_index=False)["value"].mean().assign(task=""))
    metrics = pd.concat([per_task, service, raw[raw["task"] == ""]], ignore_index=True)
    metrics["source"] = "cloudwatch" if "cloudwatch" in _sources(sample_s) else "local"
    metrics["unit"] = metrics["metric"].map({**UNITS, "queue_backlog": "jobs"})
    metrics["value"] = metrics["value"].round(4)
    return metrics.sort_values(["time_unix_s", "metric", "task"], kind="stable")[
        ["time_unix_s", "source", "metric", "task", "value", "unit"]]


def _relative_noise(samples: pd.DataFrame, noise_cv: float, rng: np.random.Generator) -> np.ndarray:
    """AR(1) noise for each sample (sorted by metric, task, time), of standard deviation
    ``noise_cv * max(level, floor)``: a part every task of a metric shares at each instant,
    plus each task's own part, centred across tasks so the service average keeps only the
    shared part. A service-only series (the queue) has the shared part alone; the task count
    has none."""
    noise = np.zeros(len(samples))
    for metric, rows in samples.groupby("metric", sort=True):
        if metric not in NOISE_FLOOR:
            continue
        scale = noise_cv * np.maximum(rows["value"].to_numpy(), NOISE_FLOOR[metric])
        instants = np.sort(rows["time_unix_s"].unique())
        shared = pd.Series(_ar1(rng, len(instants), 1.0), index=instants)
        unit = shared.loc[rows["time_unix_s"]].to_numpy()
        tasks = rows["task"] != ""
        if tasks.any():
            own = np.zeros(len(rows))
            for task in sorted(rows.loc[tasks, "task"].unique()):
                where = (rows["task"] == task).to_numpy()
                own[where] = _ar1(rng, int(where.sum()), 1.0)
            own_frame = pd.DataFrame({"time": rows["time_unix_s"].to_numpy(), "own": own, "task": tasks.to_numpy()})
            centre = own_frame[own_frame["task"]].groupby("time")["own"].transform("mean")
            own_centred = np.zeros(len(rows))
            own_centred[tasks.to_numpy()] = own[tasks.to_numpy()] - centre.to_numpy()
            unit = unit + OWN_NOISE_SHARE * own_centred
        noise[samples.index.get_indexer(rows.index)] = scale * unit
    return noise


def _ar1(rng: np.random.Generator, length: int, sd: float, phi: float = 0.5) -> np.ndarray:
    shocks = rng.normal(0.0, sd * np.sqrt(1.0 - phi**2), length)
    out = np.empty(length)
    level = rng.normal(0.0, sd)
    for i in range(length):  # short series (one hold); the recurrence has no closed vector form
        level = phi * level + shocks[i]
        out[i] = level
    return out


def _records(frame: pd.DataFrame) -> list[dict]:
    """The rows of ``frame`` as dicts of plain Python values, as ``to_dict("records")`` gives
    them, several times faster: writing the rows is most of the generator's time."""
    names = list(frame.columns)
    return [dict(zip(names, row)) for row in zip(*(frame[name].tolist() for name in names))]


def _load_frame(plan: StepPlan, served: float, p95: float, error_pct: float, generator_bound: bool,
                rng: np.random.Generator) -> pd.DataFrame:
    size = plan.hold_s
    # An open-model generator sends on schedule: floor((t + 1) * rate) - floor(t * rate) a second.
    rate = plan.offered_rps * (0.8 if generator_bound else 1.0)
    ticks = np.arange(size + 1, dtype=float)
    sent = np.diff(np.floor(ticks * rate))
    completed = np.round(sent * min(served / plan.offered_rps, 1.0) / (0.8 if generator_bound else 1.0))
    completed = np.minimum(completed, sent)
    failures = np.round(completed * error_pct / 100.0)
    jitter = 1.0 + rng.normal(0.0, 0.05, size)
    return pd.DataFrame({
        "time_unix_s": plan.start_unix_s + np.arange(size, dtype=float),
        "step_id": plan.step_id,
        "phase": plan.phase,
        "tasks": plan.tasks,
        "offered_rps": plan.offered_rps,
        "sent": sent,
        "completed": completed,
        "failures": failures,
        "dropped": 0.0,
        "late": 0.0,
        "in_flight": np.round(served * p95 / 1000.0 / 2.0),
        "p50_ms": np.round(p95 * 0.5 * jitter, 3),
        "p95_ms": np.round(p95 * jitter, 3),
        "p99_ms": np.round(p95 * 1.4 * jitter, 3),
        "max_ms": np.round(p95 * 2.0 * jitter, 3),
        "generator_cpu_pct": 97.0 if generator_bound else 20.0 + 0.3 * plan.offered_rps,
    })


def _step_row(plan: StepPlan, warmup_s: int, load: pd.DataFrame, p95: float, error_pct: float,
              generator_bound: bool, rho: float) -> dict:
    measured = load.iloc[warmup_s:]
    duration = max(len(measured), 1)
    completed = float(measured["completed"].sum())
    failures = float(measured["failures"].sum())
    slo_met = p95 <= SLO["latency_ms"] and error_pct <= SLO["error_budget_pct"]
    return {
        "step_id": plan.step_id,
        "phase": plan.phase,
        "tasks": plan.tasks,
        "offered_rps": plan.offered_rps,
        "start_unix_s": plan.start_unix_s,
        "end_unix_s": plan.start_unix_s + plan.hold_s,
        "warmup_s": warmup_s,
        "achieved_rps": round(completed / duration, 3),
        "sent": float(measured["sent"].sum()),
        "completed": completed,
        "failures": failures,
        "dropped": 0,
        "late": 0,
        "p50_ms": round(p95 * 0.5, 3),
        "p90_ms": round(p95 * 0.85, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p95 * 1.4, 3),
        "max_ms": round(p95 * 2.0, 3),
        "mean_ms": round(p95 * 0.55, 3),
        "error_kinds": {"http_503": failures} if failures else {},
        "generator_cpu_pct": 97.0 if generator_bound else round(20.0 + 0.3 * plan.offered_rps, 3),
        "valid": not generator_bound,
        "invalid_reason": "load generator CPU at 97% limited the rate" if generator_bound else None,
        "slo_met": slo_met and not generator_bound,
        "end_reason": "held" if rho <= 1.0 else "slo_breach",
    }


def _note_phase(writer: RunWriter, phases: list[dict], plan: StepPlan) -> None:
    if phases and phases[-1]["name"] == plan.phase:
        return
    if phases:
        phases[-1]["end_utc"] = iso_utc(plan.start_unix_s - SCALE_GAP_S)
        writer.event("scale", tasks=plan.tasks, **_when(plan.start_unix_s - SCALE_GAP_S))
    phases.append({"name": plan.phase, "tasks": plan.tasks, "start_utc": iso_utc(plan.start_unix_s), "end_utc": None})
    writer.update_manifest(phases=phases)
    writer.event("phase_start", phase=plan.phase, tasks=plan.tasks, **_when(plan.start_unix_s))


def _write_step_events(writer: RunWriter, plan: StepPlan, crashes: dict[str, list[float]],
                       step_row: dict | None) -> None:
    writer.event("step_start", step_id=plan.step_id, phase=plan.phase, offered_rps=plan.offered_rps,
                 **_when(plan.start_unix_s))
    order = list(crashes)
    for at, task in sorted(((at, task) for task, times in crashes.items() for at in times),
                           key=lambda item: (item[0], order.index(item[1]))):
        writer.event("task_crash", task=task, reason="memory limit exceeded (OOM kill)",
                     **_when(plan.start_unix_s + at))
        writer.event("task_restart", task=task, **_when(plan.start_unix_s + at + 2.0))
    if step_row is not None:
        writer.event("step_end", step_id=plan.step_id, end_reason=step_row["end_reason"],
                     **_when(step_row["end_unix_s"]))


def _when(unix_s: float) -> dict:
    return {"time_unix_s": unix_s, "time_utc": datetime.fromtimestamp(unix_s, timezone.utc).isoformat()}


def _cut_time(plans: list[StepPlan]) -> float:
    """Half way through the second replay step (or the middle of the run without a replay)."""
    replay = [p for p in plans if p.phase == "replay"]
    chosen = replay[1] if len(replay) > 1 else plans[len(plans) // 2]
    return chosen.start_unix_s + chosen.hold_s / 2


def _cut_last_line(path: Path) -> None:
    data = path.read_bytes().rstrip(b"\n")
    last_line_start = data.rfind(b"\n") + 1
    path.write_bytes(data[: last_line_start + (len(data) - last_line_start) // 2])


def _empty_metrics() -> pd.DataFrame:
    return pd.DataFrame({"time_unix_s": [], "task": [], "metric": [], "value": []})
