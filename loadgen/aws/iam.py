"""The least-privilege IAM policy a profile needs: reads for its sources, changes for its controller.

Worked out from the profile alone (no AWS call), so it can be reviewed before anyone has access.
ECS actions are limited to the named cluster and service; Application Auto Scaling's changes to
ECS services' desired-count scalable targets; the Describe and CloudWatch actions do not support
resource-level permissions and take ``*``. ARNs are in the partition of the profile's region
(``aws-cn`` for ``cn-*``, ``aws-us-gov`` for ``us-gov-*``, else ``aws``).
"""

from __future__ import annotations

import json
from typing import Any

from scalefinder.core.errors import InputError

POLICY_VERSION = "2012-10-17"
ECS_NAMESPACE = "ecs"
ECS_DIMENSION = "ecs:service:DesiredCount"  # as loadgen.aws.discovery, without importing boto3 here


def policy_for(profile: Any) -> dict[str, Any]:
    """An IAM policy document for the profile's CloudWatch source and ECS controller."""
    # (statement id, resource, condition as JSON or "") -> actions
    grants: dict[tuple[str, str, str], set[str]] = {}

    def grant(sid: str, resource: str, *actions: str, condition: dict[str, Any] | None = None) -> None:
        key = (sid, resource, json.dumps(condition, sort_keys=True) if condition else "")
        grants.setdefault(key, set()).update(actions)

    source = profile.sources.get("cloudwatch")
    if source is not None:
        _grant_source(grant, source)
    if profile.capacity.controller == "ecs":
        _grant_controller(grant, profile.capacity.config)
    if not grants:
        raise InputError(f"{profile.path} uses no AWS source or controller; it needs no IAM permissions")
    statements, used = [], set()
    for (sid, resource, condition), actions in sorted(grants.items()):
        unique = sid if sid not in used else f"{sid}{sum(s.startswith(sid) for s in used) + 1}"
        used.add(unique)
        statement = {"Sid": unique, "Effect": "Allow", "Action": sorted(actions), "Resource": resource}
        if condition:
            statement["Condition"] = json.loads(condition)
        statements.append(statement)
    return {"Version": POLICY_VERSION, "Statement": statements}


def partition_for(region: str | None) -> str:
    """The ARN partition of a region. Without a region (the policy then names any, ``*``) the
    commercial partition ``aws``: a policy is attached in one partition's IAM anyway."""
    region = (region or "").lower()
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _grant_source(grant, config: dict[str, Any]) -> None:
    region = config.get("region") or "*"
    partition = partition_for(config.get("region"))
    metric_reads = ["cloudwatch:GetMetricData"]
    if config.get("task_metrics") is not False:
        metric_reads.append("cloudwatch:ListMetrics")  # finds the task ids of per-task metrics
    grant("ReadMetrics", "*", *metric_reads)
    grant("DescribeEcsService", _service_arn(partition, region, config["cluster"], config["service"]),
          "ecs:DescribeServices")
    grant("DescribeEcsCluster", _cluster_arn(partition, region, config["cluster"]), "ecs:DescribeClusters")
    grant("DescribeAround", "*", "ecs:DescribeTaskDefinition", "elasticloadbalancing:DescribeTargetGroups",
          "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies")


def _grant_controller(grant, config: dict[str, Any]) -> None:
    region = config.get("region") or "*"
    partition = partition_for(config.get("region"))
    cluster = config["cluster"]
    service = _service_arn(partition, region, cluster, config["service"])
    grant("DescribeEcsService", service, "ecs:DescribeServices")
    grant("DescribeAround", "*", "application-autoscaling:DescribeScalableTargets",
          "application-autoscaling:DescribeScalingPolicies")
    if config.get("wait_for_targets", True):
        grant("DescribeAround", "*", "elasticloadbalancing:DescribeTargetHealth")
        # Which healthy targets are this service's tasks: their addresses (DescribeTasks) and, in
        # bridge or host network mode, their EC2 instances (DescribeContainerInstances), both
        # limited to the cluster. ListTasks is granted on "*": it only lists task ARNs.
        grant("DescribeEcsTasks", f"arn:{partition}:ecs:{region}:*:task/{cluster}/*", "ecs:DescribeTasks")
        grant("DescribeEcsContainerInstances", f"arn:{partition}:ecs:{region}:*:container-instance/{cluster}/*",
              "ecs:DescribeContainerInstances")
        grant("DescribeAround", "*", "ecs:ListTasks")
    grant("ChangeTaskCount", service, "ecs:UpdateService")
    # Suspending and resuming the autoscaler is a re-registration of the scalable target.
    # RegisterScalableTarget supports resource-level permissions, but on the scalable-target ARN,
    # whose last part is an id AWS generates ("scalable-target/0123abcd..."), not the service's
    # name, and no condition key names the resource id (only application-autoscaling:
    # service-namespace and scalable-dimension, and tags). So the grant is limited to the desired
    # count of ECS services in the region; scoping it to one service takes a tag on the scalable
    # target and an aws:ResourceTag condition added by hand.
    grant("SuspendAutoscaling", f"arn:{partition}:application-autoscaling:{region}:*:scalable-target/*",
          "application-autoscaling:RegisterScalableTarget",
          condition={"StringEquals": {"application-autoscaling:service-namespace": ECS_NAMESPACE,
                                      "application-autoscaling:scalable-dimension": ECS_DIMENSION}})


def _service_arn(partition: str, region: str, cluster: str, service: str) -> str:
    return f"arn:{partition}:ecs:{region}:*:service/{cluster}/{service}"


def _cluster_arn(partition: str, region: str, cluster: str) -> str:
    return f"arn:{partition}:ecs:{region}:*:cluster/{cluster}"
