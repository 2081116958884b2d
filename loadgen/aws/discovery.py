"""What an ECS service looks like from the outside: the facts the source and controller need.

Given a cluster and a service name, find the service's load balancer target groups, its task
definition's CPU and memory, its Application Auto Scaling target and policies, and whether
Container Insights is on for the cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from scalefinder.loadgen.aws.session import AwsClients, call, pages
from scalefinder.core.errors import InfrastructureError

ECS_DIMENSION = "ecs:service:DesiredCount"


@dataclass(frozen=True)
class TargetGroup:
    arn: str
    #: the CloudWatch ``TargetGroup`` dimension value: ``targetgroup/<name>/<id>``
    dimension: str
    #: the ``LoadBalancer`` dimension values of the load balancers in front: ``app/<name>/<id>``
    load_balancer_dimensions: tuple[str, ...]


@dataclass(frozen=True)
class ScalableTarget:
    resource_id: str
    min_capacity: int
    max_capacity: int
    scale_in_suspended: bool
    scale_out_suspended: bool
    scheduled_suspended: bool
    #: "name (PolicyType)" of each scaling policy attached to the target
    policies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceFacts:
    cluster: str
    service: str
    region: str
    #: the cluster's containerInsights setting: enabled | enhanced | disabled
    container_insights: str
    desired_count: int
    running_count: int
    task_definition_arn: str
    cpu_units: int | None
    memory_mib: int | None
    target_groups: tuple[TargetGroup, ...]
    scalable_target: ScalableTarget | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resource_id(cluster: str, service: str) -> str:
    """Application Auto Scaling's name for an ECS service."""
    return f"service/{cluster}/{service}"


def discover(clients: AwsClients, cluster: str, service: str) -> ServiceFacts:
    """Describe the service and everything around it; raise InfrastructureError if it is not there."""
    insights = container_insights_setting(clients, cluster)
    described = describe_service(clients, cluster, service)
    cpu_units, memory_mib = _task_size(clients, described["taskDefinition"])
    return ServiceFacts(
        cluster=cluster,
        service=service,
        region=clients.region,
        container_insights=insights,
        desired_count=int(described.get("desiredCount", 0)),
        running_count=int(described.get("runningCount", 0)),
        task_definition_arn=described["taskDefinition"],
        cpu_units=cpu_units,
        memory_mib=memory_mib,
        target_groups=_target_groups(clients, described),
        scalable_target=find_scalable_target(clients, cluster, service),
    )


def container_insights_setting(clients: AwsClients, cluster: str) -> str:
    answer = call(clients.client("ecs"), "describe_clusters", clusters=[cluster], include=["SETTINGS"])
    found = [c for c in answer.get("clusters", []) if c.get("status") != "INACTIVE"]
    if not found:
        raise InfrastructureError(f"ECS cluster '{cluster}' does not exist in region {clients.region}")
    for setting in found[0].get("settings", []):
        if setting.get("name") == "containerInsights":
            return str(setting.get("value", "disabled"))
    return "disabled"


def require_container_insights(facts: ServiceFacts) -> None:
    """Container Insights publishes the service metrics; without it there is nothing to read."""
    if facts.container_insights in ("enabled", "enhanced"):
        return
    raise InfrastructureError(
        f"Container Insights is off for ECS cluster '{facts.cluster}'; turn it on with "
        f"`aws ecs update-cluster-settings --cluster {facts.cluster} --settings "
        f"name=containerInsights,value=enhanced --region {facts.region}` (or value=enabled without "
        f"per-task metrics), or set container_insights = false in [sources.cloudwatch]"
    )


def describe_service(clients: AwsClients, cluster: str, service: str) -> dict[str, Any]:
    answer = call(clients.client("ecs"), "describe_services", cluster=cluster, services=[service])
    for found in answer.get("services", []):
        if found.get("serviceName") == service and found.get("status") == "ACTIVE":
            return found
    reasons = {f.get("reason") for f in answer.get("failures", [])}
    if "MISSING" in reasons or not answer.get("services"):
        raise InfrastructureError(f"ECS service '{service}' does not exist in cluster '{cluster}' ({clients.region})")
    raise InfrastructureError(f"ECS service '{service}' in cluster '{cluster}' is not active")


def find_scalable_target(clients: AwsClients, cluster: str, service: str) -> ScalableTarget | None:
    autoscaling = clients.client("application-autoscaling")
    rid = resource_id(cluster, service)
    answer = call(autoscaling, "describe_scalable_targets", ServiceNamespace="ecs",
                  ResourceIds=[rid], ScalableDimension=ECS_DIMENSION)
    targets = answer.get("ScalableTargets", [])
    if not targets:
        return None
    target = targets[0]
    # pageable (50 policies a page by default): follow the pages, so the snapshot names every policy
    policies = [policy for answer in pages(autoscaling, "describe_scaling_policies", ServiceNamespace="ecs",
                                           ResourceId=rid, ScalableDimension=ECS_DIMENSION)
                for policy in answer.get("ScalingPolicies", [])]
    suspended = target.get("SuspendedState") or {}
    return ScalableTarget(
        resource_id=rid,
        min_capacity=int(target["MinCapacity"]),
        max_capacity=int(target["MaxCapacity"]),
        scale_in_suspended=bool(suspended.get("DynamicScalingInSuspended", False)),
        scale_out_suspended=bool(suspended.get("DynamicScalingOutSuspended", False)),
        scheduled_suspended=bool(suspended.get("ScheduledScalingSuspended", False)),
        policies=tuple(f"{p['PolicyName']} ({p['PolicyType']})" for p in policies),
    )


def _task_size(clients: AwsClients, task_definition: str) -> tuple[int | None, int | None]:
    """The task's CPU units and MiB; EC2 tasks may only size their containers, so add those up."""
    answer = call(clients.client("ecs"), "describe_task_definition", taskDefinition=task_definition)
    definition = answer["taskDefinition"]
    containers = definition.get("containerDefinitions", [])
    cpu = _as_int(definition.get("cpu")) or sum(int(c.get("cpu") or 0) for c in containers) or None
    memory = _as_int(definition.get("memory")) or sum(
        int(c.get("memory") or c.get("memoryReservation") or 0) for c in containers) or None
    return cpu, memory


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _target_groups(clients: AwsClients, described: dict[str, Any]) -> tuple[TargetGroup, ...]:
    arns = sorted({lb["targetGroupArn"] for lb in described.get("loadBalancers", []) if lb.get("targetGroupArn")})
    if not arns:
        return ()
    answer = call(clients.client("elbv2"), "describe_target_groups", TargetGroupArns=arns)
    return tuple(
        TargetGroup(
            arn=group["TargetGroupArn"],
            dimension=arn_dimension(group["TargetGroupArn"]),
            load_balancer_dimensions=tuple(arn_dimension(lb) for lb in group.get("LoadBalancerArns", [])),
        )
        for group in answer.get("TargetGroups", [])
    )


def arn_dimension(arn: str) -> str:
    """CloudWatch's dimension value for an ELB ARN: the resource part without ``loadbalancer/``."""
    resource = arn.split(":", 5)[-1]
    return resource.removeprefix("loadbalancer/")
