"""The service as one analyzed run measured it: metric and latency against load per task.

Nothing here is a queueing formula: both curves are interpolated between the run's own steps at
its initial task count. Between steps the curves are linear; below the lowest step they keep the
lowest step's value; beyond the highest step they keep the highest (a saturating metric stays
saturated, the latency stays past the knee). Above the measured capacity (the highest rate per
task that met the SLO) the SLO counts as broken, whatever the interpolated latency says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalefinder.analysis.findings import load_findings
from scalefinder.core.errors import InputError
from scalefinder.core.models import RAMP_PHASES
from scalefinder.core.rundir import RunDirectory

DEFAULT_START_DELAY_S = 60.0  # when the run never scaled up: a Fargate task's usual start


@dataclass(frozen=True)
class ServiceModel:
    metric: str
    metric_label: str
    unit: str
    target: float  # the analyzer's target, in the metric's unit
    initial_tasks: int
    capacity_per_task_rps: float  # highest rate per task that met the SLO
    target_rate_per_task_rps: float  # the rate per task at which the metric reads the target
    slo_latency_ms: float
    slo_percentile: float
    error_budget_pct: float
    availability_zones: int
    start_delay_s: float
    start_delay_source: str
    load_points: tuple[float, ...]  # rate per task of each measured point
    metric_points: tuple[float, ...]
    latency_load_points: tuple[float, ...]
    latency_points: tuple[float, ...]
    recommendation: dict[str, Any]

    def metric_at(self, per_task_rps: float) -> float:
        return float(np.interp(per_task_rps, self.load_points, self.metric_points))

    def p95_at(self, per_task_rps: float) -> float:
        return float(np.interp(per_task_rps, self.latency_load_points, self.latency_points))

    def breaches(self, per_task_rps: float) -> bool:
        return per_task_rps > self.capacity_per_task_rps * (1 + 1e-9)

    def tasks_needed(self, demand_rps: float) -> int:
        """The fewest tasks that keep every task within the measured capacity."""
        return max(1, math.ceil(demand_rps / self.capacity_per_task_rps - 1e-9))

    def describe(self) -> dict[str, Any]:
        return {"metric": self.metric, "unit": self.unit, "target": self.target,
                "initial_tasks": self.initial_tasks, "capacity_per_task_rps": self.capacity_per_task_rps,
                "target_rate_per_task_rps": self.target_rate_per_task_rps,
                "slo": {"percentile": self.slo_percentile, "latency_ms": self.slo_latency_ms,
                        "error_budget_pct": self.error_budget_pct},
                "availability_zones": self.availability_zones, "start_delay_s": self.start_delay_s,
                "start_delay_source": self.start_delay_source, "points": len(self.load_points)}


def load_model(run_path: str | Path) -> ServiceModel:
    """The model of an analyzed run directory (``scalefinder analyze`` writes what it reads)."""
    run = RunDirectory.open(run_path)
    findings = load_findings(run.path)
    recommendation = findings.get("recommendation")
    if findings.get("verdict") != "recommended" or not recommendation:
        raise InputError(f"{run.path} has no recommended policy to simulate (verdict {findings.get('verdict')}: "
                         f"{findings.get('headline')})")
    return model_from_findings(findings, measured_start_delay(run),
                               availability_zones=run.manifest.analysis_options.availability_zones)


def model_from_findings(findings: dict[str, Any], measured_delay: tuple[float, str] | None = None,
                        availability_zones: int = 1) -> ServiceModel:
    """The model of ``findings``; an ``InputError`` when they lack or garble what it needs."""
    try:
        return _model(findings, measured_delay, availability_zones)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"the findings cannot be simulated: a field is missing or damaged ({exc!r})") from None


def _model(findings: dict[str, Any], measured_delay: tuple[float, str] | None,
           availability_zones: int) -> ServiceModel:
    recommendation = findings["recommendation"]
    capacity = findings.get("capacity") or {}
    tasks = int(capacity.get("tasks") or 0)
    per_task = capacity.get("per_task_rps")
    if not tasks or not per_task:
        raise InputError("the findings give no capacity per task: the run cannot be simulated")
    metric = recommendation["metric"]
    entry = next((m for m in findings.get("metrics") or [] if m.get("name") == metric), None)
    if entry is None:
        raise InputError(f"the findings hold no step values of {metric}")
    load, values = _curve([(v["per_task_rps"], v["value"]) for v in entry.get("step_values") or []
                           if v.get("tasks") == tasks and v.get("phase") in RAMP_PHASES
                           and _finite(v.get("per_task_rps"), v.get("value"))])
    steps = [s for s in findings.get("steps") or [] if s.get("tasks") == tasks and s.get("phase") in RAMP_PHASES
             and s.get("valid") and _finite(s.get("achieved_rps"), s.get("p95_ms"))]
    latency_load, latency = _curve([(s["achieved_rps"] / tasks, s["p95_ms"]) for s in steps])
    if len(load) < 2 or len(latency_load) < 2:
        raise InputError("the run has fewer than two measured steps at its initial task count: nothing to interpolate")
    slo = capacity.get("slo") or {}
    delay, source = measured_delay or (DEFAULT_START_DELAY_S, "default: the run never scaled up")
    return ServiceModel(
        metric=metric, metric_label=recommendation.get("label") or metric, unit=recommendation.get("unit") or "",
        target=float(recommendation["target"]), initial_tasks=tasks, capacity_per_task_rps=float(per_task),
        target_rate_per_task_rps=float(recommendation.get("target_rate_per_task_rps") or per_task * 0.7),
        slo_latency_ms=float(slo.get("latency_ms") or 0), slo_percentile=float(slo.get("percentile") or 95),
        error_budget_pct=float(slo.get("error_budget_pct") or 1.0),
        availability_zones=max(1, int(availability_zones)),
        start_delay_s=float(delay), start_delay_source=source, load_points=load, metric_points=values,
        latency_load_points=latency_load, latency_points=latency, recommendation=recommendation)


def _curve(points: list[tuple[float, float]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Points sorted by load; repeated loads (a replayed or repeated step) averaged."""
    by_load: dict[float, list[float]] = {}
    for load, value in points:
        by_load.setdefault(round(float(load), 9), []).append(float(value))
    loads = sorted(by_load)
    return tuple(loads), tuple(float(np.mean(by_load[x])) for x in loads)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def measured_start_delay(run: RunDirectory) -> tuple[float, str] | None:
    """The longest scale-up of the run: from the end of the step before it to the scale event
    (the tasks serving). None when the run never scaled up."""
    last_step_end = None
    longest = None
    for event in run.events():
        moment = event.get("time_unix_s")
        if not isinstance(moment, (int, float)):
            continue
        if event.get("kind") == "step_end":
            last_step_end = float(moment)
        elif (event.get("kind") == "scale" and last_step_end is not None
              and isinstance(event.get("tasks"), int) and isinstance(event.get("previous_tasks"), int)
              and event["tasks"] > event["previous_tasks"] > 0):
            took = float(moment) - last_step_end
            longest = took if longest is None else max(longest, took)
    if longest is None:
        return None
    return max(longest, 0.0), "measured: the run's scale-up, from its last step to the new tasks serving"
