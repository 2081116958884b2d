"""The recommended policy beside two alternatives on one demand curve: what the report shows."""

from __future__ import annotations

from dataclasses import dataclass

from scalefinder.analysis.simulation import demand as demands
from scalefinder.analysis.simulation.model import ServiceModel
from scalefinder.analysis.simulation.policies import Policy, StepScaling, TargetTracking
from scalefinder.analysis.simulation.simulator import Bounds, Simulation, default_bounds, settled_tasks, simulate
from scalefinder.analysis import policy as renderings
from scalefinder.core.errors import InputError

REPORT_CURVE = "spike"  # the curve a target is most often chosen to survive
LOWER_TARGET_SHARE = 0.8  # the cautious alternative: tracking 80% of the recommended target


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    target: float  # in the findings' unit
    simulation: Simulation


def policy_for(model: ServiceModel, kind: str, target: float | None) -> Policy:
    """``target`` in the findings' unit; None: the analyzer's own, as rendered."""
    try:
        return _policy(model, kind, target)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"the findings' {kind} policy cannot be simulated: a field is missing or damaged "
                         f"({exc!r})") from None


def _policy(model: ServiceModel, kind: str, target: float | None) -> Policy:
    recommendation = model.recommendation
    if kind == "step":
        if target is None and recommendation.get("step_scaling"):
            return StepScaling.from_recommendation(model.metric, recommendation["step_scaling"])
        saturation = float(recommendation.get("saturation_value") or model.metric_points[-1])
        return StepScaling.for_target(model.metric, model.target if target is None else target, saturation)
    request = ((recommendation.get("policies") or {}).get("target_tracking") or {}).get("api_request")
    aws_value = None if target is None else renderings.aws_target(model.metric, target)
    if request:
        return TargetTracking.from_request(request, aws_value)
    return TargetTracking(renderings.aws_target(model.metric, model.target) if aws_value is None else aws_value)


def compare(model: ServiceModel, curve: str = REPORT_CURVE,
            bounds: Bounds | None = None) -> tuple[demands.Demand, Bounds, list[Scenario]]:
    bounds = bounds or default_bounds(model)
    demand = demands.built_in(curve, bounds.min_tasks * model.target_rate_per_task_rps)
    lower = round(LOWER_TARGET_SHARE * model.target, 1)
    unit = "%" if model.unit == "percent" else f" {model.unit}"
    plans = [("recommended", f"target tracking at {model.target:g}{unit} (recommended)", "target-tracking", None,
              model.target),
             ("step", "step scaling, as rendered", "step", None, model.target),
             ("lower", f"target tracking at {lower:g}{unit}", "target-tracking", lower, lower)]
    scenarios = [Scenario(key, label, value,
                          simulate(model, demand, policy_for(model, kind, target), bounds,
                                   settled_tasks(model, demand, bounds, value)))
                 for key, label, kind, target, value in plans]
    return demand, bounds, scenarios
