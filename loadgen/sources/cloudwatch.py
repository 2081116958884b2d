"""Container Insights, load balancer, queue and custom metrics of an ECS service, from CloudWatch.

A retrospective source: after a window has ended and its newest period has settled, the
experiment asks for it and gets rows under the canonical names of ``scalefinder.core.catalog``.

How CloudWatch's numbers become ours:

* **Per-task values of Container Insights** (``CpuUtilized``, ``CpuReserved``, ``MemoryUtilized``,
  ``MemoryReserved``, ``NetworkRxBytes``, ``NetworkTxBytes``, ``StorageReadBytes``,
  ``StorageWriteBytes``; dimensions ``ClusterName``, ``ServiceName``). AWS's documentation does
  not settle whether the service datapoint is written once per task per minute (each task's
  value: ``Average`` is per task, ``Sum`` the total) or once per minute as a service total. The
  source reads ``Sum`` and ``SampleCount`` of each and tells the two apart from the data
  (``service_datapoint_mode``): ``SampleCount / (RunningTaskCount × minutes in the period)`` is
  about 1 when each task writes its own datapoint (``per_task``), about ``1 / tasks`` when one
  total is written per minute (``total``). The per-task value is then

      per_task:  Sum / SampleCount                       (the mean over the tasks' datapoints)
      total:     Sum / SampleCount / RunningTaskCount    (the mean total, shared by the tasks)

  which is the same number either way. With one task the two readings coincide
  (``undetermined``, same formula); a ratio near neither (e.g. a publisher writing every few
  seconds) is ``unrecognized`` and gives no rows rather than a number off by the task count.
  CPU and memory utilization are ``100 × per-task utilized / per-task reserved``, both by this
  rule. ``describe()["service_datapoint"]`` records which reading the data showed.
* **Storage** (``StorageReadBytes``, ``StorageWriteBytes``) is a cumulative counter in Container
  Insights: the rate per task is the difference of the per-task value between two consecutive
  periods divided by the period, kept only when both periods lie in one window, the running task
  count and the number of datapoints did not change between them, and the difference is not
  negative (a replaced task restarts its counter).
* ``RequestCountPerTarget`` (Sum) is already a per-target figure: divided by the period it is
  requests per second per task. ``ActiveConnectionCount`` (Sum, one value a minute per load
  balancer node) is divided by the minutes in the period and by ``RunningTaskCount``.
* **Periods**: AWS's metrics (Container Insights, ALB, SQS) are standard resolution, so they are
  read at 60 s, or at the profile's ``period_s`` when that is a multiple of 60; only custom metrics
  declared ``high_resolution = true`` are read at a shorter ``period_s``. Data older than 3 hours
  exists only at 60 s, older than 15 days at 300 s and older than 63 days at 3600 s, so each
  query's period is raised for the part of the range that old (``time_segments``).
* each row's ``time_unix_s`` is the middle of its CloudWatch period, and only periods lying
  wholly inside a requested window are returned, so no sample mixes two load levels.

Before any load is sent, ``check`` (the preflight, run by ``build``) refuses a cluster without
Container Insights and a service whose Container Insights metrics have no datapoint in the last
15 minutes (``InputError``, exit 2, with the command that turns it on); load balancer, queue,
network and storage metrics without recent data are warnings, since some appear only under load.

Every ``GetMetricData`` call carries as many queries and datapoints as the API allows (500
queries, 100,800 datapoints), so the API calls and the metrics requested (what CloudWatch bills,
about USD 0.01 per 1,000) stay at their minimum; both are reported by ``describe()``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Iterable

from scalefinder.loadgen.aws.options import service_table
from scalefinder.loadgen.kind_config import flag, seconds, with_defaults
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.sources.base import MetricRow, MetricSource
from scalefinder.core import catalog
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError

log = logging.getLogger(__name__)

MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_CALL = 100_800
#: extra requests for queries CloudWatch answered with PartialData and no page token
PARTIAL_DATA_REQUERIES = 2

INSIGHTS = "ECS/ContainerInsights"
ALB = "AWS/ApplicationELB"
SQS = "AWS/SQS"

#: AWS's own metrics (Container Insights, ALB, SQS) are standard resolution: one datapoint a minute.
STANDARD_PERIOD_S = 60
#: (age, multiple): data older than ``age`` seconds exists only at periods that are a multiple of
#: ``multiple`` (CloudWatch's retention: 3 hours of sub-minute data, 15 days of one-minute data,
#: 63 days of five-minute data). Oldest first.
AGE_TIERS = ((63 * 86400, 3600), (15 * 86400, 300), (3 * 3600, 60))
#: Data this close to a tier's age is treated as past it: the fetch itself takes time, and the
#: boundary must not be crossed between planning a call and CloudWatch answering it.
AGE_MARGIN_S = 600
#: ListMetrics lists only the dimension sets with data in the last three hours when asked to
#: (``RecentlyActive``, whose only value is ``PT3H``); without it, every task of the last two weeks.
RECENTLY_ACTIVE = "PT3H"
RECENTLY_ACTIVE_S = 3 * 3600
#: The preflight looks for at least one datapoint of each metric in this many recent seconds.
PREFLIGHT_RECENT_S = 15 * 60

#: How a service-level Container Insights datapoint is written (``service_datapoint_mode``).
PER_TASK, TOTAL, UNDETERMINED, UNRECOGNIZED = "per_task", "total", "undetermined", "unrecognized"
#: A SampleCount ratio further than this factor from both readings is not trusted.
MODE_TOLERANCE = 1.5
#: Container Insights metrics that every running ECS task writes: without them nothing is measured.
REQUIRED_INSIGHTS = ("RunningTaskCount", "CpuUtilized", "CpuReserved", "MemoryUtilized", "MemoryReserved")

DEFAULTS: dict[str, Any] = {
    "region": None,
    "period_s": 60,
    # Container Insights and ALB data for a minute usually lands within two minutes.
    "settle_s": 180.0,
    "task_metrics": "auto",
    "load_balancer": True,
    "queue_name": None,
    "custom_metrics": [],
    # CloudWatch's minute: AWS publishes its metrics once a minute. Tests against a local endpoint
    # (moto on 127.0.0.1) may compress it to a few seconds; ``build`` refuses that elsewhere.
    "minute_s": STANDARD_PERIOD_S,
}
#: compressed minutes a test may use: divisors of the real one, so periods still line up with it
MINUTE_CHOICES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)
CUSTOM_DEFAULTS: dict[str, Any] = {"dimensions": {}, "statistic": "Average", "unit": "", "scale": 1.0,
                                   "per_task": False, "high_resolution": False}
_STATISTIC = re.compile(r"^(Average|Sum|Minimum|Maximum|SampleCount|p\d{1,2}(\.\d+)?)$")
_HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)


# -- configuration --------------------------------------------------------------------------


def validate_config(table: dict, where: str) -> dict:
    """Check ``[sources.cloudwatch]`` and fill in defaults."""
    config = service_table(table, where, DEFAULTS)
    for key in ("region", "queue_name"):
        if config[key] is not None and (not isinstance(config[key], str) or not config[key]):
            raise ProfileError("expected a non-empty string", key=f"{where}.{key}")
    minute = config["minute_s"]
    if isinstance(minute, bool) or minute not in MINUTE_CHOICES:
        raise ProfileError(f"expected 60 (CloudWatch's minute), or for tests against a local endpoint one of "
                           f"{', '.join(str(m) for m in MINUTE_CHOICES[:-1])}", key=f"{where}.minute_s")
    period = config["period_s"]
    if isinstance(period, bool) or not isinstance(period, int) or not (
            period in _HIGH_RESOLUTION_PERIODS or (period >= minute and period % minute == 0)):
        raise ProfileError(f"expected {minute} or a multiple of {minute} (or 1, 5, 10, 20, 30 for high-resolution "
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
    if period < minute and not any(c["high_resolution"] for c in config["custom_metrics"]):
        # Container Insights, ALB and SQS have one datapoint a minute: a shorter period would divide
        # a minute's Sum by a fraction of the minute, and no hold would be checked for 60 s data.
        raise ProfileError(f"{period} s applies only to custom metrics declared high_resolution = true; "
                           f"Container Insights, load balancer and SQS metrics are read at {minute} s: "
                           f"use {minute} or a multiple", key=f"{where}.period_s")
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
    flag(custom["high_resolution"], f"{where}.high_resolution")
    if custom["high_resolution"] and aws_namespace(custom["namespace"]):
        raise ProfileError(f"{custom['namespace']} is an AWS namespace: its metrics are standard resolution "
                           "(one datapoint a minute)", key=f"{where}.high_resolution")
    custom["scale"] = float(custom["scale"])
    custom["unit"] = custom["unit"] or catalog.info(custom["name"]).unit
    return custom


def build(config: dict, context: RunContext) -> "CloudWatchSource":
    """Discover the service, then run the preflight (``CloudWatchSource.check``) before any load."""
    from scalefinder.loadgen.aws.discovery import discover
    from scalefinder.loadgen.aws.session import AwsClients

    clients = AwsClients(region=context.options.get("aws_region") or config.get("region"),
                         profile=context.options.get("aws_profile"))
    _check_compressed_minute(config, clients)
    facts = discover(clients, config["cluster"], config["service"])
    _check_holds(config, getattr(context, "profile", None))
    source = CloudWatchSource(clients, facts, config)
    source.check()
    return source


def _check_compressed_minute(config: dict, clients: Any) -> None:
    """A minute shorter than 60 s exists only in a test's moto server: refuse it against AWS."""
    if config["minute_s"] == STANDARD_PERIOD_S:
        return
    import urllib.parse

    endpoint = clients.client("cloudwatch").meta.endpoint_url
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if not (host == "localhost" or host.startswith("127.")):
        raise InputError(f"sources.cloudwatch.minute_s = {config['minute_s']} compresses CloudWatch's minute for "
                         f"tests against a local endpoint (127.0.0.1); {endpoint} publishes once a minute: "
                         "remove minute_s")


def _check_holds(config: dict, profile: Any) -> None:
    """AWS's metrics are read at 60 s even when ``period_s`` is shorter (for high-resolution custom
    metrics): the profile's hold check saw ``period_s``, so check the holds against 60 s here."""
    ramp = getattr(profile, "ramp", None)
    minute = config["minute_s"]
    if ramp is None or config["period_s"] >= minute:
        return
    from scalefinder.loadgen.profile import MIN_DATAPOINTS_PER_HOLD

    needed = MIN_DATAPOINTS_PER_HOLD * minute + ramp.warmup_s
    if ramp.min_hold_s < needed:
        raise ProfileError(f"must be at least {needed:g} s: warm-up plus {MIN_DATAPOINTS_PER_HOLD} datapoints of "
                           f"the Container Insights, load balancer and SQS metrics, which are read every "
                           f"{minute} s whatever sources.cloudwatch.period_s says, "
                           f"got {ramp.min_hold_s:g}", path=getattr(profile, "path", None), key="ramp.min_hold_s")


# -- periods ---------------------------------------------------------------------------------


def aws_namespace(namespace: str) -> bool:
    """AWS's own metrics, standard resolution only (custom namespaces may not start with ``AWS/``)."""
    return namespace.startswith("AWS/") or namespace == INSIGHTS


def standard_period(period_s: int, minute_s: int = STANDARD_PERIOD_S) -> int:
    """The period for standard-resolution metrics: the profile's when a multiple of the minute,
    else the minute."""
    return period_s if period_s >= minute_s and period_s % minute_s == 0 else minute_s


def required_multiple(age_s: float) -> int:
    """The multiple a period must be of, to read data this old (1: any valid period)."""
    for age, multiple in AGE_TIERS:
        if age_s > age - AGE_MARGIN_S:
            return multiple
    return 1


def period_for_age(base_s: int, age_s: float) -> int:
    """``base_s``, raised to the nearest multiple CloudWatch keeps for data ``age_s`` old."""
    multiple = required_multiple(age_s)
    return base_s if base_s % multiple == 0 else math.ceil(base_s / multiple) * multiple


def time_segments(start_s: int, end_s: int, base_s: int, now_s: float) -> list[tuple[int, int, int]]:
    """``[start, end)`` cut where CloudWatch's retention changes: ``(start, end, period)`` each.

    The oldest part of a long range is asked at the coarser period its age needs; each segment
    starts at a multiple of its period and holds only whole periods.
    """
    segments: list[tuple[int, int, int]] = []
    cursor = start_s
    while cursor < end_s:
        age = now_s - cursor
        period = period_for_age(base_s, age)
        cursor = math.ceil(cursor / period) * period
        # where data becomes young enough for a finer period: the next tier's boundary
        younger = [now_s - tier_age + AGE_MARGIN_S for tier_age, _ in AGE_TIERS
                   if age > tier_age - AGE_MARGIN_S]
        boundary = min(younger) if younger and period_for_age(base_s, 0) != period else end_s
        boundary = max(boundary, cursor + period)
        stop = min(end_s, cursor + math.ceil((boundary - cursor) / period) * period)
        stop = cursor + (stop - cursor) // period * period
        if stop <= cursor:
            break
        segments.append((int(cursor), int(stop), int(period)))
        cursor = stop
    return segments


# -- what to ask and how to turn it into rows ------------------------------------------------


@dataclass(frozen=True)
class MetricQuery:
    """One CloudWatch metric and statistic: one entry in GetMetricData's MetricDataQueries."""

    namespace: str
    metric_name: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    #: a custom metric published at high resolution: may be read at a period under 60 s
    high_resolution: bool = False

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

    def base_period(self, period_s: int, minute_s: int = STANDARD_PERIOD_S) -> int:
        """The period this query is read at from recent data (``time_segments`` raises it for old data)."""
        return period_s if self.high_resolution else standard_period(period_s, minute_s)

    @property
    def sample_count(self) -> "MetricQuery":
        """The same metric's SampleCount: how many datapoints went into each period."""
        return replace(self, statistic="SampleCount")


@dataclass(frozen=True)
class Recipe:
    """How one of our metrics is made: ``factor * numerator / denominator [/ period | / minutes]``.

    A ``*_per_task`` term is a Container Insights metric written from the tasks' performance
    events: its query is the ``Sum``, and its per-task value comes from ``per_task_series``.
    A ``cumulative`` numerator is a counter: the row is its per-task rate (``counter_rates``).
    """

    metric: str
    unit: str
    numerator: MetricQuery
    denominator: MetricQuery | None = None
    factor: float = 1.0
    per_second: bool = False
    task: str = ""
    per_minute: bool = False
    numerator_per_task: bool = False
    denominator_per_task: bool = False
    cumulative: bool = False


@dataclass(frozen=True)
class Batch:
    """One GetMetricData request: some queries over one time range, at one period."""

    queries: tuple[MetricQuery, ...]
    start_s: int
    end_s: int
    period_s: int = STANDARD_PERIOD_S


def recipes_for(facts: Any, config: dict, task_ids: Iterable[str] = ()) -> list[Recipe]:
    """The recipes of every metric the profile asks for, given what discovery found."""
    service = (("ClusterName", facts.cluster), ("ServiceName", facts.service))

    def insight(name: str, statistic: str = "Sum") -> MetricQuery:
        return MetricQuery(INSIGHTS, name, service, statistic)

    running = insight("RunningTaskCount", "Average")
    # Each "task event" metric is read as Sum (with its SampleCount) and made per task by the rule
    # of per_task_series; utilization is per-task utilized over per-task reserved, by the same rule.
    recipes = [
        Recipe(catalog.CPU_UTILIZATION, "percent", insight("CpuUtilized"), insight("CpuReserved"), 100.0,
               numerator_per_task=True, denominator_per_task=True),
        Recipe(catalog.MEMORY_UTILIZATION, "percent", insight("MemoryUtilized"), insight("MemoryReserved"), 100.0,
               numerator_per_task=True, denominator_per_task=True),
        Recipe("memory_used_mib", "MiB", insight("MemoryUtilized"), numerator_per_task=True),
        Recipe("network_rx_bytes_per_s", "bytes/s", insight("NetworkRxBytes"), numerator_per_task=True),
        Recipe("network_tx_bytes_per_s", "bytes/s", insight("NetworkTxBytes"), numerator_per_task=True),
        Recipe("storage_read_bytes_per_s", "bytes/s", insight("StorageReadBytes"), numerator_per_task=True,
               cumulative=True),
        Recipe("storage_write_bytes_per_s", "bytes/s", insight("StorageWriteBytes"), numerator_per_task=True,
               cumulative=True),
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
        # A per-task custom metric is divided by RunningTaskCount of the same period, so it is read
        # at the standard period whatever its resolution.
        query = MetricQuery(custom["namespace"], custom["metric_name"],
                            tuple(sorted(custom["dimensions"].items())), custom["statistic"],
                            high_resolution=custom.get("high_resolution", False) and not custom["per_task"])
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
            # one value a minute (per balancer node): a longer period's Sum adds the minutes up
            Recipe(catalog.CONCURRENCY_PER_TASK, "requests",
                   MetricQuery(ALB, "ActiveConnectionCount", (("LoadBalancer", balancer),), "Sum"), running,
                   per_minute=True),
            Recipe("target_response_time_ms", "ms", MetricQuery(ALB, "TargetResponseTime", both, "Average"),
                   factor=1000.0),
            Recipe("http_5xx_per_s", "errors/s", MetricQuery(ALB, "HTTPCode_Target_5XX_Count", both, "Sum"),
                   running, per_second=True),
        ]
    return recipes


def _running_query(recipes: Iterable[Recipe]) -> MetricQuery | None:
    for recipe in recipes:
        if recipe.metric == catalog.RUNNING_TASK_COUNT and not recipe.task:
            return recipe.numerator
    return None


def unique_queries(recipes: Iterable[Recipe]) -> list[MetricQuery]:
    recipes = list(recipes)
    seen: dict[MetricQuery, None] = {}
    for recipe in recipes:
        for query, per_task in ((recipe.numerator, recipe.numerator_per_task),
                                (recipe.denominator, recipe.denominator_per_task)):
            if query is None:
                continue
            seen.setdefault(query)
            if per_task:
                seen.setdefault(query.sample_count)
    running = _running_query(recipes)
    if running is not None and any(r.numerator_per_task or r.denominator_per_task for r in recipes):
        seen.setdefault(running)
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
        if chunk_periods <= 0:
            continue
        per_call = max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // chunk_periods))
        for first in range(0, len(queries), per_call):
            batches.append(Batch(tuple(queries[first:first + per_call]), chunk_start, chunk_end, period_s))
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


#: One fetched series: period start (unix s) -> (value, period in s).
Series = dict[int, tuple[float, int]]


def service_datapoint_mode(counts: Series, running: Series, minute_s: int = STANDARD_PERIOD_S) -> tuple[str, float | None]:
    """How Container Insights wrote a service-level metric, from its SampleCount.

    ``k = SampleCount / (RunningTaskCount × minutes)`` over every period with at least two tasks:
    about 1 when each task writes its own datapoint every minute (``per_task``), about
    ``1 / tasks`` when one service total is written every minute (``total``). Periods of one task
    cannot tell (``undetermined``: both readings give the same per-task value); a ratio more than
    ``MODE_TOLERANCE`` from both is ``unrecognized``. Returns the mode and ``k``.
    """
    samples = task_minutes = minutes = 0.0
    for start, (count, period) in counts.items():
        tasks = running.get(start)
        if tasks is None or tasks[1] != period or tasks[0] < 1.5 or count <= 0:
            continue
        samples += count
        task_minutes += tasks[0] * period / minute_s
        minutes += period / minute_s
    if task_minutes == 0:
        return UNDETERMINED, None
    k = samples / task_minutes
    from_per_task = abs(math.log(k))
    from_total = abs(math.log(k / (minutes / task_minutes)))
    if min(from_per_task, from_total) > math.log(MODE_TOLERANCE):
        return UNRECOGNIZED, k
    return (PER_TASK if from_per_task <= from_total else TOTAL), k


def per_task_series(sums: Series, counts: Series, running: Series, mode: str) -> Series:
    """Each period's per-task value of a metric read as Sum and SampleCount (see the module's rule).

    per_task: ``Sum / SampleCount``; total: ``Sum / SampleCount / RunningTaskCount``;
    undetermined (one task): ``Sum / SampleCount``, which both readings give; unrecognized: nothing.
    """
    if mode == UNRECOGNIZED:
        return {}
    values: Series = {}
    for start, (total, period) in sums.items():
        count = counts.get(start)
        if count is None or count[1] != period or count[0] <= 0:
            continue
        value = total / count[0]
        if mode == TOTAL:
            tasks = running.get(start)
            if tasks is None or tasks[1] != period or tasks[0] <= 0:
                continue
            value /= tasks[0]
        values[start] = (value, period)
    return values


def counter_rates(values: Series, counts: Series, running: Series) -> dict[int, tuple[float, int, int]]:
    """Per-task rates of a cumulative counter: ``(value_k - value_k-1) / period``.

    Kept only for consecutive periods of the same length with the same running task count and the
    same number of datapoints (the same tasks, as far as CloudWatch tells), and a difference that
    is not negative: a task replaced at the same count restarts its counter. Returns
    ``{start of the later period: (rate, period, start of the earlier period)}``.
    """
    rates: dict[int, tuple[float, int, int]] = {}
    starts = sorted(values)
    for before, after in zip(starts, starts[1:]):
        (first, period), (second, period_after) = values[before], values[after]
        if period != period_after or after - before != period:
            continue
        if _rounded(running.get(before)) != _rounded(running.get(after)) or running.get(after) is None:
            continue
        if _rounded(counts.get(before)) != _rounded(counts.get(after)):
            continue
        if second < first:
            continue
        rates[after] = ((second - first) / period, period, before)
    return rates


def _rounded(point: tuple[float, int] | None) -> int | None:
    return None if point is None else round(point[0])


def datapoint_modes(recipes: list[Recipe], series: dict[MetricQuery, Series],
                    minute_s: int = STANDARD_PERIOD_S) -> dict[MetricQuery, tuple[str, float | None]]:
    """The service-datapoint reading of every per-task query, by its Sum query."""
    running = series.get(_running_query(recipes) or MetricQuery("", "", (), ""), {})
    modes: dict[MetricQuery, tuple[str, float | None]] = {}
    for recipe in recipes:
        for query, per_task in ((recipe.numerator, recipe.numerator_per_task),
                                (recipe.denominator, recipe.denominator_per_task)):
            if query is not None and per_task and query not in modes:
                modes[query] = service_datapoint_mode(series.get(query.sample_count, {}), running, minute_s)
    return modes


def rows_from(recipes: list[Recipe], series: dict[MetricQuery, Series], windows: list[tuple[float, float]],
              modes: dict[MetricQuery, tuple[str, float | None]] | None = None,
              minute_s: int = STANDARD_PERIOD_S) -> list[MetricRow]:
    """Combine the fetched series into rows, keeping only periods wholly inside a window."""
    modes = datapoint_modes(recipes, series, minute_s) if modes is None else modes
    running = series.get(_running_query(recipes) or MetricQuery("", "", (), ""), {})

    def term(query: MetricQuery, per_task: bool) -> Series:
        if not per_task:
            return series.get(query, {})
        return per_task_series(series.get(query, {}), series.get(query.sample_count, {}), running,
                               modes.get(query, (UNDETERMINED, None))[0])

    def inside(low_s: float, high_s: float) -> bool:
        return any(low <= low_s and high_s <= high for low, high in windows)

    rows: list[MetricRow] = []

    def add(time_s: float, recipe: Recipe, value: float) -> None:
        rows.append({"time_unix_s": time_s, "source": CloudWatchSource.name, "metric": recipe.metric,
                     "task": recipe.task, "value": value, "unit": recipe.unit})

    for recipe in recipes:
        numerators = term(recipe.numerator, recipe.numerator_per_task)
        if recipe.cumulative:
            counts = series.get(recipe.numerator.sample_count, {})
            for start, (rate, period, before) in sorted(counter_rates(numerators, counts, running).items()):
                if inside(before, start + period):
                    # the difference spans the middle of one period to the middle of the next
                    add(float(start), recipe, recipe.factor * rate)
            continue
        denominators = term(recipe.denominator, recipe.denominator_per_task) if recipe.denominator else None
        for start in sorted(numerators):
            value, period = numerators[start]
            if not inside(start, start + period):
                continue
            value *= recipe.factor
            if denominators is not None:
                divisor = denominators.get(start)
                if not divisor or divisor[1] != period or not divisor[0]:
                    continue
                value /= divisor[0]
            if recipe.per_second:
                value /= period
            if recipe.per_minute:
                value /= period / minute_s
            add(start + period / 2, recipe, value)
    rows.sort(key=lambda row: (row["time_unix_s"], row["metric"], row["task"]))
    return rows


def summarize_modes(modes: dict[MetricQuery, tuple[str, float | None]]) -> str:
    """One word for ``describe()``: the reading every metric that could tell agrees on, or "mixed"."""
    told = {mode for mode, _ in modes.values() if mode in (PER_TASK, TOTAL)}
    if len(told) == 1:
        return told.pop()
    if told:
        return "mixed"
    if any(mode == UNRECOGNIZED for mode, _ in modes.values()):
        return UNRECOGNIZED
    return UNDETERMINED


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
        self.minute_s = int(config.get("minute_s", STANDARD_PERIOD_S))
        self.settle_s = float(config["settle_s"])
        self.task_metrics = config["task_metrics"] is True or (
            config["task_metrics"] == "auto" and facts.container_insights == "enhanced")
        self.warnings: list[str] = []
        self._progress = _Progress()
        self._metric_names: set[str] = set()
        self._calls_planned = 0
        self._periods: dict[str, set[int]] = {}
        self._modes: dict[str, dict[str, Any]] = {}
        self._service_datapoint = UNDETERMINED
        self._preflight: dict[str, Any] = {}

    # -- the preflight --------------------------------------------------------------------------
    def check(self, now_s: float | None = None) -> None:
        """Fail before any load is sent (``build`` calls this; the run builds its sources first).

        1. Container Insights is on for the cluster, and enhanced when ``task_metrics = true``.
        2. Every Container Insights, load balancer and SQS metric the profile reads is asked for
           its SampleCount over the last ``PREFLIGHT_RECENT_S`` in one GetMetricData call. The
           service metrics every task writes (``REQUIRED_INSIGHTS``) must have a datapoint there
           (``InputError``, exit 2: Container Insights just turned on, or off). Network and storage
           metrics (not written in every network mode), load balancer metrics (written only while
           requests flow) and the queue's (only while it is active) are warnings.
        """
        facts = self.facts
        setting = facts.container_insights
        if setting not in ("enabled", "enhanced"):
            raise InputError(
                f"Container Insights is {setting or 'off'} for ECS cluster '{facts.cluster}', so CloudWatch has "
                f"no metrics for service '{facts.service}'. Turn it on with `{self._turn_on('enabled')}` "
                f"(value=enhanced adds per-task metrics) and wait a few minutes for the first datapoints; "
                "no load was sent")
        if self.config["task_metrics"] is True and setting != "enhanced":
            raise InputError(
                f"sources.cloudwatch.task_metrics = true needs Container Insights with enhanced observability, "
                f"and ECS cluster '{facts.cluster}' has '{setting}': run `{self._turn_on('enhanced')}`, or set "
                'task_metrics = "auto" (per-task metrics only when enhanced) or false; no load was sent')
        now = time.time() if now_s is None else now_s
        minute = self.minute_s
        recent_s = PREFLIGHT_RECENT_S * minute // STANDARD_PERIOD_S  # fifteen (compressed) minutes
        end = math.ceil(now / minute) * minute
        start = end - recent_s - minute
        recipes = recipes_for(facts, self.config)
        metrics: dict[MetricQuery, None] = {}
        for query in unique_queries(recipes):
            if aws_namespace(query.namespace):
                metrics.setdefault(replace(query, statistic="SampleCount"))
        series: dict[MetricQuery, dict[int, tuple[float, int]]] = {q: {} for q in metrics}
        before = self._usage_now()
        for batch in plan_batches(list(metrics), start, end, minute):
            self._fetch_batch(batch, series)
        empty = [q for q in metrics if not any(value > 0 for value, _ in series[q].values())]
        required = [q for q in empty if q.namespace == INSIGHTS and q.metric_name in REQUIRED_INSIGHTS]
        if required:
            names = ", ".join(q.metric_name for q in required)
            raise InputError(
                f"Container Insights has no data in the last {PREFLIGHT_RECENT_S // 60} minutes for {names} "
                f"(namespace {INSIGHTS}, ClusterName={facts.cluster}, ServiceName={facts.service}, region "
                f"{facts.region}) although the cluster's setting is '{setting}'. If it was turned on just now, "
                "wait a few minutes (datapoints appear only while tasks are RUNNING); otherwise turn it on with "
                f"`{self._turn_on('enabled')}` and wait a few minutes; no load was sent")
        for query in empty:
            why = {ALB: "load balancer metrics are written only while requests flow",
                   SQS: "queue metrics are written only while the queue is active"}.get(
                query.namespace, "written only in the awsvpc and bridge network modes, or by some platforms")
            warning = (f"no datapoint before the load for {query.namespace} {query.metric_name} "
                       f"({', '.join(f'{n}={v}' for n, v in query.dimensions)}) in the last "
                       f"{PREFLIGHT_RECENT_S // 60} minutes ({why}); it is read again after the run")
            log.warning("cloudwatch: %s", warning)
        after = self._usage_now()
        # counted in the source's totals as well; here to tell the preflight's cost from the fetch's
        self._preflight = {"window_s": recent_s, "metrics_checked": len(metrics),
                           "without_recent_data": sorted(f"{q.namespace}/{q.metric_name}" for q in empty),
                           "get_metric_data_calls": after[0] - before[0],
                           "metrics_requested": after[1] - before[1]}
        log.info("cloudwatch: preflight passed: %d of %d metrics have recent data",
                 len(metrics) - len(empty), len(metrics))

    def _usage_now(self) -> tuple[int, int]:
        usage = self.clients.usage.as_dict()
        return usage.get("api_calls_by_operation", {}).get("cloudwatch:GetMetricData", 0), usage["metrics_requested"]

    def _turn_on(self, value: str) -> str:
        return (f"aws ecs update-cluster-settings --cluster {self.facts.cluster} "
                f"--settings name=containerInsights,value={value} --region {self.facts.region}")

    # -- fetching -------------------------------------------------------------------------------
    def fetch(self, start_unix_s: float, end_unix_s: float) -> list[MetricRow]:
        return self.fetch_windows([(start_unix_s, end_unix_s)])

    def fetch_windows(self, windows: list[tuple[float, float]]) -> list[MetricRow]:
        """Fetch several windows (e.g. every step of a run) in as few calls as one window would take."""
        if not windows:
            return []
        self._wait_to_settle(max(end for _, end in windows))
        now = time.time()
        start_s, end_s = full_periods(windows, self.minute_s, now)
        recipes = recipes_for(self.facts, self.config,
                              self._task_ids(start_s, now) if self.task_metrics and end_s > start_s else ())
        queries = unique_queries(recipes)
        series = self._fetch_series(queries, windows, now)
        modes = datapoint_modes(recipes, series, self.minute_s)
        self._record_modes(modes)
        rows = rows_from(recipes, series, windows, modes, self.minute_s)
        self._metric_names.update(row["metric"] for row in rows)
        self._warn_empty(recipes, rows)
        log.info("cloudwatch: %d rows for %d queries; service datapoints read as %s", len(rows), len(queries),
                 self._service_datapoint)
        return rows

    def describe(self) -> dict[str, Any]:
        usage = self.clients.usage.as_dict()
        return {
            "kind": self.name,
            "region": self.clients.region,
            "cluster": self.facts.cluster,
            "service": self.facts.service,
            "period_s": self.period_s,
            # what each kind of metric was read at (AWS's at 60 s or more; older data coarser)
            "periods_s": {kind: sorted(found) for kind, found in sorted(self._periods.items())},
            "settle_s": self.settle_s,
            "container_insights": self.facts.container_insights,
            # how Container Insights wrote the service datapoints: per_task | total | undetermined
            # (one task: both give the same) | unrecognized | mixed; see the module's docstring
            "service_datapoint": self._service_datapoint,
            "service_datapoint_by_metric": self._modes,
            "storage": "per-task rate from consecutive datapoints of the cumulative counters",
            "preflight": self._preflight,
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

    def _task_ids(self, start_s: float, now_s: float) -> list[str]:
        """Tasks that published task-level metrics (enhanced observability) around the window.

        ``RecentlyActive=PT3H`` keeps out the dimension sets of tasks stopped long ago (ListMetrics
        otherwise lists two weeks of them, two queries each). A window that began more than three
        hours ago is listed without it, or the tasks that ran only in its first hours would be
        missed; their stale neighbours then only cost queries that answer nothing. (moto accepts
        the parameter and ignores it.)
        """
        from scalefinder.loadgen.aws.session import pages

        dimensions = [{"Name": "ClusterName", "Value": self.facts.cluster},
                      {"Name": "ServiceName", "Value": self.facts.service}]
        params: dict[str, Any] = {"Namespace": INSIGHTS, "MetricName": "TaskCpuUtilization", "Dimensions": dimensions}
        if now_s - start_s < RECENTLY_ACTIVE_S - AGE_MARGIN_S:
            params["RecentlyActive"] = RECENTLY_ACTIVE
        task_ids: set[str] = set()
        for answer in pages(self.clients.client("cloudwatch"), "list_metrics", **params):
            for metric in answer.get("Metrics", []):
                task_ids.update(d["Value"] for d in metric.get("Dimensions", []) if d["Name"] == "TaskId")
        return sorted(task_ids)

    def _fetch_series(self, queries: list[MetricQuery], windows: list[tuple[float, float]],
                      now_s: float) -> dict[MetricQuery, Series]:
        """Every query over the windows' span, each at its period (``time_segments``)."""
        series: dict[MetricQuery, Series] = {q: {} for q in queries}
        by_base: dict[int, list[MetricQuery]] = {}
        for query in queries:
            by_base.setdefault(query.base_period(self.period_s, self.minute_s), []).append(query)
        batches: list[Batch] = []
        for base, group in sorted(by_base.items()):
            start_s, end_s = full_periods(windows, base, now_s)
            for seg_start, seg_end, period in time_segments(start_s, end_s, base, now_s):
                batches += plan_batches(group, seg_start, seg_end, period)
                for query in group:
                    kind = "aws" if aws_namespace(query.namespace) else "custom"
                    self._periods.setdefault(kind, set()).add(period)
        self._calls_planned += len(batches)
        for batch in batches:
            self._fetch_batch(batch, series)
        return series

    def _fetch_batch(self, batch: Batch, series: dict[MetricQuery, Series]) -> None:
        pending = list(batch.queries)
        for attempt in range(1 + PARTIAL_DATA_REQUERIES):
            pending = self._get_metric_data(pending, batch, series)
            if not pending:
                break
            if attempt < PARTIAL_DATA_REQUERIES:
                self._progress.partial_requeries += 1
        for query in pending:
            self._progress.incomplete_queries.add(f"{query.namespace}/{query.metric_name}")
            log.warning("cloudwatch: %s %s stayed incomplete (PartialData)", query.namespace, query.metric_name)

    def _get_metric_data(self, queries: list[MetricQuery], batch: Batch,
                         series: dict[MetricQuery, Series]) -> list[MetricQuery]:
        """One request, following its pages; returns the queries still PartialData at the end.

        Every page is a call of its own, and billed for every query again: the clients count the
        metrics requested call by call (``AwsClients``), so the count stays right however many
        pages the paginator follows.
        """
        from scalefinder.loadgen.aws.session import pages

        period = batch.period_s
        by_id = {f"m{index}": query for index, query in enumerate(queries)}
        params: dict[str, Any] = {
            "MetricDataQueries": [q.as_request(qid, period) for qid, q in by_id.items()],
            "StartTime": datetime.fromtimestamp(batch.start_s, timezone.utc),
            "EndTime": datetime.fromtimestamp(batch.end_s, timezone.utc),
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
                    if batch.start_s <= moment < batch.end_s:
                        series[query][moment - moment % period] = (float(value), period)
        return [by_id[qid] for qid, code in status.items() if code == "PartialData"]

    def _record_modes(self, modes: dict[MetricQuery, tuple[str, float | None]]) -> None:
        for query, (mode, ratio) in modes.items():
            self._modes[query.metric_name] = {
                "mode": mode, "samples_per_task_minute": None if ratio is None else round(ratio, 3)}
            if mode == UNRECOGNIZED:
                self._warn(
                    f"{INSIGHTS} {query.metric_name}: {ratio:.2f} datapoints per task-minute matches neither one "
                    "datapoint per task nor one service total a minute; its per-task values were left out")
        self._service_datapoint = summarize_modes(modes)

    def _warn_empty(self, recipes: list[Recipe], rows: list[MetricRow]) -> None:
        found = {(row["metric"], row["task"]) for row in rows}
        for recipe in recipes:
            if recipe.task or (recipe.metric, recipe.task) in found:
                continue
            found.add((recipe.metric, recipe.task))
            self._warn(f"no {recipe.metric} values ({recipe.numerator.namespace} "
                                 f"{recipe.numerator.metric_name}) in the run's windows")

    def _warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)
