"""The recommendation as Kubernetes manifests: a HorizontalPodAutoscaler and a KEDA ScaledObject.

Each manifest is checked before it is shipped, as the AWS requests are checked against
botocore's model: the HPA against the Kubernetes OpenAPI schema (``kubernetes-validate``'s
copy, for the oldest and the newest version it carries), the ScaledObject against the schema of
KEDA's CRD (``schemas/``) plus the trigger metadata KEDA requires. A manifest that would be
refused is a bug (``ManifestShapeError``), never output.

Three conversions matter here, and each rendering says which it made:

* **Utilization is a share of the requests.** The run measured CPU and memory as a share of the
  task's limit (or ECS reservation); the HPA's ``averageUtilization`` is a share of the
  container's requests. ``target x limit / request``, rounded down (an earlier scale-out, never
  a later one). Without a request, the limit is taken as the request (a Guaranteed pod), and
  the manifest says so.
* **Per-pod metrics are averages.** ``Pods`` metrics and KEDA's triggers use AverageValue:
  the autoscaler divides the total by the replicas, so the per-task target goes in as it is.
* **Some KEDA triggers take whole numbers only** (SQS ``queueLength``, Kafka ``lagThreshold``,
  Redis ``listLength``): the target is rounded down for them.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from scalefinder.analysis.deployment import QUEUE_PLACEHOLDER, Deployment, PrometheusFacts
from scalefinder.core import catalog, quantity

NAMESPACE_PLACEHOLDER = "NAMESPACE"
WORKLOAD_PLACEHOLDER = "WORKLOAD_NAME"
PROMETHEUS_PLACEHOLDER = "http://PROMETHEUS_HOST:9090"
TRIGGER_AUTH_PLACEHOLDER = "TRIGGER_AUTHENTICATION_NAME"
SCALE_UP_PERIOD_S = 60
SCALE_DOWN_WINDOW_S = 300  # the scale-in cooldown the AWS renderings use
DEFAULT_MAX_FACTOR = 10  # maxReplicas without a profile value: room for ten times the floor

# Series an adapter or a trigger reads for the per-pod metrics, when the run's own query does not
# name one: the usual names of an in-flight gauge and a request counter.
DEFAULT_SERIES = {catalog.CONCURRENCY_PER_TASK: "http_requests_in_flight",
                  catalog.REQUESTS_PER_TASK: "http_requests_total"}
# The metric name the adapter serves and the HPA asks for.
POD_METRIC_NAMES = {catalog.CONCURRENCY_PER_TASK: "requests_in_flight",
                    catalog.REQUESTS_PER_TASK: "requests_per_second"}

# KEDA's trigger metadata (keda v2.20 scalers): the keys each trigger requires, the key that
# carries the per-replica target, and whether KEDA parses that key as a whole number.
TRIGGERS: dict[str, dict[str, Any]] = {
    "aws-sqs-queue": {"required": ("queueURL", "awsRegion"), "target": "queueLength", "whole": True},
    "rabbitmq": {"required": ("queueName", "mode", "value"), "target": "value", "whole": False},
    "kafka": {"required": ("bootstrapServers", "consumerGroup", "lagThreshold"), "target": "lagThreshold",
              "whole": True},
    "redis": {"required": ("address", "listName", "listLength"), "target": "listLength", "whole": True},
    "prometheus": {"required": ("serverAddress", "query", "threshold"), "target": "threshold", "whole": False},
    "cpu": {"required": ("value",), "target": "value", "whole": True},
    "memory": {"required": ("value",), "target": "value", "whole": True},
}
# Triggers whose credentials (or host, for RabbitMQ) come from a TriggerAuthentication.
NEEDS_AUTHENTICATION = ("aws-sqs-queue", "rabbitmq", "kafka", "redis")


class ManifestShapeError(Exception):
    """A rendered manifest does not match its schema: a programming error, not user input."""


@dataclass(frozen=True)
class Rendering:
    hpa: str
    keda: str
    prometheus_adapter: str | None
    conversion: dict[str, Any]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"hpa": self.hpa, "keda": self.keda, "prometheus_adapter": self.prometheus_adapter,
                "conversion": self.conversion, "notes": list(self.notes)}


def render(metric: str, target: float, step: dict[str, Any], deployment: Deployment) -> Rendering:
    """Both manifests for scaling on ``metric`` at ``target`` (scalefinder's unit)."""
    notes: list[str] = []
    settings = deployment.kubernetes
    name = settings.workload_name or WORKLOAD_PLACEHOLDER
    metadata = {"name": name, "namespace": settings.namespace or NAMESPACE_PLACEHOLDER}
    scale_target = {"apiVersion": "apps/v1", "kind": settings.workload_kind or "Deployment", "name": name}
    low = settings.min_replicas or deployment.initial_tasks or 2
    high = settings.max_replicas or max(low, DEFAULT_MAX_FACTOR * low)
    if settings.max_replicas is None:
        notes.append(f"maxReplicas is {high} ({DEFAULT_MAX_FACTOR} x minReplicas): set [kubernetes] max_replicas "
                     "for your peak")
    conversion = utilization_conversion(metric, target, deployment)
    if conversion.get("note"):
        notes.append(conversion["note"])
    adapter = None
    if metric in (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION):
        resource = "cpu" if metric == catalog.CPU_UTILIZATION else "memory"
        hpa_metric: dict[str, Any] = {"type": "Resource", "resource": {"name": resource, "target": {
            "type": "Utilization", "averageUtilization": conversion["average_utilization"]}}}
        trigger: dict[str, Any] = {"type": resource, "metricType": "Utilization",
                                   "metadata": {"value": str(conversion["average_utilization"])}}
    elif metric in POD_METRIC_NAMES:
        series = _series_name(metric, deployment.prometheus)
        hpa_metric = {"type": "Pods", "pods": {"metric": {"name": POD_METRIC_NAMES[metric]},
                                              "target": {"type": "AverageValue", "averageValue": quantity.plain(target)}}}
        adapter = _adapter_rule(metric, series, deployment.prometheus)
        trigger = _prometheus_trigger(_total_query(metric, series, deployment.prometheus), target, deployment)
    else:
        # A service-wide total (a queue's backlog, an application counter): an External metric
        # divided among the pods by AverageValue, as KEDA's triggers do.
        hpa_metric = {"type": "External", "external": {"metric": {"name": _external_name(metric)},
                                                      "target": {"type": "AverageValue",
                                                                 "averageValue": quantity.plain(target)}}}
        trigger = _queue_trigger(metric, target, deployment, notes) if metric == catalog.QUEUE_BACKLOG_PER_TASK \
            else _prometheus_trigger(_total_query(metric, metric, deployment.prometheus), target, deployment)
        notes.append(f"the HPA reads {_external_name(metric)} from an external metrics adapter; "
                     "KEDA's ScaledObject (the keda rendering) serves it without one")
    behavior = hpa_behavior(step)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
           "spec": {"scaleTargetRef": scale_target, "minReplicas": low, "maxReplicas": high,
                    "metrics": [hpa_metric], "behavior": behavior}}
    scaled_object = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": dict(metadata),
                     "spec": {"scaleTargetRef": scale_target, "minReplicaCount": low, "maxReplicaCount": high,
                              "cooldownPeriod": SCALE_DOWN_WINDOW_S,
                              "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                              "triggers": [trigger]}}
    validate_hpa(hpa)
    validate_scaled_object(scaled_object)
    header = _header(metric, target, conversion, notes)
    return Rendering(hpa=header + _yaml(hpa), keda=header + _yaml(scaled_object),
                     prometheus_adapter=_yaml(adapter) if adapter else None, conversion=conversion,
                     notes=tuple(notes))


def utilization_conversion(metric: str, target: float, deployment: Deployment) -> dict[str, Any]:
    """``averageUtilization`` (share of the requests) from the target (share of the limit)."""
    if metric not in (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION):
        return {}
    res = deployment.resources
    cpu = metric == catalog.CPU_UTILIZATION
    limit = res.cpu_limit_cores if cpu else res.memory_limit_bytes
    request = res.cpu_request_cores if cpu else res.memory_request_bytes
    show = quantity.cpu if cpu else quantity.memory
    result: dict[str, Any] = {"measured_share_of_limit_pct": target, "limit": show(limit) if limit else None,
                              "limit_source": res.limit_source if limit else None,
                              "request": show(request) if request else None,
                              "request_source": res.request_source if request else None}
    if limit and request:
        share = target * limit / request
        result["note"] = (f"averageUtilization is a share of the requests: {target:g}% of the {show(limit)} limit "
                          f"= {share:.1f}% of the {show(request)} request (request from {res.request_source}; "
                          f"limit from {res.limit_source})")
    elif limit:
        share = target
        result["note"] = (f"no {'CPU' if cpu else 'memory'} request known: taken equal to the {show(limit)} limit "
                          f"(a Guaranteed pod); set [kubernetes] {'cpu' if cpu else 'memory'}_request if the pod "
                          "requests less, since averageUtilization is a share of the requests")
    else:
        share = target
        result["note"] = ("the limit the run measured against is not known: the target is used as a share of the "
                          "requests unchanged")
    # rounded down: the integer the HPA takes must not put the scale-out later than measured
    result["average_utilization"] = max(1, math.floor(share + 1e-9))
    return result


def hpa_behavior(step: dict[str, Any]) -> dict[str, Any]:
    """The step-scaling advice in the HPA's terms: scale out at once by the largest step (or at
    least the smallest adjustment), scale in slowly after the same five minutes as the
    scale-in cooldown."""
    largest = max(int(abs(a)) for a in step["adjustments"])
    at_least = max(1, int(step.get("min_adjustment_magnitude") or 1))
    scale_in = max(1, int(abs(step.get("scale_in_adjustment") or 10)))
    return {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": largest, "periodSeconds": SCALE_UP_PERIOD_S},
                {"type": "Pods", "value": at_least, "periodSeconds": SCALE_UP_PERIOD_S}]},
            "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": scale_in, "periodSeconds": SCALE_UP_PERIOD_S}]}}


# -- per-pod metrics through the adapter, totals through KEDA -------------------------------------
_SERIES_IN_QUERY = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*[{\[]")
_PROMQL_WORDS = {"sum", "avg", "max", "min", "count", "rate", "irate", "increase", "by", "without", "on",
                 "ignoring", "group_left", "group_right", "avg_over_time", "max_over_time", "sum_over_time"}


def _series_name(metric: str, prometheus: PrometheusFacts | None) -> str:
    """The series the run's own query read for ``metric``, else the usual name."""
    query = (prometheus.queries.get(metric) if prometheus else None) or ""
    for name in _SERIES_IN_QUERY.findall(query):
        if name not in _PROMQL_WORDS:
            return name
    return DEFAULT_SERIES[metric]


def _adapter_rule(metric: str, series: str, prometheus: PrometheusFacts | None) -> dict[str, Any]:
    """A prometheus-adapter rule that serves ``series`` per pod under the name the HPA asks for."""
    task_label = prometheus.task_label if prometheus else "pod"
    if metric == catalog.REQUESTS_PER_TASK:
        query = "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)"
    else:
        query = "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
    return {"rules": [{"seriesQuery": f'{series}{{namespace!="",{task_label}!=""}}',
                       "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                                   task_label: {"resource": "pod"}}},
                       "name": {"matches": f"^{re.escape(series)}$", "as": POD_METRIC_NAMES[metric]},
                       "metricsQuery": query}]}


def _total_query(metric: str, series: str, prometheus: PrometheusFacts | None) -> str:
    """The service's total of ``metric`` in PromQL: KEDA divides it among the replicas."""
    own = prometheus.queries.get(metric) if prometheus else None
    if own:
        return own if catalog.info(metric).scope == "service_total" else f"sum({own})"
    if metric == catalog.REQUESTS_PER_TASK:
        return f"sum(rate({series}[2m]))"
    return f"sum({series})"


def _prometheus_trigger(query: str, target: float, deployment: Deployment) -> dict[str, Any]:
    server = deployment.prometheus.url if deployment.prometheus else PROMETHEUS_PLACEHOLDER
    return {"type": "prometheus", "metricType": "AverageValue",
            "metadata": {"serverAddress": server, "query": query, "threshold": _number(target)}}


def _queue_trigger(metric: str, target: float, deployment: Deployment, notes: list[str]) -> dict[str, Any]:
    """The broker's own trigger for the backlog: the profile's choice; else SQS when the run read
    an SQS queue; else Prometheus on the run's backlog query."""
    settings, aws = deployment.kubernetes, deployment.aws
    kind = settings.keda_trigger or ("aws-sqs-queue" if aws.queue != QUEUE_PLACEHOLDER else "prometheus")
    spec = TRIGGERS[kind]
    value = _whole(target) if spec["whole"] else _number(target)
    if spec["whole"] and _whole(target) != _number(target):
        notes.append(f"KEDA's {kind} trigger takes a whole number: {spec['target']} is {value}, "
                     f"the {target:g} jobs per task rounded down")
    if kind == "prometheus":
        trigger = _prometheus_trigger(_total_query(catalog.QUEUE_BACKLOG, "QUEUE_BACKLOG_SERIES",
                                                   deployment.prometheus), target, deployment)
        if deployment.prometheus and deployment.prometheus.queries.get(catalog.QUEUE_BACKLOG_PER_TASK) \
                and not deployment.prometheus.queries.get(catalog.QUEUE_BACKLOG):
            per_task = deployment.prometheus.queries[catalog.QUEUE_BACKLOG_PER_TASK]
            trigger["metadata"]["query"] = f"sum({per_task})"
        trigger["metadata"].update(settings.trigger_metadata)
        trigger["metadata"]["threshold"] = value
        return trigger
    defaults = {
        "aws-sqs-queue": {"queueURL": aws.queue, "awsRegion": aws.region or "AWS_REGION",
                          # scalefinder measured the visible messages only; KEDA adds the in-flight
                          # ones unless told not to, which would scale on a different quantity
                          "scaleOnInFlight": "false"},
        "rabbitmq": {"queueName": aws.queue, "mode": "QueueLength", "protocol": "auto"},
        "kafka": {"bootstrapServers": "KAFKA_BOOTSTRAP_SERVERS", "consumerGroup": "CONSUMER_GROUP",
                  "topic": "TOPIC"},
        "redis": {"address": "REDIS_HOST:6379", "listName": aws.queue},
    }[kind]
    metadata = {**defaults, **settings.trigger_metadata, spec["target"]: value}
    trigger = {"type": kind, "metricType": "AverageValue", "metadata": metadata}
    if kind in NEEDS_AUTHENTICATION:
        trigger["authenticationRef"] = {"name": TRIGGER_AUTH_PLACEHOLDER}
    return trigger


def _external_name(metric: str) -> str:
    """The service-wide series the external metrics adapter serves: for the backlog per task it is
    the queue's whole backlog, which the HPA divides among the pods (AverageValue)."""
    total = catalog.QUEUE_BACKLOG if metric == catalog.QUEUE_BACKLOG_PER_TASK else metric
    return re.sub(r"[^a-z0-9_]", "_", total.lower())


def _number(value: float) -> str:
    return f"{value:g}"


def _whole(value: float) -> str:
    return str(max(1, math.floor(value + 1e-9)))


# -- checks -------------------------------------------------------------------------------------
def kubernetes_versions() -> tuple[str, ...]:
    """The oldest and the newest Kubernetes versions whose schemas kubernetes-validate carries."""
    from kubernetes_validate import utils

    versions = utils.all_versions()
    return tuple(dict.fromkeys((utils.major_minor(versions[0]), utils.major_minor(versions[-1]))))


def validate_hpa(manifest: dict[str, Any]) -> None:
    import kubernetes_validate

    for version in kubernetes_versions():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise ManifestShapeError(f"the HorizontalPodAutoscaler does not match Kubernetes {version}'s schema "
                                     f"at {where or '(top)'}: {exc.message}") from None


def validate_scaled_object(manifest: dict[str, Any]) -> None:
    import jsonschema

    if manifest.get("apiVersion") != "keda.sh/v1alpha1" or manifest.get("kind") != "ScaledObject":
        raise ManifestShapeError("a ScaledObject is keda.sh/v1alpha1, kind ScaledObject")
    errors = sorted(jsonschema.Draft7Validator(_scaled_object_schema()).iter_errors(manifest), key=str)
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.path)
        raise ManifestShapeError(f"the ScaledObject does not match KEDA's CRD schema at {where or '(top)'}: "
                                 f"{error.message}")
    for trigger in manifest["spec"]["triggers"]:
        spec = TRIGGERS.get(trigger["type"])
        if spec is None:
            raise ManifestShapeError(f"no rule for KEDA trigger {trigger['type']!r}")
        missing = [key for key in spec["required"] if not trigger["metadata"].get(key)]
        if missing:
            raise ManifestShapeError(f"KEDA's {trigger['type']} trigger needs {', '.join(missing)}")
        if spec["whole"] and not re.fullmatch(r"[0-9]+", trigger["metadata"][spec["target"]]):
            raise ManifestShapeError(f"KEDA parses {trigger['type']}'s {spec['target']} as a whole number")


@functools.lru_cache(maxsize=1)
def _scaled_object_schema() -> dict[str, Any]:
    """KEDA's CRD schema, with unknown fields refused: the API server would drop them silently
    (pruning), and a field that is dropped is a setting that never takes effect."""
    text = resources.files("scalefinder.analysis").joinpath("schemas/keda-scaledobject-v1alpha1.json").read_text()
    schema = json.loads(text)
    schema.pop("$comment", None)

    def closed(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                closed(value)
        elif isinstance(node, list):
            for value in node:
                closed(value)

    closed(schema)
    # metadata is the ObjectMeta the API server checks itself; the CRD leaves it open
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


# -- text -----------------------------------------------------------------------------------------
def _yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _header(metric: str, target: float, conversion: dict[str, Any], notes: list[str]) -> str:
    lines = [f"# Recommended by scalefinder: scale on {metric} at {target:g} "
             f"({catalog.info(metric).unit or 'per task'})."]
    lines += [f"# {note}." if not note.endswith(".") else f"# {note}" for note in notes]
    lines.append("# Names in capitals are placeholders to fill in.")
    return "\n".join(lines) + "\n"
