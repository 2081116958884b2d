"""The recommendation: target value with its interval, step thresholds, capacity and task count.

The target comes from the fitted relation between the metric and the request rate per task,
over the steps below saturation (both task counts: a proportional metric lies on one line
against rate per task), evaluated at ``headroom x capacity``. It is then capped twice: below the
value measured at the highest step that met the SLO, and so that ``target x 1.1`` stays below
the saturation value, because target tracking tolerates about 10% before it acts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scalefinder.analysis import policy
from scalefinder.analysis.classify import label
from scalefinder.analysis.deployment import Deployment
from scalefinder.analysis.properties import PASS
from scalefinder.core.models import Recommendation

TRACKING_TOLERANCE = 1.1


SLO_CAPACITY = ("highest offered rate that met the SLO below the first rate that broke it, at the initial task "
                "count; interval: [last good, first bad]")
QUEUE_CAPACITY = ("highest offered rate that met the SLO with the queue empty, below the rate from which the queue "
                  "overflows, at the initial task count; interval: [last empty, first overflowing]")


def capacity(knee, tasks: int, slo: dict[str, Any], doubling: dict[str, Any], options,
             method: str = SLO_CAPACITY) -> dict[str, Any]:
    out: dict[str, Any] = {"per_task_rps": None, "per_task_rps_interval": None, "service_rps": None, "tasks": tasks,
                           "method": method, "slo": slo, "doubling": doubling, "tasks_for_peak": None}
    if knee is None or knee.last_good_rps is None:
        return out
    served = knee.served_rps
    per_task = served / tasks
    high = (knee.slo_breach_rps / tasks) if knee.slo_breach_rps else None
    out.update(per_task_rps=round(per_task, 3), service_rps=round(served, 3),
               per_task_rps_interval=[round(per_task, 3), round(high, 3) if high else None])
    if options.peak_rps:
        measured = doubling.get("per_task_rps_at_second") if doubling.get("verdict") == "partial" else None
        out["tasks_for_peak"] = tasks_for_peak(options.peak_rps, measured or per_task, options.headroom,
                                               options.availability_zones)
        if measured:
            # Capacity grew less than the tasks did: size with what a task carried among twice as
            # many, and say that a larger fleet may carry less still.
            out["tasks_for_peak"]["scaling"] = "partial"
            out["tasks_for_peak"]["formula"] += (
                f"; capacity per task measured at {doubling.get('tasks')} tasks ({measured:.3g} req/s, not "
                f"{per_task:.3g}), because capacity grew only {doubling.get('ratio')}x with the task count; "
                "beyond that count each task may add less still: check with a run at the peak's task count")
    return out


def tasks_for_peak(peak_rps: float, per_task_rps: float, headroom: float, zones: int) -> dict[str, Any]:
    """Tasks to serve ``peak_rps`` at the target utilization, surviving the loss of one zone."""
    running = math.ceil(peak_rps / (per_task_rps * headroom))
    factor = zones / (zones - 1) if zones > 1 else 1.0
    total = math.ceil(running * factor - 1e-9)
    formula = (f"ceil({peak_rps:g} / ({per_task_rps:.3g} x {headroom:g})) = {running}; "
               f"x {zones}/{zones - 1} for the loss of one of {zones} zones = {total}" if zones > 1 else
               f"ceil({peak_rps:g} / ({per_task_rps:.3g} x {headroom:g})) = {running} (one zone: no zone spare)")
    return {"peak_rps": peak_rps, "availability_zones": zones, "tasks": total, "tasks_without_zone_spare": running,
            "formula": formula}


def recommendation(metric: str, data, tests, knee, tasks: int, options, decision,
                   deployment: Deployment | None = None) -> Recommendation | None:
    if knee is None or knee.last_good_rps is None:
        return None
    capacity_per_task = knee.served_rps / tasks
    below = data.steps[data.steps["valid"] & data.steps["slo_ok"]
                       & (data.steps["per_task_rps"] <= capacity_per_task * 1.001 + 1e-9)]
    # The knee bends some metrics (concurrency rises steeply just below capacity); the line is
    # fitted below 95% of capacity when that leaves enough steps.
    linear = below[below["per_task_rps"] <= 0.95 * capacity_per_task]
    below = linear if len(linear) >= 3 else below
    if len(below) < 3:
        return None
    at = options.headroom * capacity_per_task
    x, y = below["per_task_rps"].to_numpy(float), below["value"].to_numpy(float)
    point, low, high = _predict(x, y, at)
    # The capacity itself is only known to lie in [last good, first bad]: the interval of the
    # target spans the fitted line's interval over that whole bracket, not at one end only.
    breach_per_task = (knee.slo_breach_rps / tasks) if knee.slo_breach_rps else None
    if breach_per_task and breach_per_task > capacity_per_task:
        _, _, high = _predict(x, y, options.headroom * breach_per_task)
    good_row = data.steps[data.steps["step_id"] == knee.last_good_step]
    good_value = float(good_row["value"].iloc[0]) if len(good_row) else None
    saturation_value = _saturation_value(data, tests)
    ceiling = min(v for v in (good_value, saturation_value / TRACKING_TOLERANCE if saturation_value else None)
                  if v is not None) if (good_value or saturation_value) else None
    capped = ceiling is not None and point > ceiling
    fitted = {"target": round(point, 3), "interval": [round(low, 3), round(high, 3)]}
    if ceiling is not None:
        point, low, high = min(point, ceiling), min(low, ceiling), min(high, ceiling)
    baseline = tests["proportionality"].extra.get("baseline") or float(np.min(below["value"]))
    if point <= baseline:
        return None
    digits = 1 if (data.info.unit or "") == "percent" else 2
    target, interval = round(point, digits), [round(low, digits), round(high, digits)]
    unit = data.info.unit or ""
    aws = policy.aws_metric(metric, deployment)
    step = step_thresholds(target, saturation_value or good_value or target * 1.3, digits)
    if policy.target_problem(metric, target):
        return None  # a utilization target outside (0, 100] is a unit mistake upstream, never a policy
    return Recommendation(
        metric=metric, label=label(metric), target=target, target_interval=(interval[0], interval[1]), unit=unit,
        headroom=options.headroom, target_rate_per_task_rps=round(at, 3),
        saturation_value=round(saturation_value, digits) if saturation_value else None,
        value_at_capacity=round(good_value, digits) if good_value is not None else None,
        capped=capped,
        fitted=fitted,
        method=(f"fitted line of {_lower(label(metric))} against rate per task over {len(below)} steps below "
                f"saturation, at {options.headroom:g} x {capacity_per_task:.3g} req/s per task; interval: the "
                "95% interval of the fitted mean over headroom x the capacity's interval [last good, first "
                f"bad]; kept below the value at capacity and below saturation / {TRACKING_TOLERANCE}"),
        aws_metric=aws,
        aws_target_value=policy.aws_target(metric, target),
        step_scaling=step,
        policies=policy.render_all(metric, target, step, aws, deployment),
        pattern=decision.pattern["name"],
    )


def backlog_recommendation(metric: str, data, knee, tasks: int, options, decision,
                           slo: dict[str, Any], deployment: Deployment | None = None) -> Recommendation | None:
    """Acceptable backlog per task, after AWS's guidance for scaling on an SQS queue: the jobs one
    task can finish within the acceptable latency, capacity per task x (latency_ms / 1000),
    times the headroom. The interval carries the capacity's own interval [last good, first bad]."""
    if knee is None or knee.last_good_rps is None:
        return None
    capacity_per_task = knee.served_rps / tasks
    latency_s = slo["latency_ms"] / 1000.0
    high_rate = (knee.slo_breach_rps / tasks) if knee.slo_breach_rps else capacity_per_task
    target = round(capacity_per_task * latency_s * options.headroom, 2)
    if target <= 0:
        return None
    interval = [target, round(high_rate * latency_s * options.headroom, 2)]
    at_capacity = capacity_per_task * latency_s  # the backlog one task clears in exactly the acceptable latency
    good_row = data.steps[data.steps["step_id"] == knee.last_good_step]
    aws = policy.aws_metric(metric, deployment)
    step = step_thresholds(target, at_capacity, 2)
    return Recommendation(
        metric=metric, label=label(metric), target=target, target_interval=(interval[0], interval[1]),
        unit=data.info.unit or "", headroom=options.headroom,
        target_rate_per_task_rps=round(options.headroom * capacity_per_task, 3),
        saturation_value=round(at_capacity, 2),
        value_at_capacity=round(float(good_row["value"].iloc[0]), 2) if len(good_row) else None,
        capped=False,
        fitted=None,
        method=(f"acceptable backlog per task = capacity per task x acceptable latency x headroom = "
                f"{capacity_per_task:.3g} jobs/s x {latency_s:g} s x {options.headroom:g} = {target:g} jobs; "
                "interval from the capacity interval [last good, first bad]"),
        aws_metric=aws,
        aws_target_value=policy.aws_target(metric, target),
        step_scaling=step,
        policies=policy.render_all(metric, target, step, aws, deployment),
        pattern=decision.pattern["name"],
    )


def _predict(x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, float, float]:
    import statsmodels.api as sm

    fit = sm.OLS(y, sm.add_constant(x)).fit()
    frame = fit.get_prediction(np.array([[1.0, at]])).summary_frame(alpha=0.05)
    return float(frame["mean"].iloc[0]), float(frame["mean_ci_lower"].iloc[0]), float(frame["mean_ci_upper"].iloc[0])


def _saturation_value(data, tests) -> float | None:
    sat, crash = tests["saturation"], tests["crash_at_limit"]
    if crash.verdict == PASS and data.info.limit:
        return float(data.info.limit)
    if sat.verdict == PASS:
        key = "plateau_value" if sat.extra.get("kind") == "plateau" else "peak"
        return float(sat.extra.get(key) or 0.0) or None
    return float(data.info.limit) if data.info.limit else None


def step_thresholds(target: float, saturation: float, digits: int) -> dict[str, Any]:
    """Step scaling as the faster alternative: add more capacity the further past the target.

    Scale out from the target: +10% of the tasks up to half way to saturation, +30% up to
    saturation, +50% beyond. Scale in by 10% below 70% of the target, so the two alarms leave
    a dead band and do not flap.
    """
    middle = target + max(saturation - target, 0.0) / 2
    return {
        "adjustment_type": "PercentChangeInCapacity",
        "scale_out_threshold": round(target, digits),
        "thresholds": [round(target, digits), round(middle, digits), round(max(saturation, middle), digits)],
        "adjustments": [10, 30, 50],
        "scale_in_threshold": round(0.7 * target, digits),
        "scale_in_adjustment": -10,
        "min_adjustment_magnitude": 1,
    }


def headline(verdict: str, recommendation: Recommendation | None, capacity: dict[str, Any], decision,
             reasons: list[str]) -> str:
    per_task = capacity.get("per_task_rps")
    rate = f"capacity {per_task:.3g} req/s per task" if per_task else "capacity unknown"
    if verdict == "recommended" and recommendation:
        low, high = recommendation.target_interval
        unit = "%" if recommendation.unit == "percent" else f" {recommendation.unit}"
        tied = [label(name) for name in decision.bottleneck.get("tied_with") or []]
        tie = f" (tied with {_lower(', '.join(tied))}, which ran out at the same load: watch both)" if tied else ""
        doubling = capacity.get("doubling") or {}
        partial = (f" Capacity grew only {doubling['ratio']:.2f}x with {doubling.get('tasks')} tasks: part of the "
                   "limit is shared, so more tasks add less than their share."
                   if doubling.get("verdict") == "partial" and doubling.get("ratio") else "")
        return (f"Scale on {_lower(recommendation.label)} at {recommendation.target:g}{unit} "
                f"(interval {low:g}–{high:g}{unit}){tie}; {rate}.{partial}")
    if verdict == "no_task_level_metric":
        return f"No task-level metric can scale this service: {decision.pattern['evidence'][0]}; {rate} at the initial task count."
    first = reasons[0] if reasons else "the data cannot support an answer"
    return f"Inconclusive: {first}."


def _lower(text: str) -> str:
    """Lower-case the first letter only, so acronyms (CPU) survive inside a sentence."""
    return text[:1].lower() + text[1:]
