"""The clock: demand in, tasks and breaches out, in ticks of a few seconds.

Each tick offers the demand to the tasks that are serving; all serving tasks share it evenly
(a balancer's round robin), so each carries demand / serving. Per minute the ticks give the
metric's 1-minute datapoint (its mean), the share of the minute's requests served past the
measured capacity, and the minute's p95. A minute is in breach when more of its requests than
the SLO's percentile allows (5% for a p95) were served past capacity. The datapoint of a minute
reaches the policy one minute after the minute ends (CloudWatch's publication delay); a task
the policy adds serves after the start delay; a task it removes stops serving at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from scalefinder.analysis import policy as renderings
from scalefinder.analysis.simulation.demand import Demand
from scalefinder.analysis.simulation.model import ServiceModel
from scalefinder.analysis.simulation.policies import Policy
from scalefinder.core.errors import InputError

TICK_S = 5.0
PUBLISH_DELAY_MINUTES = 1
MAX_TASKS_FACTOR = 10  # default --max-tasks: ten times the minimum, as the rendered HPA


@dataclass(frozen=True)
class Bounds:
    min_tasks: int
    max_tasks: int
    start_delay_s: float

    def clamp(self, tasks: int) -> int:
        return max(self.min_tasks, min(self.max_tasks, tasks))


def default_bounds(model: ServiceModel, min_tasks: int | None = None, max_tasks: int | None = None,
                   start_delay_s: float | None = None) -> Bounds:
    """At least one task per Availability Zone and never fewer than the run started with."""
    low = min_tasks if min_tasks is not None else max(model.initial_tasks, model.availability_zones)
    high = max_tasks if max_tasks is not None else MAX_TASKS_FACTOR * low
    delay = model.start_delay_s if start_delay_s is None else start_delay_s
    if low < 1:
        raise InputError(f"--min-tasks must be at least 1, got {low}")
    if high < low:
        raise InputError(f"--max-tasks ({high}) is below --min-tasks ({low})")
    if not 0 <= delay <= 3600:
        raise InputError(f"--start-delay-s must be from 0 to 3600, got {delay:g}")
    return Bounds(low, high, float(delay))


@dataclass
class Minute:
    minute: int
    demand_rps: float
    tasks: int  # running at the end of the minute (serving and starting): what is paid for
    serving: int  # serving at the end of the minute
    metric: float  # the minute's datapoint, in the findings' unit
    p95_ms: float
    breached: bool

    def to_dict(self) -> dict[str, Any]:
        return {"minute": self.minute, "demand_rps": round(self.demand_rps, 3), "tasks": self.tasks,
                "serving": self.serving, "metric": round(self.metric, 3), "p95_ms": round(self.p95_ms, 1),
                "breached": self.breached}


@dataclass
class Simulation:
    demand: str
    policy: dict[str, Any]
    bounds: Bounds
    minutes: list[Minute] = field(default_factory=list)
    task_hours: float = 0.0
    ideal_task_hours: float = 0.0

    @property
    def breach_minutes(self) -> int:
        return sum(1 for m in self.minutes if m.breached)

    @property
    def first_breach_minute(self) -> int | None:
        return next((m.minute for m in self.minutes if m.breached), None)

    def summary(self) -> dict[str, Any]:
        over = self.task_hours / self.ideal_task_hours - 1 if self.ideal_task_hours else None
        return {"minutes": len(self.minutes), "breach_minutes": self.breach_minutes,
                "first_breach_minute": self.first_breach_minute, "task_hours": round(self.task_hours, 3),
                "ideal_task_hours": round(self.ideal_task_hours, 3),
                "overprovisioning": None if over is None else round(over, 3),
                "peak_tasks": max((m.tasks for m in self.minutes), default=0)}


def settled_tasks(model: ServiceModel, demand: Demand, bounds: Bounds, target: float) -> int:
    """Where a policy with ``target`` (the findings' unit) has settled before the curve starts:
    the fewest tasks that keep the metric at or under the target at the first minute's demand.
    Starting each target from its own settled count keeps the first minutes of a sweep free of
    a catch-up that only reflects where the simulation began."""
    first = demand.rate(0.0)
    for tasks in range(bounds.min_tasks, bounds.max_tasks + 1):
        if model.metric_at(first / tasks) <= target:
            return tasks
    return bounds.max_tasks


def simulate(model: ServiceModel, demand: Demand, policy: Policy, bounds: Bounds, start_tasks: int) -> Simulation:
    ticks_per_minute = int(round(60 / TICK_S))
    desired = bounds.clamp(start_tasks)
    starting: list[float] = []  # when each task being started will serve (seconds)
    serving = desired
    result = Simulation(demand.name, policy.describe(), bounds)
    datapoints: list[float] = []  # published, in AWS's unit
    pending: list[float] = []  # minutes measured but not yet published
    for minute in range(demand.minutes):
        requests = breached = metric_sum = 0.0
        tick_p95: list[tuple[float, float]] = []
        for tick in range(ticks_per_minute):
            now = (minute * ticks_per_minute + tick) * TICK_S
            ready = [t for t in starting if t <= now]
            if ready:
                serving += len(ready)
                starting = [t for t in starting if t > now]
            rate = demand.rate((now + TICK_S / 2) / 60.0)
            per_task = rate / serving
            metric_sum += model.metric_at(per_task)
            count = rate * TICK_S
            requests += count
            if model.breaches(per_task):
                breached += count
            tick_p95.append((model.p95_at(per_task), count))
            result.task_hours += (serving + len(starting)) * TICK_S / 3600
            result.ideal_task_hours += bounds.clamp(model.tasks_needed(rate)) * TICK_S / 3600
        metric = metric_sum / ticks_per_minute
        allowed = (100 - model.slo_percentile) / 100
        result.minutes.append(Minute(minute, requests / 60, serving + len(starting), serving, metric,
                                     _weighted_percentile(tick_p95, model.slo_percentile),
                                     requests > 0 and breached / requests > allowed))
        pending.append(renderings.aws_target(model.metric, metric))
        if len(pending) > PUBLISH_DELAY_MINUTES:
            datapoints.append(pending.pop(0))
            end = (minute + 1) * 60.0
            wanted = policy.decide(end, datapoints, desired)
            if wanted is not None:
                wanted = bounds.clamp(wanted)
                if wanted > desired:
                    starting.extend([end + bounds.start_delay_s] * (wanted - desired))
                elif wanted < desired:
                    serving, starting = _stop(serving, starting, desired - wanted)
                desired = wanted
    return result


def _stop(serving: int, starting: list[float], count: int) -> tuple[int, list[float]]:
    """ECS stops tasks that have not started yet first, then serving ones."""
    starting = sorted(starting)
    while count and starting:
        starting.pop()
        count -= 1
    return serving - count, starting


def _weighted_percentile(values: list[tuple[float, float]], percentile: float) -> float:
    """The percentile of the ticks' p95, each tick weighted by its requests: the minute's p95
    when the requests of a tick share its latency."""
    ordered = sorted(values)
    weights = np.array([w for _, w in ordered], dtype=float)
    if not len(ordered) or not weights.sum():
        return 0.0
    cumulative = np.cumsum(weights) / weights.sum()
    index = min(int(np.searchsorted(cumulative, percentile / 100)), len(ordered) - 1)
    return float(ordered[index][0])


def sweep(model: ServiceModel, demand: Demand, targets: list[float], bounds: Bounds,
          make_policy: Callable[[float], Policy]) -> dict[str, Any]:
    """One simulation per target; the best is the cheapest target whose breach minutes stay
    within the SLO's error budget (a share of the minutes), the highest target on a tie."""
    rows = []
    for target in targets:
        run = simulate(model, demand, make_policy(target), bounds, settled_tasks(model, demand, bounds, target))
        rows.append({"target": target, "breach_minutes": run.breach_minutes,
                     "task_hours": round(run.task_hours, 3)})
    budget = math.floor(model.error_budget_pct / 100 * demand.minutes)
    within = [r for r in rows if r["breach_minutes"] <= budget]
    best = min(within, key=lambda r: (r["task_hours"], -r["target"])) if within else None
    return {"sweep": rows, "allowed_breach_minutes": budget, "best": best,
            "analyzer_target": model.target}


def parse_sweep(text: str) -> list[float]:
    """``50:85:5`` -> 50, 55, ..., 85."""
    try:
        low, high, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise InputError(f"--sweep takes LOW:HIGH:STEP, e.g. 50:85:5; got {text!r}") from None
    if not (step > 0 and high >= low > 0):
        raise InputError(f"--sweep {text}: needs 0 < LOW <= HIGH and STEP > 0")
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    if count > 200:
        raise InputError(f"--sweep {text} gives {count} targets; at most 200")
    return [round(low + i * step, 6) for i in range(count)]
