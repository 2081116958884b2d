"""Container Insights, load balancer, queue and custom metrics of an ECS service, from CloudWatch.

A retrospective source: after a window has ended and its newest period has settled, the
experiment asks for it and gets rows under the canonical names of ``scalefinder.core.catalog``.

How CloudWatch's numbers become ours:

* CPU and memory utilization are computed here from ``CpuUtilized``/``CpuReserved`` and
  ``MemoryUtilized``/``MemoryReserved`` (CloudWatch bills metric math the same, and the moto test
  server cannot evaluate it);
* service totals (memory used, network, storage, active connections, 5xx answers) are divided by
  ``RunningTaskCount`` of the same period to give per-task averages;
* ``RequestCountPerTarget`` (Sum) is already a per-target figure: divided by the period it is
  requests per second per task;
* each row's ``time_unix_s`` is the middle of its CloudWatch period, and only periods lying
  wholly inside a requested window are returned, so no sample mixes two load levels.

Every ``GetMetricData`` call carries as many queries and datapoints as the API allows (500
queries, 100,800 datapoints), so the API calls and the metrics requested (what CloudWatch bills,
about USD 0.01 per 1,000) stay at their minimum; both are reported by ``describe()``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from scalefinder.loadgen.aws.options import service_table
from scalefinder.loadgen.kind_config import flag, seconds, with_defaults
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.sources.base import MetricRow, MetricSource
from scalefinder.core import catalog
from scalefinder.core.errors import InfrastructureError, ProfileError

log = logging.getLogger(__name__)

MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_CALL = 100_800
#: extra requests for queries CloudWatch answered with PartialData and no page token
PARTIAL_DATA_REQUERIES = 2

INSIGHTS = "ECS/ContainerInsights"
ALB = "AWS/ApplicationELB"
SQS = "AWS/SQS"

DEFAULTS: dict[str, Any] = {
    "region": None,
    "period_s": 60,
    # Container Insights and ALB data for a minute usually lands within two minutes.
    "settle_s": 180.0,
    "task_metrics": "auto",
    "load_balancer": True,
    "queue_name": None,
    "custom_metrics": [],
}
CUSTOM_DEFAULTS: dict[str, Any] = {"dimensions": {}, "statistic": "Average", "unit": "", "scale": 1.0,
                                   "per_task": False}
_STATISTIC = re.compile(r"^(Average|Sum|Minimum|Maximum|SampleCount|p\d{1,2}(\.\d+)?)$")
_HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)


# -- configuration --------------------------------------------------------------------------


def validate_config(table: dict, where: str) -> dict:
    """Check ``[sources.cloudwatch]`` and fill in defaults."""
    config = service_table(table, where, DEFAULTS)
    for key in ("region", "queue_name"):
        if config[key] is not None and (not isinstance(config[key], str) or not config[key]):
            raise ProfileError("expected a non-empty string", key=f"{where}.{key}")
    period = config["period_s"]
    if isinstance(period, bool) or not isinstance(period, int) or not (
            period in _HIGH_RESOLUTION_PERIODS or (period >= 60 and period % 60 == 0)):
        raise ProfileError("expected 60 or a multiple of 60 (or 1, 5, 10, 20, 30 for high-resolution "
                           "custom metrics)", key=f"{where}.period_s")
    config["settle_s"] = seconds(config["settle_s"], 0, 900, f"{where}.settle_s")
    if config["task_metrics"] not in ("auto", True, False):
        raise ProfileError('expected "auto", true or false', key=f"{where}.task_metrics")
    flag(config["load_balancer"], f"{where}.load_balancer")
    if not isinstance(config["custom_metrics"], list):
        raise ProfileError("expected an array of tables ([[sources.cloudwatch.custom_metrics]])",
                           key=f"{where}.custom_metrics")
    config["custom_metrics"] = [
        _validate_custom(entry, f"{where}.custom_metrics[{index}]")
        for index, entry in enumerate(config["custom_metrics"])
    ]
    return config


def _validate_custom(entry: Any, where: str) -> dict:
    custom = with_defaults(entry, where, CUSTOM_DEFAULTS, required=("name", "namespace", "metric_name"))
    for key in ("name", "namespace", "metric_name"):
        if not isinstance(custom.get(key), str) or not custom[key]:
            raise ProfileError("required: a non-empty string", key=f"{where}.{key}")
    dimensions = custom["dimensions"]
    if not isinstance(dimensions, dict) or not all(isinstance(v, str) for v in dimensions.values()):
        raise ProfileError('expected a table of strings, e.g. { ServiceName = "web" }', key=f"{where}.dimensions")
    if len(dimensions) > 30:
        raise ProfileError("CloudWatch allows at most 30 dimensions", key=f"{where}.dimensions")
    if not isinstance(custom["statistic"], str) or not _STATISTIC.match(custom["statistic"]):
        raise ProfileError("expected Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p95",
                           key=f"{where}.statistic")
    if not isinstance(custom["unit"], str):
        raise ProfileError("expected a string such as \"requests\"", key=f"{where}.unit")
    if isinstance(custom["scale"], bool) or not isinstance(custom["scale"], (int, float)) or custom["scale"] == 0:
        raise ProfileError("expected a non-zero number", key=f"{where}.scale")
    if not isinstance(custom["per_task"], bool):
        raise ProfileError("expected true or false", key=f"{where}.per_task")
    custom["scale"] = float(custom["scale"])
    custom["unit"] = custom["unit"] or catalog.info(custom["name"]).unit
    return custom


def build(config: dict, context: RunContext) -> "CloudWatchSource":
    from scalefinder.loadgen.aws.discovery import discover, require_container_insights
    from scalefinder.loadgen.aws.session import AwsClients

    clients = AwsClients(region=context.options.get("aws_region") or config.get("region"),
                         profile=context.options.get("aws_profile"))
    facts = discover(clients, config["cluster"], config["service"])
    require_container_insights(facts)
    return CloudWatchSource(clients, facts, config)


# -- what to ask and how to turn it into rows ------------------------------------------------


@dataclass(frozen=True)
class MetricQuery:
    """One CloudWatch metric and statistic: one entry in GetMetricData's MetricDataQueries."""

    namespace: str
    metric_name: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str

    def as_request(self, query_id: str, period_s: int) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {"Namespace": self.namespace, "MetricName": self.metric_name,
                           "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions]},
                "Period": period_s,
                "Stat": self.statistic,
            },
            "ReturnData": True,
        }


@dataclass(frozen=True)
class Recipe:
    """How one of our metrics is made: ``factor * numerator / denominator [/ period]``."""

    metric: str
    unit: str
    numerator: MetricQuery
    denominator: MetricQuery | None = None
    factor: float = 1.0
    per_second: bool = False
    task: str = ""


@dataclass(frozen=True)
class Batch:
    """One GetMetricData request: some queries over one time range."""

    queries: tuple[MetricQuery, ...]
    start_s: int
    end_s: int


def recipes_for(facts: Any, config: dict, task_ids: Iterable[str] = ()) -> list[Recipe]:
    """The recipes of every metric the profile asks for, given what discovery found."""
    service = (("ClusterName", facts.cluster), ("ServiceName", facts.service))

    def insight(name: str, statistic: str = "Average") -> MetricQuery:
        return MetricQuery(INSIGHTS, name, service, statistic)

    running = insight("RunningTaskCount")
    recipes = [
        Recipe(catalog.CPU_UTILIZATION, "percent", insight("CpuUtilized"), insight("CpuReserved"), 100.0),
        Recipe(catalog.MEMORY_UTILIZATION, "percent", insight("MemoryUtilized"), insight("MemoryReserved"), 100.0),
        Recipe("memory_used_mib", "MiB", insight("MemoryUtilized"), running),
        Recipe("network_rx_bytes_per_s", "bytes/s", insight("NetworkRxBytes"), running),
        Recipe("network_tx_bytes_per_s", "bytes/s", insight("NetworkTxBytes"), running),
        Recipe("storage_read_bytes_per_s", "bytes/s", insight("StorageReadBytes", "Sum"), running, per_second=True),
        Recipe("storage_write_bytes_per_s", "bytes/s", insight("StorageWriteBytes", "Sum"), running, per_second=True),
        Recipe(catalog.RUNNING_TASK_COUNT, "tasks", running),
    ]
    for task_id in sorted(task_ids):
        task = (("ClusterName", facts.cluster), ("ServiceName", facts.service), ("TaskId", task_id))
        recipes += [
            Recipe(catalog.CPU_UTILIZATION, "percent", MetricQuery(INSIGHTS, "TaskCpuUtilization", task, "Average"),
                   task=task_id),
            Recipe(catalog.MEMORY_UTILIZATION, "percent",
                   MetricQuery(INSIGHTS, "TaskMemoryUtilization", task, "Average"), task=task_id),
        ]
    if config["load_balancer"]:
        for group in facts.target_groups[:1]:
            recipes += _balancer_recipes(group, running)
    if config["queue_name"]:
        queue = MetricQuery(SQS, "ApproximateNumberOfMessagesVisible", (("QueueName", config["queue_name"]),),
                            "Average")
        recipes.append(Recipe(catalog.QUEUE_BACKLOG, "jobs", queue))
    for custom in config["custom_metrics"]:
        query = MetricQuery(custom["namespace"], custom["metric_name"],
                            tuple(sorted(custom["dimensions"].items())), custom["statistic"])
        recipes.append(Recipe(custom["name"], custom["unit"], query, running if custom["per_task"] else None,
                              custom["scale"]))
    return recipes


def _balancer_recipes(group: Any, running: MetricQuery) -> list[Recipe]:
    target_group = (("TargetGroup", group.dimension),)
    recipes = [Recipe(catalog.REQUESTS_PER_TASK, "requests/s",
                      MetricQuery(ALB, "RequestCountPerTarget", target_group, "Sum"), per_second=True)]
    for balancer in group.load_balancer_dimensions[:1]:
        both = (("LoadBalancer", balancer), ("TargetGroup", group.dimension))
        recipes += [
            Recipe(catalog.CONCURRENCY_PER_TASK, "requests",
                   MetricQuery(ALB, "ActiveConnectionCount", (("LoadBalancer", balancer),), "Sum"), running),
            Recipe("target_response_time_ms", "ms", MetricQuery(ALB, "TargetResponseTime", both, "Average"),
                   factor=1000.0),
            Recipe("http_5xx_per_s", "errors/s", MetricQuery(ALB, "HTTPCode_Target_5XX_Count", both, "Sum"),
                   running, per_second=True),
        ]
    return recipes


def unique_queries(recipes: Iterable[Recipe]) -> list[MetricQuery]:
    seen: dict[MetricQuery, None] = {}
    for recipe in recipes:
        seen.setdefault(recipe.numerator)
        if recipe.denominator is not None:
            seen.setdefault(recipe.denominator)
    return list(seen)


def plan_batches(queries: list[MetricQuery], start_s: int, end_s: int, period_s: int) -> list[Batch]:
    """Split the requests so each call stays within the API's query and datapoint limits."""
    periods = (end_s - start_s) // period_s
    if periods <= 0 or not queries:
        return []
    batches = []
    span_periods = min(periods, MAX_DATAPOINTS_PER_CALL)
    for chunk_start in range(start_s, end_s, span_periods * period_s):
        chunk_end = min(chunk_start + span_periods * period_s, end_s)
        chunk_periods = (chunk_end - chunk_start) // period_s
        per_call = max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // chunk_periods))
        for first in range(0, len(queries), per_call):
            batches.append(Batch(tuple(queries[first:first + per_call]), chunk_start, chunk_end))
    return batches


def lower_bound_calls(query_count: int, periods: int) -> int:
    """The fewest GetMetricData calls the limits allow for this many queries and periods."""
    if query_count == 0 or periods == 0:
        return 0
    return max(math.ceil(query_count / MAX_QUERIES_PER_CALL),
               math.ceil(query_count * periods / MAX_DATAPOINTS_PER_CALL))


def full_periods(windows: list[tuple[float, float]], period_s: int, now_s: float) -> tuple[int, int]:
    """The aligned span covering every whole period of the windows that has ended by ``now_s``."""
    start = math.ceil(min(s for s, _ in windows) / period_s) * period_s
    end = math.floor(min(max(e for _, e in windows), now_s) / period_s) * period_s
    return int(start), int(end)


def rows_from(recipes: list[Recipe], series: dict[MetricQuery, dict[int, float]], period_s: int,
              windows: list[tuple[float, float]]) -> list[MetricRow]:
    """Combine the fetched series into rows, keeping only periods wholly inside a window."""
    rows: list[MetricRow] = []
    for recipe in recipes:
        numerators = series.get(recipe.numerator, {})
        denominators = series.get(recipe.denominator, {}) if recipe.denominator else None
        for start in sorted(numerators):
            if not any(low <= start and start + period_s <= high for low, high in windows):
                continue
            value = recipe.factor * numerators[start]
            if denominators is not None:
                divisor = denominators.get(start)
                if not divisor:
                    continue
                value /= divisor
            if recipe.per_second:
                value /= period_s
            rows.append({"time_unix_s": start + period_s / 2, "source": CloudWatchSource.name,
                         "metric": recipe.metric, "task": recipe.task, "value": value, "unit": recipe.unit})
    rows.sort(key=lambda row: (row["time_unix_s"], row["metric"], row["task"]))
    return rows


# -- the source ------------------------------------------------------------------------------


@dataclass
class _Progress:
    partial_requeries: int = 0
    incomplete_queries: set[str] = field(default_factory=set)


class CloudWatchSource(MetricSource):
    name = "cloudwatch"
    live = False

    def __init__(self, clients: Any, facts: Any, config: dict):
        self.clients = clients
        self.facts = facts
        self.config = config
        self.period_s = int(config["period_s"])
        self.settle_s = float(config["settle_s"])
        self.task_metrics = config["task_metrics"] is True or (
            config["task_metrics"] == "auto" and facts.container_insights == "enhanced")
        self._progress = _Progress()
        self._metric_names: set[str] = set()
        self._calls_planned = 0

    def fetch(self, start_unix_s: float, end_unix_s: float) -> list[MetricRow]:
        return self.fetch_windows([(start_unix_s, end_unix_s)])

    def fetch_windows(self, windows: list[tuple[float, float]]) -> list[MetricRow]:
        """Fetch several windows (e.g. every step of a run) in as few calls as one window would take."""
        if not windows:
            return []
        self._wait_to_settle(max(end for _, end in windows))
        start_s, end_s = full_periods(windows, self.period_s, time.time())
        if end_s <= start_s:
            return []
        recipes = recipes_for(self.facts, self.config, self._task_ids(start_s, end_s) if self.task_metrics else ())
        queries = unique_queries(recipes)
        series = self._fetch_series(queries, start_s, end_s)
        rows = rows_from(recipes, series, self.period_s, windows)
        self._metric_names.update(row["metric"] for row in rows)
        log.info("cloudwatch: %d rows for %d queries over %d s", len(rows), len(queries), end_s - start_s)
        return rows

    def describe(self) -> dict[str, Any]:
        usage = self.clients.usage.as_dict()
        return {
            "kind": self.name,
            "region": self.clients.region,
            "cluster": self.facts.cluster,
            "service": self.facts.service,
            "period_s": self.period_s,
            "settle_s": self.settle_s,
            "container_insights": self.facts.container_insights,
            "task_metrics": self.task_metrics,
            "target_groups": [g.dimension for g in self.facts.target_groups] if self.config["load_balancer"] else [],
            "queue_name": self.config["queue_name"],
            "custom_metrics": [c["name"] for c in self.config["custom_metrics"]],
            "task_cpu_units": self.facts.cpu_units,
            "task_memory_mib": self.facts.memory_mib,
            "metrics": sorted(self._metric_names),
            "get_metric_data_calls_planned": self._calls_planned,
            "partial_data_requeries": self._progress.partial_requeries,
            "incomplete_queries": sorted(self._progress.incomplete_queries),
            **usage,
        }

    # -- internals --------------------------------------------------------------------------
    def _wait_to_settle(self, end_s: float) -> None:
        """CloudWatch still changes the newest period for a while; wait until it is final."""
        wait_s = end_s + self.settle_s - time.time()
        if wait_s > 0:
            log.info("cloudwatch: waiting %.0f s for the last period to settle", wait_s)
            time.sleep(wait_s)

    def _task_ids(self, start_s: int, end_s: int) -> list[str]:
        """Tasks that published task-level metrics (enhanced observability) around the window."""
        from scalefinder.loadgen.aws.session import pages

        dimensions = [{"Name": "ClusterName", "Value": self.facts.cluster},
                      {"Name": "ServiceName", "Value": self.facts.service}]
        task_ids: set[str] = set()
        for answer in pages(self.clients.client("cloudwatch"), "list_metrics", Namespace=INSIGHTS,
                            MetricName="TaskCpuUtilization", Dimensions=dimensions):
            for metric in answer.get("Metrics", []):
                task_ids.update(d["Value"] for d in metric.get("Dimensions", []) if d["Name"] == "TaskId")
        return sorted(task_ids)

    def _fetch_series(self, queries: list[MetricQuery], start_s: int, end_s: int) -> dict[MetricQuery, dict[int, float]]:
        series: dict[MetricQuery, dict[int, float]] = {q: {} for q in queries}
        batches = plan_batches(queries, start_s, end_s, self.period_s)
        self._calls_planned += len(batches)
        for batch in batches:
            pending = list(batch.queries)
            for attempt in range(1 + PARTIAL_DATA_REQUERIES):
                pending = self._get_metric_data(pending, batch.start_s, batch.end_s, series)
                if not pending:
                    break
                if attempt < PARTIAL_DATA_REQUERIES:
                    self._progress.partial_requeries += 1
            for query in pending:
                self._progress.incomplete_queries.add(f"{query.namespace}/{query.metric_name}")
                log.warning("cloudwatch: %s %s stayed incomplete (PartialData)", query.namespace, query.metric_name)
        return series

    def _get_metric_data(self, queries: list[MetricQuery], start_s: int, end_s: int,
                         series: dict[MetricQuery, dict[int, float]]) -> list[MetricQuery]:
        """One request, following its pages; returns the queries still PartialData at the end.

        Every page is a call of its own, and billed for every query again: the clients count the
        metrics requested call by call (``AwsClients``), so the count stays right however many
        pages the paginator follows.
        """
        from scalefinder.loadgen.aws.session import pages

        by_id = {f"m{index}": query for index, query in enumerate(queries)}
        params: dict[str, Any] = {
            "MetricDataQueries": [q.as_request(qid, self.period_s) for qid, q in by_id.items()],
            "StartTime": datetime.fromtimestamp(start_s, timezone.utc),
            "EndTime": datetime.fromtimestamp(end_s, timezone.utc),
            "ScanBy": "TimestampAscending",
        }
        status: dict[str, str] = {}
        for answer in pages(self.clients.client("cloudwatch"), "get_metric_data", **params):
            for result in answer.get("MetricDataResults", []):
                query = by_id.get(result.get("Id"))
                if query is None:
                    continue
                status[result["Id"]] = result.get("StatusCode", "Complete")
                if status[result["Id"]] in ("Forbidden", "InternalError"):
                    raise InfrastructureError(
                        f"CloudWatch answered {status[result['Id']]} for {query.namespace} {query.metric_name}")
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", [])):
                    moment = int(stamp.timestamp())
                    if start_s <= moment < end_s:
                        series[query][moment - moment % self.period_s] = float(value)
        return [by_id[qid] for qid, code in status.items() if code == "PartialData"]
