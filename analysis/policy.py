"""The recommended policy rendered four ways, each checked against the real API shape.

Renderings: the Application Auto Scaling ``PutScalingPolicy`` request (JSON), the AWS CLI
command, a CloudFormation template and Terraform. The API request, and the CloudWatch alarms
step scaling needs, are validated with botocore's own service models and ``ParamValidator``
(no network, no credentials): a rendering that the real API would reject is a bug, raised as
such rather than shipped. The cluster, service and queue are the names the run's profile gave
(``analysis.deployment``); what the run does not know (the load balancer, a custom metric's
namespace) stays a placeholder in capitals for the team to fill in.

Next to them, the same recommendation as Kubernetes manifests (``analysis.kubernetes``).
"""

from __future__ import annotations

import functools
import json
import shlex
from typing import Any

from scalefinder.analysis import kubernetes
from scalefinder.analysis.deployment import AwsNames, Deployment
from scalefinder.core import catalog
from scalefinder.core.errors import InputError

DIMENSION = "ecs:service:DesiredCount"
APP_NAMESPACE = "APP_NAMESPACE"
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300

PREDEFINED = {
    catalog.CPU_UTILIZATION: "ECSServiceAverageCPUUtilization",
    catalog.MEMORY_UTILIZATION: "ECSServiceAverageMemoryUtilization",
    catalog.REQUESTS_PER_TASK: "ALBRequestCountPerTarget",
}


# Targets AWS reads as percent of the task's reservation: a value outside (0, 100] cannot be met
# (above) or is met by an idle task (at or below 0), so it can only come from a unit mistake.
PERCENT_METRICS = (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION)
PERCENT_RANGE = (0.0, 100.0)


class PolicyShapeError(Exception):
    """A rendered request does not match botocore's model: a programming error, not user input."""


class PolicyTargetError(InputError):
    """The measured target cannot be what the policy's metric means (a CPU target of 251%): the
    run's data is in another unit. Raised rather than rendered, so no such policy is shipped."""


def target_problem(metric: str, target: float) -> str | None:
    """Why ``target`` cannot be a target for ``metric`` in AWS's unit, or None when it can."""
    if metric in PERCENT_METRICS:
        low, high = PERCENT_RANGE
        if not (low < float(target) <= high):
            return (f"a {metric} target of {float(target):g} is outside ({low:g}, {high:g}]: {PREDEFINED[metric]} "
                    "is percent of the task's reservation, so the measured values are in another unit "
                    "(a fraction, or percent of one vCPU)")
    return None


def resource_id(names: AwsNames) -> str:
    return f"service/{names.cluster}/{names.service}"


def aws_metric(metric: str, deployment: Deployment | None = None) -> dict[str, Any]:
    """The CloudWatch / Application Auto Scaling identity of a scaling metric, as the run read it
    (placeholders for the names when ``deployment`` is None)."""
    deployment = deployment or unknown_deployment()
    if metric in PREDEFINED and metric not in deployment.custom_metrics:
        spec: dict[str, Any] = {"PredefinedMetricType": PREDEFINED[metric]}
        if metric == catalog.REQUESTS_PER_TASK:
            spec["ResourceLabel"] = f"{deployment.aws.load_balancer}/{deployment.aws.target_group}"
        note = "target is requests per target per minute (RequestCountPerTarget)" \
            if metric == catalog.REQUESTS_PER_TASK else "percent of the task reservation"
        return {"predefined": PREDEFINED[metric], "specification": {"PredefinedMetricSpecification": spec},
                "note": note}
    # two copies, so that a change to one (the alarm's periods) never reaches the other
    return {"customized": _metric_math(metric, deployment),
            "specification": {"CustomizedMetricSpecification": _metric_math(metric, deployment)},
            "note": _math_note(metric, deployment)}


def aws_target(metric: str, target: float) -> float:
    """The target in the unit AWS uses: ALB counts requests per target per minute."""
    return round(target * 60.0, 1) if metric == catalog.REQUESTS_PER_TASK else target


def aws_step(metric: str, step: dict[str, Any]) -> dict[str, Any]:
    """``step`` (from ``recommend.step_thresholds``, in scalefinder's unit) with every threshold in
    the unit of the alarm that drives it. A step policy's interval bounds are offsets from that
    alarm's threshold in the alarm's own unit, so the thresholds are converted before the bounds
    are taken from them: an ALB alarm sums requests over a minute, and bounds left per second
    would put every step but the first almost on the threshold."""
    keys = ("scale_out_threshold", "scale_in_threshold")
    converted = {key: aws_target(metric, step[key]) for key in keys if key in step}
    return {**step, **converted, "thresholds": [aws_target(metric, t) for t in step["thresholds"]]}


def _metric_math(metric: str, deployment: Deployment) -> dict[str, Any]:
    names = deployment.aws
    running = {"Id": "tasks", "ReturnData": False, "MetricStat": {
        "Metric": {"Namespace": "ECS/ContainerInsights", "MetricName": "RunningTaskCount",
                   "Dimensions": [{"Name": "ClusterName", "Value": names.cluster},
                                  {"Name": "ServiceName", "Value": names.service}]},
        "Stat": "Average"}}
    custom = deployment.custom_metrics.get(metric)
    if custom is not None:
        # The profile's own metric, as the run read it: its namespace, dimensions and statistic,
        # times its scale, divided by the running tasks when the profile says it is a total.
        read = {"Id": "value", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": custom["namespace"], "MetricName": custom["metric_name"],
                       "Dimensions": [{"Name": k, "Value": v} for k, v in sorted((custom.get("dimensions") or {}).items())]},
            "Stat": custom.get("statistic") or "Average"}}
        scale = float(custom.get("scale") or 1.0)
        expression = "value" + (f" * {scale:g}" if scale != 1.0 else "")
        queries = [read]
        if custom.get("per_task"):
            expression, queries = f"{expression} / tasks", [read, running]
        if expression == "value":
            read["ReturnData"] = True
            return {"Metrics": [read]}
        return {"Metrics": [*queries, {"Id": "per_task", "Expression": expression, "ReturnData": True,
                                       "Label": f"{metric} (per task)"}]}
    if metric == catalog.CONCURRENCY_PER_TASK and deployment.concurrency_from_load_balancer:
        # What the run measured: the balancer's connections shared among the running tasks.
        connections = {"Id": "connections", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "ActiveConnectionCount",
                       "Dimensions": [{"Name": "LoadBalancer", "Value": names.load_balancer}]},
            "Stat": "Sum"}}
        return {"Metrics": [connections, running, {"Id": "per_task", "Expression": "connections / tasks",
                                                   "ReturnData": True, "Label": f"{metric} (per task)"}]}
    if metric == catalog.CONCURRENCY_PER_TASK:
        # The publishing contract (docs/aws.md): every task publishes its own in-flight gauge
        # under the one dimension ServiceName, at the same interval. CloudWatch pools the tasks'
        # datapoints in that series, so their Average over a period is already the mean per
        # task, however often each task publishes; dividing by RunningTaskCount again would
        # divide by the tasks twice, and a Sum would grow with the publishing rate.
        in_flight = {"Id": "in_flight", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": APP_NAMESPACE, "MetricName": "InFlightRequests",
                       "Dimensions": [{"Name": "ServiceName", "Value": names.service}]},
            "Stat": "Average"}}
        return {"Metrics": [in_flight]}
    if metric == catalog.QUEUE_BACKLOG_PER_TASK:
        total = {"Id": "backlog", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
                       "Dimensions": [{"Name": "QueueName", "Value": names.queue}]},
            "Stat": "Average"}}
        expression = "backlog / tasks"
    else:
        # Any other application metric is a service-wide total (catalog: service_total),
        # published as one series: its Average is the total whether it is published once a
        # minute or every few seconds, where a Sum would count each publication.
        total = {"Id": "total", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": APP_NAMESPACE, "MetricName": metric,
                       "Dimensions": [{"Name": "ServiceName", "Value": names.service}]},
            "Stat": "Average"}}
        expression = "total / tasks"
    return {"Metrics": [total, running, {"Id": "per_task", "Expression": expression, "ReturnData": True,
                                         "Label": f"{metric} (per task)"}]}


def _math_note(metric: str, deployment: Deployment) -> str:
    custom = deployment.custom_metrics.get(metric)
    if custom is not None:
        divided = ", divided by running tasks" if custom.get("per_task") else ""
        return (f"the profile's custom metric {custom['namespace']}/{custom['metric_name']} "
                f"({custom.get('statistic') or 'Average'}), as the run read it{divided}")
    if metric == catalog.QUEUE_BACKLOG_PER_TASK:
        return "visible messages divided by running tasks (SQS backlog per task)"
    if metric == catalog.CONCURRENCY_PER_TASK and deployment.concurrency_from_load_balancer:
        return ("the load balancer's ActiveConnectionCount divided by running tasks, as the run measured it: "
                "connections on both sides of the whole balancer, a fair per-task figure only when the balancer "
                "serves this one service; an in-flight gauge published by the tasks (docs/aws.md) is closer")
    if metric == catalog.CONCURRENCY_PER_TASK:
        return ("each task publishes its own in-flight request count as InFlightRequests (dimension ServiceName, "
                "the same interval for every task); the Average over the tasks' datapoints is the average per task")
    return "the application's service-wide total (Average of its one series) divided by running tasks"


def render_all(metric: str, target: float, step: dict[str, Any], aws: dict[str, Any],
               deployment: Deployment | None = None) -> dict[str, Any]:
    """Every rendering of the policy for ``target`` (scalefinder's unit), with the names
    ``deployment`` knows; raises ``PolicyTargetError`` when the target cannot mean what the
    metric means in AWS. ``aws`` is ``aws_metric(metric, deployment)``."""
    problem = target_problem(metric, target)
    if problem:
        raise PolicyTargetError(f"no scaling policy rendered: {problem}")
    deployment = deployment or unknown_deployment()
    names = deployment.aws
    value = aws_target(metric, target)
    tracking = target_tracking_request(metric, value, aws, names)
    validate("application-autoscaling", "PutScalingPolicy", tracking)
    scale_out, scale_in = step_scaling_requests(metric, step, names)
    validate("application-autoscaling", "PutScalingPolicy", scale_out)
    validate("application-autoscaling", "PutScalingPolicy", scale_in)
    alarms = [alarm_request(metric, aws, step, names, out=True), alarm_request(metric, aws, step, names, out=False)]
    for alarm in alarms:
        validate("cloudwatch", "PutMetricAlarm", alarm)
    return {
        "target_tracking": {"api_request": tracking, "aws_cli": _cli(tracking),
                            "cloudformation": _cloudformation([tracking]), "terraform": _terraform([tracking])},
        "step_scaling": {"api_request": scale_out, "scale_in_api_request": scale_in, "alarms": alarms,
                         "aws_cli": "\n".join([_cli(scale_out), _cli(scale_in)] + [_alarm_cli(a) for a in alarms]),
                         "cloudformation": _cloudformation([scale_out, scale_in], alarms),
                         "terraform": _terraform([scale_out, scale_in], alarms)},
        "kubernetes": kubernetes.render(metric, target, step, deployment).to_dict(),
    }


def unknown_deployment() -> Deployment:
    """Nothing known about where the service runs: every name a placeholder."""
    from scalefinder.analysis.deployment import Resources
    from scalefinder.core.models import KubernetesSettings

    return Deployment(aws=AwsNames(), kubernetes=KubernetesSettings(), resources=Resources(), prometheus=None,
                      initial_tasks=None)


def target_tracking_request(metric: str, value: float, aws: dict[str, Any], names: AwsNames) -> dict[str, Any]:
    config = {"TargetValue": float(value), **aws["specification"],
              "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S, "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
              "DisableScaleIn": False}
    return {"PolicyName": f"{metric}-target-tracking", "ServiceNamespace": "ecs", "ResourceId": resource_id(names),
            "ScalableDimension": DIMENSION, "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": config}


def step_scaling_requests(metric: str, step: dict[str, Any], names: AwsNames) -> tuple[dict[str, Any], dict[str, Any]]:
    """Intervals are relative to the alarm threshold, contiguous and without overlap, and in the
    alarm's unit (``aws_step``)."""
    thresholds = aws_step(metric, step)["thresholds"]
    base = thresholds[0]
    # rounded so that float noise (18.600000000000001) does not reach a template
    bounds = [round(t - base, 6) for t in thresholds]
    adjustments = []
    for index, change in enumerate(step["adjustments"]):
        item: dict[str, Any] = {"MetricIntervalLowerBound": float(bounds[index]), "ScalingAdjustment": int(change)}
        if index + 1 < len(bounds) and bounds[index + 1] > bounds[index]:
            item["MetricIntervalUpperBound"] = float(bounds[index + 1])
        adjustments.append(item)
        if "MetricIntervalUpperBound" not in item:
            break
    scale_out = {"PolicyName": f"{metric}-step-scale-out", "ServiceNamespace": "ecs", "ResourceId": resource_id(names),
                 "ScalableDimension": DIMENSION, "PolicyType": "StepScaling",
                 "StepScalingPolicyConfiguration": {"AdjustmentType": step["adjustment_type"],
                                                    "StepAdjustments": adjustments,
                                                    "MinAdjustmentMagnitude": step["min_adjustment_magnitude"],
                                                    "Cooldown": SCALE_OUT_COOLDOWN_S,
                                                    "MetricAggregationType": "Average"}}
    scale_in = {"PolicyName": f"{metric}-step-scale-in", "ServiceNamespace": "ecs", "ResourceId": resource_id(names),
                "ScalableDimension": DIMENSION, "PolicyType": "StepScaling",
                "StepScalingPolicyConfiguration": {"AdjustmentType": step["adjustment_type"],
                                                   "StepAdjustments": [{"MetricIntervalUpperBound": 0.0,
                                                                        "ScalingAdjustment": step["scale_in_adjustment"]}],
                                                   "MinAdjustmentMagnitude": step["min_adjustment_magnitude"],
                                                   "Cooldown": SCALE_IN_COOLDOWN_S,
                                                   "MetricAggregationType": "Average"}}
    return scale_out, scale_in


def alarm_request(metric: str, aws: dict[str, Any], step: dict[str, Any], names: AwsNames, *,
                  out: bool) -> dict[str, Any]:
    """The CloudWatch alarm a step policy needs; its action is the policy ARN once created."""
    converted = aws_step(metric, step)
    threshold = converted["scale_out_threshold"] if out else converted["scale_in_threshold"]
    alarm: dict[str, Any] = {
        "AlarmName": f"{names.service}-{metric}-{'high' if out else 'low'}",
        "AlarmDescription": f"step scaling {'out' if out else 'in'} on {metric}",
        "AlarmActions": [f"POLICY_ARN_{'SCALE_OUT' if out else 'SCALE_IN'}"],
        "EvaluationPeriods": 1 if out else 5,
        "DatapointsToAlarm": 1 if out else 5,
        "Threshold": float(threshold),
        "ComparisonOperator": "GreaterThanOrEqualToThreshold" if out else "LessThanThreshold",
        "TreatMissingData": "missing",
    }
    alarm.update(_alarm_metric(metric, aws, names))
    return alarm


def _alarm_metric(metric: str, aws: dict[str, Any], names: AwsNames) -> dict[str, Any]:
    if metric in (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION):
        name = "CPUUtilization" if metric == catalog.CPU_UTILIZATION else "MemoryUtilization"
        return {"Namespace": "AWS/ECS", "MetricName": name, "Statistic": "Average", "Period": 60,
                "Dimensions": [{"Name": "ClusterName", "Value": names.cluster},
                               {"Name": "ServiceName", "Value": names.service}]}
    if metric == catalog.REQUESTS_PER_TASK:
        return {"Namespace": "AWS/ApplicationELB", "MetricName": "RequestCountPerTarget", "Statistic": "Sum",
                "Period": 60, "Dimensions": [{"Name": "TargetGroup", "Value": names.target_group}]}
    queries = []
    for query in aws["customized"]["Metrics"]:
        item = dict(query)
        if "MetricStat" in item:
            item["MetricStat"] = dict(item["MetricStat"], Period=60)
        queries.append(item)
    return {"Metrics": queries}


def validate(service: str, operation: str, params: dict[str, Any]) -> None:
    """Check ``params`` against botocore's model of ``service``'s ``operation``."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, _input_shape(service, operation))
    if report.has_errors():
        raise PolicyShapeError(f"{service} {operation} request does not match the API: {report.generate_report()}")


@functools.lru_cache(maxsize=None)
def _input_shape(service: str, operation: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape


# -- renderings ----------------------------------------------------------------------------------
def _cli(request: dict[str, Any]) -> str:
    config_key = ("target-tracking-scaling-policy-configuration"
                  if request["PolicyType"] == "TargetTrackingScaling" else "step-scaling-policy-configuration")
    config = request.get("TargetTrackingScalingPolicyConfiguration") or request.get("StepScalingPolicyConfiguration")
    parts = ["aws application-autoscaling put-scaling-policy",
             f"--service-namespace {request['ServiceNamespace']}",
             f"--resource-id {shlex.quote(request['ResourceId'])}",
             f"--scalable-dimension {request['ScalableDimension']}",
             f"--policy-name {shlex.quote(request['PolicyName'])}",
             f"--policy-type {request['PolicyType']}",
             f"--{config_key} {shlex.quote(json.dumps(config, separators=(',', ':')))}"]
    return " \\\n  ".join(parts)


def _alarm_cli(alarm: dict[str, Any]) -> str:
    return f"aws cloudwatch put-metric-alarm --cli-input-json {shlex.quote(json.dumps(alarm, separators=(',', ':')))}"


def _cloudformation(requests: list[dict[str, Any]], alarms: list[dict[str, Any]] | None = None) -> str:
    resources: dict[str, Any] = {}
    for request in requests:
        properties: dict[str, Any] = {"PolicyName": request["PolicyName"], "PolicyType": request["PolicyType"],
                                      "ScalingTargetId": {"Ref": "ScalableTarget"}}
        for key in ("TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration"):
            if key in request:
                properties[key] = _cfn_config(request[key])
        resources[_logical_id(request["PolicyName"])] = {"Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
                                                        "Properties": properties}
    for alarm, request in zip(alarms or [], requests):
        properties = {k: v for k, v in alarm.items() if k != "AlarmActions"}
        properties["AlarmActions"] = [{"Ref": _logical_id(request["PolicyName"])}]
        resources[_logical_id(alarm["AlarmName"]) + "Alarm"] = {"Type": "AWS::CloudWatch::Alarm",
                                                                 "Properties": properties}
    template = {"AWSTemplateFormatVersion": "2010-09-09",
                "Description": "Scaling policy recommended by scalefinder. ScalableTarget is your "
                               "AWS::ApplicationAutoScaling::ScalableTarget for the ECS service.",
                "Parameters": {"ScalableTarget": {"Type": "String", "Description": "the scalable target's id"}},
                "Resources": resources}
    return json.dumps(template, indent=2)


def _cfn_config(config: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation spells the customized metric-math list as ``Metrics`` too; the rest mirrors the API."""
    return json.loads(json.dumps(config))


def _logical_id(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-") if part)


def _terraform(requests: list[dict[str, Any]], alarms: list[dict[str, Any]] | None = None) -> str:
    blocks = []
    for request in requests:
        lines = [f'resource "aws_appautoscaling_policy" "{_tf_name(request["PolicyName"])}" {{',
                 f'  name               = "{request["PolicyName"]}"',
                 f'  policy_type        = "{request["PolicyType"]}"',
                 f'  resource_id        = "{request["ResourceId"]}"',
                 f'  scalable_dimension = "{request["ScalableDimension"]}"',
                 f'  service_namespace  = "{request["ServiceNamespace"]}"']
        if "TargetTrackingScalingPolicyConfiguration" in request:
            lines += _tf_target_tracking(request["TargetTrackingScalingPolicyConfiguration"])
        else:
            lines += _tf_step(request["StepScalingPolicyConfiguration"])
        lines.append("}")
        blocks.append("\n".join(lines))
    for alarm, request in zip(alarms or [], requests):
        blocks.append(_tf_alarm(alarm, _tf_name(request["PolicyName"])))
    return "\n\n".join(blocks) + "\n"


def _tf_target_tracking(config: dict[str, Any]) -> list[str]:
    lines = ["", "  target_tracking_scaling_policy_configuration {",
             f"    target_value       = {config['TargetValue']:g}",
             f"    scale_out_cooldown = {config['ScaleOutCooldown']}",
             f"    scale_in_cooldown  = {config['ScaleInCooldown']}",
             f"    disable_scale_in   = {str(config['DisableScaleIn']).lower()}"]
    if "PredefinedMetricSpecification" in config:
        spec = config["PredefinedMetricSpecification"]
        lines += ["", "    predefined_metric_specification {",
                  f'      predefined_metric_type = "{spec["PredefinedMetricType"]}"']
        if "ResourceLabel" in spec:
            lines.append(f'      resource_label         = "{spec["ResourceLabel"]}"')
        lines.append("    }")
    else:
        lines += ["", "    customized_metric_specification {"]
        for query in config["CustomizedMetricSpecification"]["Metrics"]:
            lines += _tf_query(query, indent="      ")
        lines.append("    }")
    lines.append("  }")
    return lines


def _tf_query(query: dict[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}metrics {{", f'{indent}  id          = "{query["Id"]}"',
             f"{indent}  return_data = {str(query['ReturnData']).lower()}"]
    if "Expression" in query:
        lines.append(f'{indent}  expression  = "{query["Expression"]}"')
        if "Label" in query:
            lines.append(f'{indent}  label       = "{query["Label"]}"')
    else:
        stat = query["MetricStat"]
        metric = stat["Metric"]
        lines += [f"{indent}  metric_stat {{", f'{indent}    stat = "{stat["Stat"]}"', f"{indent}    metric {{",
                  f'{indent}      namespace   = "{metric["Namespace"]}"',
                  f'{indent}      metric_name = "{metric["MetricName"]}"']
        for dimension in metric.get("Dimensions", []):
            lines += [f"{indent}      dimensions {{", f'{indent}        name  = "{dimension["Name"]}"',
                      f'{indent}        value = "{dimension["Value"]}"', f"{indent}      }}"]
        lines += [f"{indent}    }}", f"{indent}  }}"]
    lines.append(f"{indent}}}")
    return lines


def _tf_step(config: dict[str, Any]) -> list[str]:
    lines = ["", "  step_scaling_policy_configuration {",
             f'    adjustment_type          = "{config["AdjustmentType"]}"',
             f"    cooldown                 = {config['Cooldown']}",
             f'    metric_aggregation_type  = "{config["MetricAggregationType"]}"',
             f"    min_adjustment_magnitude = {config['MinAdjustmentMagnitude']}"]
    for item in config["StepAdjustments"]:
        lines += ["", "    step_adjustment {"]
        if "MetricIntervalLowerBound" in item:
            lines.append(f"      metric_interval_lower_bound = {item['MetricIntervalLowerBound']:g}")
        if "MetricIntervalUpperBound" in item:
            lines.append(f"      metric_interval_upper_bound = {item['MetricIntervalUpperBound']:g}")
        lines += [f"      scaling_adjustment          = {item['ScalingAdjustment']}", "    }"]
    lines.append("  }")
    return lines


def _tf_alarm(alarm: dict[str, Any], policy_name: str) -> str:
    lines = [f'resource "aws_cloudwatch_metric_alarm" "{_tf_name(alarm["AlarmName"])}" {{',
             f'  alarm_name          = "{alarm["AlarmName"]}"',
             f'  comparison_operator = "{alarm["ComparisonOperator"]}"',
             f"  evaluation_periods  = {alarm['EvaluationPeriods']}",
             f"  datapoints_to_alarm = {alarm['DatapointsToAlarm']}",
             f"  threshold           = {alarm['Threshold']:g}",
             f'  treat_missing_data  = "{alarm["TreatMissingData"]}"',
             f"  alarm_actions       = [aws_appautoscaling_policy.{policy_name}.arn]"]
    if "MetricName" in alarm:
        lines += [f'  namespace           = "{alarm["Namespace"]}"', f'  metric_name         = "{alarm["MetricName"]}"',
                  f'  statistic           = "{alarm["Statistic"]}"', f"  period              = {alarm['Period']}",
                  "  dimensions = {"]
        lines += [f'    {d["Name"]} = "{d["Value"]}"' for d in alarm["Dimensions"]]
        lines.append("  }")
    else:
        for query in alarm["Metrics"]:
            lines += _tf_alarm_query(query)
    lines.append("}")
    return "\n".join(lines)


def _tf_alarm_query(query: dict[str, Any]) -> list[str]:
    """An alarm's ``metric_query`` block: a flatter shape than the scaling policy's ``metrics``."""
    lines = ["", "  metric_query {", f'    id          = "{query["Id"]}"',
             f"    return_data = {str(query['ReturnData']).lower()}"]
    if "Expression" in query:
        lines.append(f'    expression  = "{query["Expression"]}"')
    else:
        stat = query["MetricStat"]
        metric = stat["Metric"]
        lines += ["    metric {", f'      namespace   = "{metric["Namespace"]}"',
                  f'      metric_name = "{metric["MetricName"]}"', f'      stat        = "{stat["Stat"]}"',
                  f"      period      = {stat.get('Period', 60)}", "      dimensions = {"]
        lines += [f'        {d["Name"]} = "{d["Value"]}"' for d in metric.get("Dimensions", [])]
        lines += ["      }", "    }"]
    lines.append("  }")
    return lines


def _tf_name(name: str) -> str:
    return name.replace("-", "_").lower()
