"""What an ECS service looks like from the outside: the facts the source and controller need.

Given a cluster and a service name, find the service's load balancer target groups (in the
service's own order), its task definition's CPU and memory, its Application Auto Scaling target
and policies, and whether Container Insights is on for the cluster; and, for the controller,
which load balancer entry to watch and which of a target group's targets are the service's own
tasks (a target group may be shared with other services).
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
        f"per-task metrics) and wait a few minutes for its first data; [sources.cloudwatch] reads the service's "
        f"CPU, memory and task count from it, so without it measure the service another way "
        f"([sources.prometheus])"
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
    """The service's target groups in the order of its own ``loadBalancers`` (never sorted): the
    first is the one the source reads, as ``choose_load_balancer`` would pick without a preference."""
    arns = target_group_arns(described)
    if not arns:
        return ()
    answer = call(clients.client("elbv2"), "describe_target_groups", TargetGroupArns=list(arns))
    found = {group["TargetGroupArn"]: group for group in answer.get("TargetGroups", [])}
    return tuple(
        TargetGroup(
            arn=arn,
            dimension=arn_dimension(arn),
            load_balancer_dimensions=tuple(arn_dimension(lb) for lb in found[arn].get("LoadBalancerArns", [])),
        )
        for arn in arns if arn in found
    )


def target_group_arns(described: dict[str, Any]) -> tuple[str, ...]:
    """The target group ARNs of a described service, once each, in its ``loadBalancers`` order."""
    arns = (lb.get("targetGroupArn") for lb in described.get("loadBalancers") or [])
    return tuple(dict.fromkeys(arn for arn in arns if arn))


@dataclass(frozen=True)
class LoadBalancerChoice:
    """Which of a service's ``loadBalancers`` entries the controller watches, and why."""

    target_group_arn: str
    container_name: str | None
    container_port: int | None
    #: why this one, for the run's record
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_load_balancer(load_balancers: list[dict[str, Any]], container_name: str | None = None,
                         container_port: int | None = None) -> LoadBalancerChoice | None:
    """The service's ``loadBalancers`` entry whose target group counts its healthy tasks.

    Entries naming the profile's container (name and/or port) are preferred; of those left, the
    first in the service's own order wins. Never sorted: an ARN's alphabetical order says nothing
    about which balancer carries the load. None when the service has no target group; an
    ``InfrastructureError`` when the profile names a container no entry has.
    """
    entries = [lb for lb in load_balancers or [] if lb.get("targetGroupArn")]
    if not entries:
        return None
    named = container_name is not None or container_port is not None
    matching = [lb for lb in entries
                if (container_name is None or lb.get("containerName") == container_name)
                and (container_port is None or lb.get("containerPort") == container_port)]
    if not matching:
        wanted = f"{container_name or '*'}:{container_port or '*'}"
        listed = ", ".join(_entry_text(lb) for lb in entries)
        raise InfrastructureError(f"the ECS service has no load balancer entry for container {wanted} named in "
                                  f"[capacity.ecs]; its entries are {listed}")
    chosen = matching[0]
    if len(entries) == 1:
        reason = "the service's only load balancer entry"
    else:
        reason = "named by container_name/container_port in [capacity.ecs]" if named else ""
        if len(matching) > 1:
            others = ", ".join(_entry_text(lb) for lb in matching[1:])
            first = f"the first of {len(matching)} entries in the service's loadBalancers order (not watched: {others})"
            reason = f"{reason}; {first}" if reason else first
    return LoadBalancerChoice(chosen["targetGroupArn"], chosen.get("containerName"), chosen.get("containerPort"),
                              reason)


def _entry_text(lb: dict[str, Any]) -> str:
    return f"{lb.get('containerName')}:{lb.get('containerPort')} ({arn_dimension(lb['targetGroupArn'])})"


def service_tasks(clients: AwsClients, cluster: str, service: str) -> list[dict[str, Any]]:
    """The service's tasks that are meant to run (describe_tasks' shape), its own only.

    ``list_tasks`` filters by service name; the ``group`` check (``service:<name>``, what ECS gives
    a service's tasks) keeps the answer right should a list ever hold another service's task.
    """
    ecs = clients.client("ecs")
    arns = [arn for page in pages(ecs, "list_tasks", cluster=cluster, serviceName=service, desiredStatus="RUNNING")
            for arn in page.get("taskArns", [])]
    tasks: list[dict[str, Any]] = []
    for start in range(0, len(arns), 100):  # describe_tasks takes at most 100 tasks a call
        answer = call(ecs, "describe_tasks", cluster=cluster, tasks=arns[start:start + 100])
        tasks += answer.get("tasks", [])
    return [task for task in tasks if task.get("group") in (None, f"service:{service}")]


def container_instance_ids(clients: AwsClients, cluster: str, tasks: list[dict[str, Any]]) -> dict[str, str]:
    """EC2 instance id of each container instance the tasks run on (bridge and host network modes,
    whose targets are instances); empty for Fargate and awsvpc tasks."""
    arns = sorted({task["containerInstanceArn"] for task in tasks if task.get("containerInstanceArn")})
    found: dict[str, str] = {}
    for start in range(0, len(arns), 100):
        answer = call(clients.client("ecs"), "describe_container_instances", cluster=cluster,
                      containerInstances=arns[start:start + 100])
        found.update({ci["containerInstanceArn"]: ci["ec2InstanceId"] for ci in answer.get("containerInstances", [])
                      if ci.get("ec2InstanceId")})
    return found


def task_target_addresses(tasks: list[dict[str, Any]], choice: LoadBalancerChoice | None = None,
                          instances: dict[str, str] | None = None) -> set[tuple[str, int | None]]:
    """The load balancer targets the tasks stand for: ``(ip, None)`` for an awsvpc task (its ENI's
    private IP, which no other task has) and ``(instance id, host port)`` for a bridge or host mode
    task on EC2 (the port its container is published on)."""
    instances = instances or {}
    addresses: set[tuple[str, int | None]] = set()
    for task in tasks:
        for attachment in task.get("attachments") or []:
            if attachment.get("type") == "ElasticNetworkInterface":
                for detail in attachment.get("details") or []:
                    if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                        addresses.add((detail["value"], None))
        for container in task.get("containers") or []:
            for interface in container.get("networkInterfaces") or []:
                if interface.get("privateIpv4Address"):
                    addresses.add((interface["privateIpv4Address"], None))
            if choice is not None and choice.container_name and container.get("name") != choice.container_name:
                continue
            instance = instances.get(task.get("containerInstanceArn") or "")
            for binding in container.get("networkBindings") or []:
                same_port = choice is None or choice.container_port is None or \
                    binding.get("containerPort") == choice.container_port
                if instance and same_port and binding.get("hostPort"):
                    addresses.add((instance, int(binding["hostPort"])))
    return addresses


def healthy_own_targets(descriptions: list[dict[str, Any]], addresses: set[tuple[str, int | None]]) -> int:
    """How many of describe_target_health's targets are healthy and belong to ``addresses``: in a
    target group shared with other services, their targets are not this service's capacity."""
    count = 0
    for description in descriptions:
        if (description.get("TargetHealth") or {}).get("State") != "healthy":
            continue
        target = description.get("Target") or {}
        ident, port = target.get("Id"), target.get("Port")
        if (ident, None) in addresses or (ident, port) in addresses:
            count += 1
    return count


def arn_dimension(arn: str) -> str:
    """CloudWatch's dimension value for an ELB ARN: the resource part without ``loadbalancer/``."""
    resource = arn.split(":", 5)[-1]
    return resource.removeprefix("loadbalancer/")
