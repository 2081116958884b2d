"""Is a metric with a known limit reported in the unit its limit is in?

CPU and memory utilization are percent of the task's reservation, limit 100. Two mistakes in a
source give numbers that look plausible to every other test and end up as a scaling target
AWS reads in percent:

* percent of one vCPU on a task of several vCPUs (``docker stats``, cAdvisor rates times 100,
  some agents): 0-400 on a 4-vCPU task. A fitted target of 251 passes every statistical test
  and is meaningless as ``ECSServiceAverageCPUUtilization``.
* a fraction (0-1) instead of percent: the same test passes with a target of 0.6, which AWS
  reads as 0.6%, so the service would scale out at once and never back in.

Neither can be repaired by guessing a factor, so the check only says what it sees; the caller
leaves the metric out of the recommendation with that reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scalefinder.core import catalog
from scalefinder.core.models import RunManifest

# A hard limit is not exact: a small CFS quota can be overrun by a scheduler slice per period,
# and a reading's interval never lines up with the quota's. A demo run on a 0.125-vCPU cgroup-v1
# quota had step values up to 105% and single per-task samples up to 121% at saturation. The
# smallest unit mistake, percent of one vCPU on a 2-vCPU task, reads 200% there, so the line
# sits at 125%: it never calls a saturated, correctly reported task a unit mistake.
ABOVE_LIMIT_TOLERANCE = 1.25
# A fraction is at most 1. It is "clearly varying" when it moves by at least 5 percentage
# points' worth (0.05): a percent series that stays within 0-1% with that spread is a resource
# almost idle at every load, on which no target could be set either.
FRACTION_MAX = 1.0
FRACTION_MIN_SPREAD = 0.05
CPU_UNITS_PER_VCPU = 1024


def check_units(name: str, info: catalog.MetricInfo, values: Any, cpu_units: int | None = None) -> str | None:
    """A problem with the unit of ``name``'s values, in one sentence, or None when they fit.

    ``values`` are the metric's readings at service level, best one value per step (the steady
    step values; single raw samples overshoot more); ``cpu_units`` the task's CPU reservation
    when known (1024 units a vCPU). Only metrics with a known ``info.limit`` are checked.
    """
    if info.limit is None or info.limit <= 0:
        return None
    array = np.asarray(values, dtype=float).ravel()
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    low, high = float(array.min()), float(array.max())
    limit = float(info.limit)
    observed = f"observed {_fmt(low)} to {_fmt(high)}"
    percent = (info.unit or "") == "percent"
    if high > ABOVE_LIMIT_TOLERANCE * limit:
        return f"{name} is reported above its limit of {_fmt(limit)}{'%' if percent else ''} ({observed}): " \
               + _above_limit_reason(name, high, limit, cpu_units)
    if percent and high <= FRACTION_MAX and high - low >= FRACTION_MIN_SPREAD:
        return (f"{name} looks like a fraction, not percent ({observed}, all at most {_fmt(FRACTION_MAX)} while "
                f"its limit is {_fmt(limit)}%): read as percent it would never pass 1%; report it times 100")
    return None


def cpu_units_from_manifest(manifest: RunManifest) -> int | None:
    """The task's CPU reservation as a run recorded it: the local target's ``cpu_units``, else the
    task definition a metric source described (``task_cpu_units``)."""
    candidates = [manifest.target.get("cpu_units")]
    for described in manifest.sources.values():
        if isinstance(described, dict):
            candidates.append(described.get("task_cpu_units"))
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def _above_limit_reason(name: str, high: float, limit: float, cpu_units: int | None) -> str:
    if name != catalog.CPU_UTILIZATION:
        return "it is not a percentage of the task's reservation (another unit, or a soft reservation); " \
               "no scaling target can be set on it"
    if cpu_units:
        vcpus = cpu_units / CPU_UNITS_PER_VCPU
        if vcpus > 1 and high <= ABOVE_LIMIT_TOLERANCE * limit * vcpus:
            return (f"looks like percent of one vCPU on a task of {_fmt(vcpus)} vCPUs ({cpu_units} CPU units), "
                    f"where the whole task is {_fmt(limit * vcpus)}; divide it by {_fmt(vcpus)}")
        # A task whose reservation is not a hard limit (ECS on EC2 without a task-level CPU
        # limit, or a local cluster that could not enforce it) can use more than it reserves.
        return (f"more than the task's {_fmt(vcpus)} vCPU(s) ({cpu_units} CPU units) explain, so the task used more "
                "CPU than it reserves (a reservation not enforced as a limit) or the value is not a percentage "
                "of the reservation; no target on it can be met")
    least = math.ceil(high / (ABOVE_LIMIT_TOLERANCE * limit))
    return (f"looks like percent of one vCPU on a task of at least {least} vCPUs (the task's CPU units were "
            "not recorded); divide it by the task's vCPUs")


def _fmt(value: float) -> str:
    return f"{value:.3g}"
