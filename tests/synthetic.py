"""Synthetic run directories with a known answer, for testing the read side without load.

``write_synthetic_run(path, kind)`` writes a complete run directory through
``scalefinder.rundir.RunWriter``, shaped like one ``scalefinder run`` writes: a staged ramp at
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
  time within each hold above it, up to a bound of 100 jobs; CPU light. ``backlog="flat"``
  (a backlog that never drains nor grows) and ``backlog="growing"`` (growth at every rate)
  are the shapes the analyzer must not take for a job processor.

Everything is a pure function of the arguments (``seed`` included); no clock is read for the
data, so two calls with the same arguments give the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from scalefinder.rundir import RunWriter, iso_utc

KINDS = ("cpu", "memory", "retaining", "jvm", "workers", "waiting", "shared", "queue")
BACKLOG_SHAPES = ("saturating", "flat", "growing")
MAX_BACKLOG_JOBS = 100.0

# Ramp rates as fractions of the service capacity at the initial task count: six steps below
# capacity (enough for an exact Kendall test), one at 0.95 and the first breach at 1.1.
DEFAULT_RAMP = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.1)
DEFAULT_START_UNIX_S = 1_795_000_000.0  # 2026-11-18, a fixed instant so outputs are reproducible
SCALE_GAP_S = 6  # seconds between phases while tasks start or stop
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

EXPECTED = {
    "cpu": ("cpu_utilization", "cpu_bound", "cpu"),
    "memory": ("memory_utilization", "memory_bound", "memory"),
    "retaining": ("cpu_utilization", "memory_not_freed", "cpu"),
    "jvm": ("cpu_utilization", "gc_runtime", "cpu"),
    "workers": ("concurrency_per_task", "worker_based", "concurrency"),
    "waiting": ("concurrency_per_task", "waiting", "concurrency"),
    "shared": (None, "shared_bottleneck", "shared_downstream"),
    "queue": ("queue_backlog_per_task", "job_processor", "queue"),
}


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
) -> Path:
    """Write a synthetic run directory at ``path`` and return its path.

    ``steps`` are the ramp's offered rates as fractions of the service capacity at ``tasks``
    tasks (``tasks * capacity_per_task_rps``); the ramp stops after the first step that breaks
    the SLO, as the real experiment does. ``metrics`` limits the metrics written (default: all
    of ``UNITS``). ``generator_bound_from`` marks every step from that fraction of capacity up
    as limited by the load generator (achieved rate short, ``valid=false``). ``partial`` leaves
    the run as a hard kill would: status ``running``, cut in the middle of the replay phase,
    with the last line of ``metrics.csv`` cut short. ``backlog`` shapes the ``queue`` kind's
    queue (``BACKLOG_SHAPES``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {', '.join(KINDS)}")
    if backlog not in BACKLOG_SHAPES:
        raise ValueError(f"unknown backlog shape {backlog!r}; expected one of {', '.join(BACKLOG_SHAPES)}")
    model = _Model(kind, tasks, capacity_per_task_rps, backlog)
    rng = np.random.default_rng(seed)
    names = [m for m in (metrics or UNITS) if m in UNITS]
    plans = _plan(model, list(steps), hold_s, refine, replay, beyond, start_unix_s)
    cut_unix_s = _cut_time(plans) if partial else None

    writer = RunWriter.create(path, _manifest(model, seed, hold_s, warmup_s, start_unix_s))
    state = _State()
    phases: list[dict] = []
    metric_frames: list[pd.DataFrame] = []
    for plan in plans:
        if cut_unix_s is not None and plan.start_unix_s >= cut_unix_s:
            break
        _note_phase(writer, phases, plan)
        step_row, load_frame, metric_frame, crashes = _step(
            model, plan, warmup_s, state, names, rng, noise, generator_bound_from
        )
        finished = cut_unix_s is None or plan.start_unix_s + plan.hold_s <= cut_unix_s
        if not finished:
            load_frame = load_frame[load_frame["time_unix_s"] < cut_unix_s]
            metric_frame = metric_frame[metric_frame["time_unix_s"] < cut_unix_s]
        for row in load_frame.to_dict("records"):
            writer.append_load(row)
        metric_frames.append(metric_frame)
        writer.append_metrics(metric_frame.to_dict("records"))
        _write_step_events(writer, plan, crashes, step_row if finished else None)
        if finished:
            writer.append_step(step_row)
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

    def __init__(self, kind: str, tasks: int, capacity_per_task_rps: float, backlog: str = "saturating"):
        self.kind = kind
        self.backlog = backlog
        self.tasks = tasks
        self.capacity_per_task_rps = capacity_per_task_rps
        self.workers = 8
        self.service_s = self.workers / capacity_per_task_rps  # W workers, capacity W / S
        self.hold_mib = 4.0

    def service_capacity_rps(self, tasks: int) -> float:
        if self.kind == "shared":
            return self.tasks * self.capacity_per_task_rps  # fixed, whatever the task count
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

    def steady(self, metric: str, per_task_rps: float, rho: float, latency_s: float, served_total: float) -> float:
        """The level ``metric`` settles at for one task taking ``per_task_rps``."""
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
            if kind in ("cpu", "retaining", "jvm"):
                return 4.0 + 84.0 * load + 2.0 * min(over, 1.0)
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
                return 15.0 + 0.012 * served_total
            return 18.0
        raise KeyError(metric)


def _plan(model: _Model, ramp: list[float], hold_s: int, refine: bool, replay: bool, beyond: bool,
          start_unix_s: float) -> list[StepPlan]:
    n, capacity = model.tasks, model.service_capacity_rps(model.tasks)
    plans: list[StepPlan] = []
    clock = start_unix_s

    def add(phase: str, tasks: int, rate: float) -> None:
        nonlocal clock
        if plans and plans[-1].phase != phase:
            clock += SCALE_GAP_S
        plans.append(StepPlan(len(plans), phase, tasks, round(rate, 3), clock, hold_s))
        clock += hold_s

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
        for rate in good[-4:]:
            add("replay", 2 * n, rate)
    if beyond:
        rate = capacity * 1.2
        while rate <= capacity * 2.6:
            add("beyond", 2 * n, rate)
            if model.utilization(rate, 2 * n) > 1.0:
                break
            rate += capacity * 0.2
    return plans


def _manifest(model: _Model, seed: int, hold_s: int, warmup_s: int, start_unix_s: float) -> dict:
    metric, pattern, bottleneck = EXPECTED[model.kind]
    profile = {
        "name": f"synthetic-{model.kind}",
        "description": f"synthetic {model.kind} run (seed {seed})",
        "target": {"kind": "local", "archetype": model.kind, "cpu_units": 256, "memory_mib": 256},
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
            "params": {"synthetic": True, "seed": seed},
            "cpu_units": 256,
            "memory_mib": 256,
            # The same keys as loadgen.cluster.archetypes.ground_truth.
            "ground_truth": {
                "archetype": model.kind,
                "pattern": pattern,
                "bottleneck": bottleneck,
                "capacity_rps_per_task": model.capacity_per_task_rps,
                "expected_metric": metric,
                "expected_verdict": "recommended" if metric else "no_task_level_metric",
                "tasks": model.tasks,
            },
        },
        "slo": dict(SLO),
        "capacity": {"controller": "local", "original": {"tasks": model.tasks}, "initial_tasks": model.tasks},
        "sources": {"local": {"kind": "local", "interval_s": 1}},
        "generator": {"mode": "local", "workers": 0},
    }


def _step(model: _Model, plan: StepPlan, warmup_s: int, state: _State, names: list[str],
          rng: np.random.Generator, noise: float, generator_bound_from: float | None):
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
    for index, task in enumerate(ids):
        per_task = served / plan.tasks * shares[index]
        for metric in names:
            if metric == "running_task_count":
                continue
            values = _series(model, metric, task, per_task, rho, p95 / 1000.0, state, seconds, warmup_s,
                             rng, noise, crashes.get(task))
            frames.append(pd.DataFrame({"time_unix_s": times, "task": task, "metric": metric, "value": values}))
        state.served[task] = state.served.get(task, 0.0) + per_task * plan.hold_s
    per_task_frame = pd.concat(frames, ignore_index=True) if frames else _empty_metrics()
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


def _crash_plan(model: _Model, plan: StepPlan, rho: float, ids: list[str]) -> dict[str, float]:
    """Seconds into the hold at which each task dies: only memory tasks, only when overloaded."""
    if model.kind != "memory" or rho <= 1.0:
        return {}
    return {task: 6.0 + 2.0 * i for i, task in enumerate(ids)}


def _series(model: _Model, metric: str, task: str, per_task: float, rho: float, latency_s: float,
            state: _State, seconds: np.ndarray, warmup_s: int, rng: np.random.Generator, noise: float,
            crash_at: float | None) -> np.ndarray:
    served_before = state.served.get(task, 0.0)
    served_total = served_before + per_task * (seconds + 1.0)
    if model.kind == "retaining" and metric == "memory_utilization":
        target = np.array([model.steady(metric, per_task, rho, latency_s, s) for s in served_total])
    else:
        target = np.full(seconds.shape, model.steady(metric, per_task, rho, latency_s, served_before))
    key = (task, metric)
    previous = state.level.get(key, target[0])
    # Each hold starts with a transient from the previous level, the warm-up MSER must cut.
    settle = 1.0 - np.exp(-seconds / max(warmup_s / 2.5, 0.5))
    values = previous + (target - previous) * settle
    if metric == "memory_utilization" and crash_at is not None:
        values = np.where(seconds < crash_at, np.minimum(97.0 + 0.3 * seconds, 99.5), np.nan)
        restarted = seconds >= crash_at + 2.0
        values[restarted] = 30.0 + 5.0 * (seconds[restarted] - crash_at - 2.0) / max(seconds[-1], 1.0)
    values = values + _ar1(rng, len(seconds), NOISE_SD.get(metric, 0.0) * noise)
    if metric in ("cpu_utilization", "memory_utilization"):
        values = np.clip(values, 0.0, 100.0)
    values = np.maximum(values, 0.0)
    if crash_at is not None:
        gap = (seconds >= crash_at) & (seconds < crash_at + 2.0)
        values = np.where(gap, np.nan, values)  # no samples from a dead task
    state.level[key] = float(target[-1])
    return values


def _backlog(model: _Model, plan: StepPlan, state: _State, seconds: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """The shared queue's depth each second: it fills at the arrival rate and drains at the
    service's capacity, from where the last hold left it, within [0, MAX_BACKLOG_JOBS]."""
    key = ("", "queue_backlog")
    start = state.level.get(key, 0.0)
    if model.backlog == "flat":
        depth = np.full(seconds.shape, 6.0 * model.tasks)
    elif model.backlog == "growing":
        depth = start + 0.05 * plan.offered_rps * (seconds + 1.0)  # a leak of jobs at every rate
    else:
        net = plan.offered_rps - model.service_capacity_rps(plan.tasks)
        depth = np.clip(start + net * (seconds + 1.0), 0.0, MAX_BACKLOG_JOBS)
    state.level[key] = float(depth[-1])
    # Jobs arrive one by one: an empty queue shows a waiting job now and then.
    jitter = np.where(depth > 0, rng.normal(0.0, 1.0, len(seconds)), (rng.random(len(seconds)) < 0.05) * 1.0)
    return np.maximum(np.round(depth + jitter), 0.0)


def _ar1(rng: np.random.Generator, length: int, sd: float, phi: float = 0.5) -> np.ndarray:
    shocks = rng.normal(0.0, sd * np.sqrt(1.0 - phi**2), length)
    out = np.empty(length)
    level = rng.normal(0.0, sd)
    for i in range(length):  # short series (one hold); the recurrence has no closed vector form
        level = phi * level + shocks[i]
        out[i] = level
    return out


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


def _write_step_events(writer: RunWriter, plan: StepPlan, crashes: dict[str, float], step_row: dict | None) -> None:
    writer.event("step_start", step_id=plan.step_id, phase=plan.phase, offered_rps=plan.offered_rps,
                 **_when(plan.start_unix_s))
    for task, at in crashes.items():
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
