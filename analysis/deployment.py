"""What a run knows about where its service runs, for the policies rendered from its findings.

A policy is only as useful as the names in it: the ECS cluster and service, the queue, the
Kubernetes namespace and workload. The run's resolved profile and its sources' descriptions hold
what the team told scalefinder and what the sources found; this module gathers them from the
manifest, once, so every rendering fills in the same names and leaves the same placeholders.

It also gathers the container's limits and requests. The utilization a run measures is a share
of the task's limit (the ECS reservation, the local task's CPU units, cAdvisor's quota), while a
HorizontalPodAutoscaler's ``averageUtilization`` is a share of the container's *requests*; the
conversion between the two needs both, and says where each came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from scalefinder.analysis import units
from scalefinder.core import catalog, quantity
from scalefinder.core.models import KubernetesSettings, RunManifest

CLUSTER_PLACEHOLDER = "CLUSTER_NAME"
SERVICE_PLACEHOLDER = "SERVICE_NAME"
QUEUE_PLACEHOLDER = "QUEUE_NAME"
LOAD_BALANCER_PLACEHOLDER = "app/LOAD_BALANCER/LB_ID"
TARGET_GROUP_PLACEHOLDER = "targetgroup/TARGET_GROUP/TG_ID"
CPU_UNITS_PER_CORE = 1024.0


@dataclass(frozen=True)
class AwsNames:
    """ECS and SQS names for the AWS renderings; placeholders in capitals where the run has none."""

    cluster: str = CLUSTER_PLACEHOLDER
    service: str = SERVICE_PLACEHOLDER
    queue: str = QUEUE_PLACEHOLDER
    region: str | None = None
    #: CloudWatch's TargetGroup and LoadBalancer dimension values
    target_group: str = TARGET_GROUP_PLACEHOLDER
    load_balancer: str = LOAD_BALANCER_PLACEHOLDER


@dataclass(frozen=True)
class Resources:
    """The container's CPU (cores) and memory (bytes) limits and requests, each with its source."""

    cpu_limit_cores: float | None = None
    memory_limit_bytes: float | None = None
    limit_source: str | None = None
    cpu_request_cores: float | None = None
    memory_request_bytes: float | None = None
    request_source: str | None = None


@dataclass(frozen=True)
class PrometheusFacts:
    """The Prometheus server a run read and the filled-in query of each metric it read."""

    url: str
    queries: Mapping[str, str]
    task_label: str = "pod"


@dataclass(frozen=True)
class Deployment:
    aws: AwsNames
    kubernetes: KubernetesSettings
    resources: Resources
    prometheus: PrometheusFacts | None
    initial_tasks: int | None
    #: the profile's [[sources.cloudwatch.custom_metrics]] entries by name: a policy on one of
    #: them tracks the metric the run read, in its namespace, with its dimensions and statistic
    custom_metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the run read concurrency per task from the load balancer's ActiveConnectionCount (the
    #: CloudWatch source's own recipe), not from an application gauge
    concurrency_from_load_balancer: bool = False


def from_manifest(manifest: RunManifest) -> Deployment:
    profile = manifest.profile if isinstance(manifest.profile, Mapping) else {}
    settings = manifest.kubernetes_settings
    tasks = manifest.initial_tasks
    described = manifest.sources if isinstance(manifest.sources, Mapping) else {}
    cloudwatch = (profile.get("sources") or {}).get("cloudwatch") or {}
    custom = {str(entry["name"]): entry for entry in cloudwatch.get("custom_metrics") or ()
              if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)}
    return Deployment(aws=_aws_names(profile, described.get("cloudwatch")), kubernetes=settings,
                      resources=_resources(manifest, settings, described),
                      prometheus=_prometheus(described.get("prometheus")),
                      initial_tasks=tasks if isinstance(tasks, int) and not isinstance(tasks, bool) and tasks > 0
                      else None,
                      custom_metrics=custom,
                      concurrency_from_load_balancer=bool(cloudwatch) and catalog.CONCURRENCY_PER_TASK not in custom)


def _aws_names(profile: Mapping[str, Any], described: Any) -> AwsNames:
    """``[capacity.ecs]`` and ``[sources.cloudwatch]`` both name the cluster and service; the
    profile loader has already checked they are text. The target group is the one the
    CloudWatch source found from the service."""
    capacity = profile.get("capacity") or {}
    ecs = (capacity.get("config") or {}) if capacity.get("controller") == "ecs" else {}
    cloudwatch = (profile.get("sources") or {}).get("cloudwatch") or {}
    names: dict[str, Any] = {}
    for key, field_name in (("cluster", "cluster"), ("service", "service")):
        value = ecs.get(key) or cloudwatch.get(key)
        if isinstance(value, str) and value:
            names[field_name] = value
    if isinstance(cloudwatch.get("queue_name"), str) and cloudwatch["queue_name"]:
        names["queue"] = cloudwatch["queue_name"]
    region = ecs.get("region") or cloudwatch.get("region")
    if isinstance(region, str) and region:
        names["region"] = region
    groups = described.get("target_groups") if isinstance(described, Mapping) else None
    if isinstance(groups, list) and groups and isinstance(groups[0], str) and groups[0]:
        names["target_group"] = groups[0]
    return AwsNames(**names)


def _resources(manifest: RunManifest, settings: KubernetesSettings, described: Mapping[str, Any]) -> Resources:
    read = (described.get("prometheus") or {}).get("resources") or {}
    read = read if isinstance(read, Mapping) else {}
    target = manifest.target if isinstance(manifest.target, Mapping) else {}
    cpu_limit = memory_limit = None
    limit_source = None
    if _positive(target.get("cpu_units")):
        cpu_limit = float(target["cpu_units"]) / CPU_UNITS_PER_CORE
        memory_limit = float(target["memory_mib"]) * quantity.MIB if _positive(target.get("memory_mib")) else None
        limit_source = "the local task's reservation (cpu_units, memory_mib)"
    elif _positive(read.get("cpu_limit_cores")) or _positive(read.get("memory_limit_bytes")):
        cpu_limit = float(read["cpu_limit_cores"]) if _positive(read.get("cpu_limit_cores")) else None
        memory_limit = float(read["memory_limit_bytes"]) if _positive(read.get("memory_limit_bytes")) else None
        limit_source = str(read.get("source") or "the Prometheus source")
    elif (cpu_units := units.cpu_units_from_manifest(manifest)) is not None:
        # the task definition a metric source described (ECS)
        cpu_limit = cpu_units / CPU_UNITS_PER_CORE
        memories = [float(d["task_memory_mib"]) for d in described.values()
                    if isinstance(d, Mapping) and _positive(d.get("task_memory_mib"))]
        memory_limit = memories[0] * quantity.MIB if memories else None
        limit_source = "the ECS task definition's reservation"
    # the profile's own values first; what kube-state-metrics reported fills the gaps
    cpu_request = quantity.parse(settings.cpu_request) if settings.cpu_request else None
    memory_request = quantity.parse(settings.memory_request) if settings.memory_request else None
    sources = ["the profile's [kubernetes] table"] if cpu_request or memory_request else []
    read_any = False
    if cpu_request is None and _positive(read.get("cpu_request_cores")):
        cpu_request, read_any = float(read["cpu_request_cores"]), True
    if memory_request is None and _positive(read.get("memory_request_bytes")):
        memory_request, read_any = float(read["memory_request_bytes"]), True
    if read_any:
        sources.append(str(read.get("source") or "the Prometheus source"))
    request_source = " and ".join(sources) or None
    return Resources(cpu_limit, memory_limit, limit_source, cpu_request, memory_request, request_source)


def _prometheus(described: Any) -> PrometheusFacts | None:
    if not isinstance(described, Mapping) or not isinstance(described.get("url"), str):
        return None
    queries = described.get("queries")
    task_label = described.get("task_label")
    return PrometheusFacts(described["url"],
                           {str(k): str(v) for k, v in queries.items()} if isinstance(queries, Mapping) else {},
                           task_label if isinstance(task_label, str) else "pod")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
