"""The least-privilege IAM policy a profile needs: reads for its sources, changes for its controller.

Worked out from the profile alone (no AWS call), so it can be reviewed before anyone has access.
ECS actions are limited to the named cluster and service; the Describe and CloudWatch actions
do not support resource-level permissions and take ``*``.
"""

from __future__ import annotations

from typing import Any

from scalefinder.core.errors import InputError

POLICY_VERSION = "2012-10-17"


def policy_for(profile: Any) -> dict[str, Any]:
    """An IAM policy document for the profile's CloudWatch source and ECS controller."""
    grants: dict[tuple[str, str], set[str]] = {}  # (statement id, resource) -> actions

    def grant(sid: str, resource: str, *actions: str) -> None:
        grants.setdefault((sid, resource), set()).update(actions)

    source = profile.sources.get("cloudwatch")
    if source is not None:
        _grant_source(grant, source)
    if profile.capacity.controller == "ecs":
        _grant_controller(grant, profile.capacity.config)
    if not grants:
        raise InputError(f"{profile.path} uses no AWS source or controller; it needs no IAM permissions")
    statements, used = [], set()
    for (sid, resource), actions in sorted(grants.items()):
        unique = sid if sid not in used else f"{sid}{sum(s.startswith(sid) for s in used) + 1}"
        used.add(unique)
        statements.append({"Sid": unique, "Effect": "Allow", "Action": sorted(actions), "Resource": resource})
    return {"Version": POLICY_VERSION, "Statement": statements}


def _grant_source(grant, config: dict[str, Any]) -> None:
    region = config.get("region") or "*"
    metric_reads = ["cloudwatch:GetMetricData"]
    if config.get("task_metrics") is not False:
        metric_reads.append("cloudwatch:ListMetrics")  # finds the task ids of per-task metrics
    grant("ReadMetrics", "*", *metric_reads)
    grant("DescribeEcsService", _service_arn(region, config["cluster"], config["service"]), "ecs:DescribeServices")
    grant("DescribeEcsCluster", _cluster_arn(region, config["cluster"]), "ecs:DescribeClusters")
    grant("DescribeAround", "*", "ecs:DescribeTaskDefinition", "elasticloadbalancing:DescribeTargetGroups",
          "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies")


def _grant_controller(grant, config: dict[str, Any]) -> None:
    region = config.get("region") or "*"
    service = _service_arn(region, config["cluster"], config["service"])
    grant("DescribeEcsService", service, "ecs:DescribeServices")
    grant("DescribeAround", "*", "application-autoscaling:DescribeScalableTargets",
          "application-autoscaling:DescribeScalingPolicies")
    if config.get("wait_for_targets", True):
        grant("DescribeAround", "*", "elasticloadbalancing:DescribeTargetHealth")
    grant("ChangeTaskCount", service, "ecs:UpdateService")
    # Suspending and resuming the autoscaler is a re-registration of the scalable target.
    grant("SuspendAutoscaling", "*", "application-autoscaling:RegisterScalableTarget")


def _service_arn(region: str, cluster: str, service: str) -> str:
    return f"arn:aws:ecs:{region}:*:service/{cluster}/{service}"


def _cluster_arn(region: str, cluster: str) -> str:
    return f"arn:aws:ecs:{region}:*:cluster/{cluster}"
