"""Scaling policies with Application Auto Scaling's semantics, deciding from 1-minute datapoints.

Both policies read the metric in AWS's unit (``policy.aws_target``: percent for CPU and memory,
requests per target per minute for the load balancer's count) and return a new desired task
count, or None to leave it. What each rule follows, and where AWS's behaviour is not documented
exactly, is in ``docs/simulate.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from scalefinder.analysis import policy as renderings, recommend
from scalefinder.analysis.deployment import AwsNames

# The alarms Application Auto Scaling creates for a target tracking policy: scale out after 3
# consecutive 1-minute datapoints above the target, scale in after 15 below 90% of it.
TRACKING_OUT_DATAPOINTS = 3
TRACKING_IN_DATAPOINTS = 15
TRACKING_IN_SHARE = 0.9


class Policy(Protocol):
    name: str

    def decide(self, now_s: float, datapoints: list[float], desired: int) -> int | None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class TargetTracking:
    target: float  # AWS's unit
    scale_out_cooldown_s: float = renderings.SCALE_OUT_COOLDOWN_S
    scale_in_cooldown_s: float = renderings.SCALE_IN_COOLDOWN_S
    disable_scale_in: bool = False
    name: str = "target-tracking"
    _last_out: float = field(default=-math.inf, repr=False)
    _last_in: float = field(default=-math.inf, repr=False)

    @classmethod
    def from_request(cls, request: dict[str, Any], target: float | None = None) -> "TargetTracking":
        config = request["TargetTrackingScalingPolicyConfiguration"]
        return cls(target=float(config["TargetValue"] if target is None else target),
                   scale_out_cooldown_s=float(config.get("ScaleOutCooldown", renderings.SCALE_OUT_COOLDOWN_S)),
                   scale_in_cooldown_s=float(config.get("ScaleInCooldown", renderings.SCALE_IN_COOLDOWN_S)),
                   disable_scale_in=bool(config.get("DisableScaleIn", False)))

    def decide(self, now_s: float, datapoints: list[float], desired: int) -> int | None:
        latest = datapoints[-TRACKING_OUT_DATAPOINTS:]
        if len(latest) == TRACKING_OUT_DATAPOINTS and all(v > self.target for v in latest):
            if now_s - self._last_out < self.scale_out_cooldown_s:
                return None  # waiting for the previous scale-out to take effect
            wanted = math.ceil(desired * datapoints[-1] / self.target - 1e-9)
            if wanted > desired:
                self._last_out = now_s
                return wanted
            return None
        low = datapoints[-TRACKING_IN_DATAPOINTS:]
        if (self.disable_scale_in or len(low) < TRACKING_IN_DATAPOINTS
                or not all(v < TRACKING_IN_SHARE * self.target for v in low)):
            return None
        if now_s - self._last_out < self.scale_out_cooldown_s or now_s - self._last_in < self.scale_in_cooldown_s:
            return None
        wanted = math.ceil(desired * datapoints[-1] / self.target - 1e-9)
        if wanted < desired:
            self._last_in = now_s
            return wanted
        return None

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "target_value": self.target,
                "scale_out": f"{TRACKING_OUT_DATAPOINTS} of {TRACKING_OUT_DATAPOINTS} datapoints > {self.target:g}",
                "scale_in": f"{TRACKING_IN_DATAPOINTS} of {TRACKING_IN_DATAPOINTS} datapoints < "
                            f"{TRACKING_IN_SHARE * self.target:g}" + (" (disabled)" if self.disable_scale_in else ""),
                "scale_out_cooldown_s": self.scale_out_cooldown_s, "scale_in_cooldown_s": self.scale_in_cooldown_s}


@dataclass(frozen=True)
class _Alarm:
    threshold: float
    at_or_above: bool  # GreaterThanOrEqualToThreshold, else LessThanThreshold
    evaluation_periods: int
    datapoints_to_alarm: int

    @classmethod
    def from_request(cls, alarm: dict[str, Any]) -> "_Alarm":
        operator = alarm["ComparisonOperator"]
        if operator not in ("GreaterThanOrEqualToThreshold", "LessThanThreshold"):
            raise ValueError(f"alarm operator {operator} is not one the renderings use")
        return cls(float(alarm["Threshold"]), operator == "GreaterThanOrEqualToThreshold",
                   int(alarm["EvaluationPeriods"]), int(alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"])))

    def in_alarm(self, datapoints: list[float]) -> bool:
        window = datapoints[-self.evaluation_periods:]
        if len(window) < self.evaluation_periods:
            return False
        breaching = sum(1 for v in window if (v >= self.threshold if self.at_or_above else v < self.threshold))
        return breaching >= self.datapoints_to_alarm


@dataclass
class StepScaling:
    """The two step policies and their two alarms, as ``analysis.policy`` renders them."""

    out_alarm: _Alarm
    in_alarm: _Alarm
    out_steps: list[tuple[float, float, int]]  # (lower, upper, percent) offsets from the out threshold
    in_percent: int
    min_magnitude: int
    out_cooldown_s: float
    in_cooldown_s: float
    name: str = "step"
    _last_out: float = field(default=-math.inf, repr=False)
    _last_in: float = field(default=-math.inf, repr=False)

    @classmethod
    def from_recommendation(cls, metric: str, step: dict[str, Any]) -> "StepScaling":
        names = AwsNames()
        aws = renderings.aws_metric(metric)
        scale_out, scale_in = renderings.step_scaling_requests(metric, step, names)
        alarms = [renderings.alarm_request(metric, aws, step, names, out=out) for out in (True, False)]
        out_config = scale_out["StepScalingPolicyConfiguration"]
        in_config = scale_in["StepScalingPolicyConfiguration"]
        steps = [(float(item.get("MetricIntervalLowerBound", -math.inf)),
                  float(item.get("MetricIntervalUpperBound", math.inf)), int(item["ScalingAdjustment"]))
                 for item in out_config["StepAdjustments"]]
        return cls(_Alarm.from_request(alarms[0]), _Alarm.from_request(alarms[1]), steps,
                   int(in_config["StepAdjustments"][0]["ScalingAdjustment"]), int(out_config["MinAdjustmentMagnitude"]),
                   float(out_config["Cooldown"]), float(in_config["Cooldown"]))

    @classmethod
    def for_target(cls, metric: str, target: float, saturation: float, digits: int = 1) -> "StepScaling":
        return cls.from_recommendation(metric, recommend.step_thresholds(target, saturation, digits))

    def _change(self, desired: int, percent: int) -> int:
        """PercentChangeInCapacity: a fraction of a task rounds away from zero, more than one
        task rounds towards zero, and at least MinAdjustmentMagnitude tasks change."""
        raw = desired * percent / 100.0
        magnitude = 1 if 0 < abs(raw) < 1 else int(abs(raw))
        return int(math.copysign(max(magnitude, self.min_magnitude), percent))

    def decide(self, now_s: float, datapoints: list[float], desired: int) -> int | None:
        if self.out_alarm.in_alarm(datapoints):
            if now_s - self._last_out < self.out_cooldown_s:
                return None
            breach = datapoints[-1] - self.out_alarm.threshold
            for lower, upper, percent in self.out_steps:
                if lower <= breach < upper:
                    self._last_out = now_s
                    return desired + self._change(desired, percent)
            return None
        if self.in_alarm.in_alarm(datapoints):
            if now_s - self._last_in < self.in_cooldown_s or now_s - self._last_out < self.out_cooldown_s:
                return None
            self._last_in = now_s
            return desired + self._change(desired, self.in_percent)
        return None

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "scale_out_threshold": self.out_alarm.threshold,
                "scale_out": f"{self.out_alarm.datapoints_to_alarm} of {self.out_alarm.evaluation_periods} datapoints "
                             f">= {self.out_alarm.threshold:g}; steps "
                             + ", ".join(f"+{p}% from +{lo:g}" for lo, _, p in self.out_steps),
                "scale_in": f"{self.in_alarm.datapoints_to_alarm} of {self.in_alarm.evaluation_periods} datapoints "
                            f"< {self.in_alarm.threshold:g}: {self.in_percent}%",
                "scale_out_cooldown_s": self.out_cooldown_s, "scale_in_cooldown_s": self.in_cooldown_s}
