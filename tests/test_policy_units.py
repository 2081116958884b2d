"""Every number in a rendered policy is in the unit of the metric AWS evaluates."""

from __future__ import annotations

import json
import re

import pytest

from scalefinder.analysis import policy, recommend
from scalefinder.core import catalog


def _render(metric, target, saturation, digits=2):
    step = recommend.step_thresholds(target, saturation, digits)
    return step, policy.render_all(metric, target, step, policy.aws_metric(metric))  # validates every request


def _bounds(adjustments):
    return [(a.get("MetricIntervalLowerBound"), a.get("MetricIntervalUpperBound"), a["ScalingAdjustment"])
            for a in adjustments]


PER_MINUTE = [(0.0, 300.0, 10), (300.0, 600.0, 30), (600.0, None, 50)]


@pytest.fixture(scope="module")
def alb():
    # 10 req/s per task at the target, saturation at 20: thresholds 10, 15, 20 req/s = 600, 900, 1200 a minute
    return _render(catalog.REQUESTS_PER_TASK, 10.0, 20.0)


def test_alb_step_bounds_are_per_minute_like_the_alarm(alb):
    step, rendered = alb
    assert step["thresholds"] == [10.0, 15.0, 20.0]  # scalefinder's own unit is unchanged
    steps = rendered["step_scaling"]
    alarm_out, alarm_in = steps["alarms"]
    assert alarm_out["Threshold"] == 600.0 and alarm_in["Threshold"] == 420.0
    assert alarm_out["MetricName"] == "RequestCountPerTarget" and alarm_out["Statistic"] == "Sum"
    assert alarm_out["Period"] == 60
    adjustments = steps["api_request"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    assert _bounds(adjustments) == PER_MINUTE
    tracking = rendered["target_tracking"]["api_request"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 600.0


def test_alb_per_minute_in_the_cli(alb):
    _, rendered = alb
    cli = rendered["step_scaling"]["aws_cli"]
    config = json.loads(re.search(r"--step-scaling-policy-configuration '([^']+)'", cli).group(1))
    assert _bounds(config["StepAdjustments"]) == PER_MINUTE
    alarms = [json.loads(m) for m in re.findall(r"--cli-input-json '([^']+)'", cli)]
    assert [a["Threshold"] for a in alarms] == [600.0, 420.0]


def test_alb_per_minute_in_cloudformation(alb):
    _, rendered = alb
    resources = json.loads(rendered["step_scaling"]["cloudformation"])["Resources"]
    policies = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"]
    out = next(p for p in policies if p["PolicyName"].endswith("scale-out"))
    assert _bounds(out["StepScalingPolicyConfiguration"]["StepAdjustments"]) == PER_MINUTE
    thresholds = sorted(r["Properties"]["Threshold"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm")
    assert thresholds == [420.0, 600.0]


def test_alb_per_minute_in_terraform(alb):
    _, rendered = alb
    terraform = rendered["step_scaling"]["terraform"]
    lower = [float(v) for v in re.findall(r"metric_interval_lower_bound = (\S+)", terraform)]
    upper = [float(v) for v in re.findall(r"metric_interval_upper_bound = (\S+)", terraform)]
    assert lower == [0.0, 300.0, 600.0]
    assert upper == [300.0, 600.0, 0.0]  # the last is the scale-in policy's "below the threshold"
    assert sorted(float(v) for v in re.findall(r"\bthreshold\s+= (\S+)", terraform)) == [420.0, 600.0]


def test_percent_bounds_are_unchanged():
    _, rendered = _render(catalog.CPU_UTILIZATION, 60.0, 90.0, digits=1)
    adjustments = rendered["step_scaling"]["api_request"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    assert _bounds(adjustments) == [(0.0, 15.0, 10), (15.0, 30.0, 30), (30.0, None, 50)]
    assert [a["Threshold"] for a in rendered["step_scaling"]["alarms"]] == [60.0, 42.0]


def test_bounds_carry_no_float_noise():
    _, rendered = _render(catalog.CPU_UTILIZATION, 62.8, 88.7, digits=1)
    adjustments = rendered["step_scaling"]["api_request"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    for low, high, _ in _bounds(adjustments):
        for bound in (low, high):
            assert bound is None or len(repr(bound)) <= 8


# -- the in-flight custom metric -----------------------------------------------------------------
def _stats(queries):
    return [q["MetricStat"]["Stat"] for q in queries if "MetricStat" in q]


def test_concurrency_is_the_average_of_the_tasks_own_gauges():
    spec = policy.aws_metric(catalog.CONCURRENCY_PER_TASK)["customized"]["Metrics"]
    assert _stats(spec) == ["Average"]
    assert [q["MetricStat"]["Metric"]["MetricName"] for q in spec] == ["InFlightRequests"]
    assert [q["ReturnData"] for q in spec] == [True]
    # the Average over every task's datapoints is already per task: no second division by tasks
    assert not any("Expression" in q for q in spec)
    assert "RunningTaskCount" not in json.dumps(spec)


def test_concurrency_policy_and_alarms_agree(tmp_path):
    _, rendered = _render(catalog.CONCURRENCY_PER_TASK, 6.0, 10.0)
    tracking = rendered["target_tracking"]["api_request"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 6.0
    assert _stats(tracking["CustomizedMetricSpecification"]["Metrics"]) == ["Average"]
    for alarm in rendered["step_scaling"]["alarms"]:
        assert _stats(alarm["Metrics"]) == ["Average"]
        assert all(q["MetricStat"]["Period"] == 60 for q in alarm["Metrics"])
    assert [a["Threshold"] for a in rendered["step_scaling"]["alarms"]] == [6.0, 4.2]
    for rendering in ("aws_cli", "cloudformation", "terraform"):
        for kind in ("target_tracking", "step_scaling"):
            text = rendered[kind][rendering]
            assert "Sum" not in text and "RunningTaskCount" not in text, (kind, rendering)
    assert 'stat = "Average"' in rendered["target_tracking"]["terraform"]
    assert 'stat        = "Average"' in rendered["step_scaling"]["terraform"]


def test_an_application_total_is_averaged_then_divided_by_tasks():
    spec = policy.aws_metric("app_open_sessions")["customized"]["Metrics"]
    assert _stats(spec) == ["Average", "Average"]
    assert next(q for q in spec if q["ReturnData"])["Expression"] == "total / tasks"
    _render("app_open_sessions", 40.0, 60.0)


def test_queue_backlog_per_task_is_unchanged():
    spec = policy.aws_metric(catalog.QUEUE_BACKLOG_PER_TASK)["customized"]["Metrics"]
    assert next(q for q in spec if q["ReturnData"])["Expression"] == "backlog / tasks"
    _render(catalog.QUEUE_BACKLOG_PER_TASK, 3.15, 4.5)


def _deployment(**fields):
    from scalefinder.analysis.deployment import AwsNames, Deployment, Resources
    from scalefinder.core.models import KubernetesSettings

    aws = AwsNames(cluster="staging", service="web", target_group="targetgroup/web-tg/0123456789abcdef")
    return Deployment(aws, KubernetesSettings(), Resources(), None, 2, **fields)


def test_a_custom_metric_is_rendered_from_its_own_profile_entry():
    custom = {"app_sessions": {"name": "app_sessions", "namespace": "Web/App", "metric_name": "OpenSessions",
                               "dimensions": {"ServiceName": "web", "Stage": "staging"}, "statistic": "Maximum",
                               "scale": 0.5, "per_task": True}}
    deployment = _deployment(custom_metrics=custom)
    spec = policy.aws_metric("app_sessions", deployment)["customized"]["Metrics"]
    value = next(q for q in spec if q["Id"] == "value")["MetricStat"]
    assert value["Metric"] == {"Namespace": "Web/App", "MetricName": "OpenSessions",
                               "Dimensions": [{"Name": "ServiceName", "Value": "web"},
                                              {"Name": "Stage", "Value": "staging"}]}
    assert value["Stat"] == "Maximum"
    assert [q["Expression"] for q in spec if "Expression" in q] == ["value * 0.5 / tasks"]
    step = recommend.step_thresholds(40.0, 60.0, 2)
    renderings = policy.render_all("app_sessions", 40.0, step, policy.aws_metric("app_sessions", deployment),
                                   deployment)  # validated against botocore's model
    assert "OpenSessions" in renderings["target_tracking"]["terraform"]
    # a per-task gauge needs no division and no metric math
    custom["app_sessions"] = {**custom["app_sessions"], "per_task": False, "scale": 1.0}
    [only] = policy.aws_metric("app_sessions", _deployment(custom_metrics=custom))["customized"]["Metrics"]
    assert only["ReturnData"] is True and only["MetricStat"]["Stat"] == "Maximum"


def test_concurrency_measured_at_the_balancer_is_tracked_there():
    deployment = _deployment(concurrency_from_load_balancer=True)
    aws = policy.aws_metric(catalog.CONCURRENCY_PER_TASK, deployment)
    names = [q["MetricStat"]["Metric"]["MetricName"] for q in aws["customized"]["Metrics"] if "MetricStat" in q]
    assert names == ["ActiveConnectionCount", "RunningTaskCount"]
    assert "both sides of the whole balancer" in aws["note"]


def test_names_the_run_knows_fill_the_aws_renderings():
    deployment = _deployment()
    aws = policy.aws_metric(catalog.REQUESTS_PER_TASK, deployment)
    label = aws["specification"]["PredefinedMetricSpecification"]["ResourceLabel"]
    assert label == "app/LOAD_BALANCER/LB_ID/targetgroup/web-tg/0123456789abcdef"
    step = recommend.step_thresholds(10.0, 14.0, 2)
    renderings = policy.render_all(catalog.REQUESTS_PER_TASK, 10.0, step, aws, deployment)
    assert renderings["target_tracking"]["api_request"]["ResourceId"] == "service/staging/web"
    alarm = renderings["step_scaling"]["alarms"][0]
    assert alarm["Dimensions"] == [{"Name": "TargetGroup", "Value": "targetgroup/web-tg/0123456789abcdef"}]
