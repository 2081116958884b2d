"""Container metrics and application gauges from a Prometheus server (``/api/v1/query_range``).

A retrospective source: after a window has ended and ``settle_s`` has passed (the last scrapes
must land), every metric is one ``query_range`` over the window at ``step_s`` resolution.

Each metric is a PromQL query. Built-in templates read the metrics cAdvisor publishes for
Kubernetes pods (and ``loadgen.exporter`` for the local cluster); the profile chooses which with
``metrics`` and may add or override any metric in ``[sources.prometheus.queries]``. Templates may
use ``$selector`` (the profile's label matchers), ``$window`` (the range of ``rate()``) and
``$task_label`` (the label naming a pod or task).

How Prometheus's answers become rows: a series carrying ``$task_label`` gives per-task rows with
that label's value as ``task``; a series without it gives service rows. When a metric has only
per-task series, its service rows are derived as the catalogue's scope says (the average over
tasks, or their total). A rate at time t covers ``[t - window, t]``, so a row describes the
interval that ends at its time, as the local source's rows do.

Besides rows, the source reads two counters as events (``events = true``, the default): an
increase of cAdvisor's ``container_oom_events_total`` becomes an ``oom_kill`` event and an
increase of kube-state-metrics' ``kube_pod_container_status_restarts_total`` a ``task_restart``
event, each with the task, the count and the time of the sample that showed it. A pre-forking
server whose worker the kernel kills keeps running, so the OOM counter is the only sign of it.
Either series may be missing (no kube-state-metrics, an older cAdvisor): then it gives nothing.
Events go to ``on_event``, the run's event log; without one they are not read.

Before any load is sent, ``check`` (the preflight) refuses what would make the whole run
useless and would otherwise show only after it: a server that does not answer or rejects a
query (``InfrastructureError``), a query without recent data, a replica count of zero, a rate
window shorter than four scrape intervals as measured in Prometheus (``InputError``). It also
reads the containers' requests and limits (kube-state-metrics, cAdvisor) for ``describe()``.

Credentials come from environment variables the profile names; neither they nor the header built
from them are ever written to the run directory or the log.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import statistics
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from scalefinder.loadgen.kind_config import seconds, split_url, with_defaults
from scalefinder.loadgen.sources.base import MetricRow, MetricSource
from scalefinder.core import catalog
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError
from scalefinder.core.redact import redact_url
from scalefinder.core.waiting import WaitTimedOut, wait_until

log = logging.getLogger(__name__)

#: Prometheus refuses a query_range of more than 11,000 points per series; stay below it.
MAX_POINTS_PER_QUERY = 10_000
MIB = 1024 * 1024

TEMPLATES: dict[str, str] = {
    catalog.CPU_UTILIZATION: (
        "100 * sum by ($task_label) (rate(container_cpu_usage_seconds_total{$selector}[$window]))"
        " / sum by ($task_label) (container_spec_cpu_quota{$selector} / container_spec_cpu_period{$selector})"),
    catalog.MEMORY_UTILIZATION: (
        "100 * sum by ($task_label) (container_memory_working_set_bytes{$selector})"
        " / (sum by ($task_label) (container_spec_memory_limit_bytes{$selector}) > 0)"),
    "memory_used_mib": f"sum by ($task_label) (container_memory_working_set_bytes{{$selector}}) / {MIB}",
    "network_rx_bytes_per_s":
        "sum by ($task_label) (rate(container_network_receive_bytes_total{$selector}[$window]))",
    "network_tx_bytes_per_s":
        "sum by ($task_label) (rate(container_network_transmit_bytes_total{$selector}[$window]))",
    catalog.RUNNING_TASK_COUNT: "count(sum by ($task_label) (container_memory_working_set_bytes{$selector}))",
}

# Counters read as events: event kind -> PromQL. Every series on its own (no sum): a container
# restarted by its orchestrator may start a new series, and a sum would see the old one's end
# as a fall.
EVENT_QUERIES: dict[str, str] = {
    "oom_kill": "container_oom_events_total{$selector}",
    "task_restart": "kube_pod_container_status_restarts_total{$selector}",
}
# cAdvisor also reports the pod's own cgroup (container "" ) and its sandbox ("POD"); their
# counts repeat those of the containers inside, so they are read only for a task without any
# container series.
POD_LEVEL_CONTAINERS = ("", "POD")

# -- the preflight (``PrometheusSource.check``), before any load is sent ---------------------------

#: How far back the preflight looks for data. A query_range over a short recent window, at the
#: run's own step, rather than one instant query: it is the kind of query ``fetch`` sends, and an
#: instant query sees a rate only when two scrapes fall inside the window before that one instant
#: (a scrape that is late or missed right then would read as "no data"). Two minutes, not the
#: instant query's five-minute lookback or more: a target that stopped being scraped long ago
#: must not pass for one that will answer during the run.
RECENT_S = 120.0
#: A rate needs this many scrape intervals in its window, so that one missed or late scrape
#: neither empties it nor makes it jump (the usual rule for ``rate()``).
MIN_SCRAPES_PER_WINDOW = 4
#: The range of the raw samples whose spacing gives the scrape interval.
RAW_RANGE = "5m"
#: With the local exporter, which starts just before the preflight, Prometheus has not scraped it
#: yet: wait at least this long (or longer for a long settle_s or rate window) for its data.
FIRST_DATA_WAIT_S = 15.0
FIRST_DATA_POLL_S = 0.5
#: Scrapes of the local exporter after which data still missing will not come: enough for a rate
#: over the shortest window the preflight accepts (four scrape intervals), with one to spare.
EXPORTER_SCRAPES_ENOUGH = 6

#: ``describe()["resources"]``: the containers' requests and limits. Key -> the
#: kube-state-metrics query, and for limits cAdvisor's, read when kube-state-metrics has none.
#: ``$matchers`` is the profile's selector after a comma (nothing when it is empty).
RESOURCE_QUERIES: dict[str, tuple[str, str | None]] = {
    "cpu_request_cores": ('kube_pod_container_resource_requests{resource="cpu"$matchers}', None),
    "memory_request_bytes": ('kube_pod_container_resource_requests{resource="memory"$matchers}', None),
    "cpu_limit_cores": ('kube_pod_container_resource_limits{resource="cpu"$matchers}',
                        "(container_spec_cpu_quota{$selector} / container_spec_cpu_period{$selector}) > 0"),
    "memory_limit_bytes": ('kube_pod_container_resource_limits{resource="memory"$matchers}',
                           "container_spec_memory_limit_bytes{$selector} > 0"),
}
RESOURCE_UNITS = {"cpu_request_cores": "cores", "memory_request_bytes": "bytes", "cpu_limit_cores": "cores",
                  "memory_limit_bytes": "bytes"}
KUBE_STATE_METRICS = "kube-state-metrics via Prometheus"
CADVISOR = "cAdvisor via Prometheus"

DEFAULTS: dict[str, Any] = {
    "step_s": 15.0,
    "settle_s": 30.0,
    "rate_window": "1m",
    "selector": "",
    "task_label": "pod",
    "metrics": list(TEMPLATES),
    "queries": {},
    "timeout_s": 30.0,
    "basic_auth_user_env": None,
    "basic_auth_password_env": None,
    "bearer_token_env": None,
    "exporter_port": None,
    "events": True,
}
# at most 9 digits: no window is longer, and a number of hundreds of digits would overflow its
# conversion to seconds
_DURATION = re.compile(r"^\d{1,9}(ms|s|m|h|d)$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- configuration --------------------------------------------------------------------------


def validate_config(table: dict, where: str) -> dict:
    """Check ``[sources.prometheus]`` and fill in defaults."""
    config = with_defaults(table, where, DEFAULTS, required=("url",))
    url = config.get("url")
    parts = split_url(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = redact_url(url) if isinstance(url, str) else url
        raise ProfileError(f"required: the Prometheus server's http:// or https:// URL, got {shown!r}",
                           key=f"{where}.url")
    if "@" in parts.netloc:
        # urllib would not send it, and the URL reaches error messages and the run's status:
        # credentials go through the environment instead
        raise ProfileError("credentials do not belong in the URL: name the environment variables that hold them "
                           "with basic_auth_user_env and basic_auth_password_env (or bearer_token_env)",
                           key=f"{where}.url")
    config["url"] = url.rstrip("/")
    config["step_s"] = seconds(config["step_s"], 0.1, 3600, f"{where}.step_s")
    config["settle_s"] = seconds(config["settle_s"], 0, 900, f"{where}.settle_s")
    config["timeout_s"] = seconds(config["timeout_s"], 1, 300, f"{where}.timeout_s")
    if not isinstance(config["rate_window"], str) or not _DURATION.match(config["rate_window"]):
        raise ProfileError(f'expected a Prometheus duration such as "1m" or "4s", got {config["rate_window"]!r}',
                           key=f"{where}.rate_window")
    if not isinstance(config["selector"], str) or "}" in config["selector"] or "{" in config["selector"]:
        raise ProfileError("expected label matchers without braces, e.g. 'namespace=\"shop\", container=\"web\"'",
                           key=f"{where}.selector")
    if not isinstance(config["task_label"], str) or not _LABEL_NAME.match(config["task_label"]):
        raise ProfileError("expected a label name such as \"pod\"", key=f"{where}.task_label")
    config["queries"] = _validate_queries(config["queries"], f"{where}.queries")
    config["metrics"] = _validate_metrics(config["metrics"], config["queries"], f"{where}.metrics")
    for key in ("basic_auth_user_env", "basic_auth_password_env", "bearer_token_env"):
        value = config[key]
        if value is not None and (not isinstance(value, str) or not _ENV_NAME.match(value)):
            raise ProfileError("expected the name of an environment variable", key=f"{where}.{key}")
    if (config["basic_auth_user_env"] is None) != (config["basic_auth_password_env"] is None):
        raise ProfileError("basic auth needs both basic_auth_user_env and basic_auth_password_env",
                           key=f"{where}.basic_auth_user_env")
    if config["bearer_token_env"] is not None and config["basic_auth_user_env"] is not None:
        raise ProfileError("give either basic auth or a bearer token, not both", key=f"{where}.bearer_token_env")
    if not isinstance(config["events"], bool):
        raise ProfileError(f"expected true or false, got {config['events']!r}", key=f"{where}.events")
    port = config["exporter_port"]
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ProfileError(f"expected a port number from 1 to 65535, got {port!r}", key=f"{where}.exporter_port")
    return config


_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def rate_window_s(config: dict) -> float | None:
    """Seconds of ``rate_window`` when a chosen built-in query takes a rate over it, else None.

    Each row is a rate over the window before its time, so a window longer than a step's
    warm-up reaches back into the previous step's load in rows the analysis keeps.
    """
    if not any("$window" in TEMPLATES.get(name, "") for name in config["metrics"]):
        return None
    return duration_s(config["rate_window"])


def duration_s(text: str) -> float:
    """Seconds of a Prometheus duration as the profile accepts it ("1m", "3s", "500ms")."""
    number, unit = re.match(r"^(\d+)(ms|s|m|h|d)$", text).groups()
    return int(number) * _DURATION_SECONDS[unit]


def prometheus_duration(seconds_: float) -> str:
    """The shortest duration of at least ``seconds_`` written the way the profile takes it."""
    if seconds_ < 1:
        return f"{math.ceil(seconds_ * 1000)}ms"
    whole = math.ceil(seconds_ - 1e-9)
    return f"{whole // 60}m" if whole % 60 == 0 else f"{whole}s"


def range_selectors(promql: str, window: str) -> list[str]:
    """The series selectors ``name{...}`` that ``promql`` reads over ``[window]``, in order, once each.

    ``rate(container_cpu_usage_seconds_total{pod=~"web-.*"}[1m])`` gives
    ``container_cpu_usage_seconds_total{pod=~"web-.*"}``; a selector without a name
    (``{__name__="x"}``) or without matchers (``x[1m]``) is found too. Quoted label values may
    hold braces. Subqueries (``[1m:10s]``) are not range selectors and are left out.
    """
    pattern = (r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?(?P<labels>\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})?'
               r"\s*\[\s*" + re.escape(window) + r"\s*\]")
    found: list[str] = []
    for match in re.finditer(pattern, promql):
        selector = (match.group("name") or "") + (match.group("labels") or "")
        if selector and selector not in found:
            found.append(selector)
    return found


def _validate_queries(queries: Any, where: str) -> dict[str, dict[str, str]]:
    """``name = "PromQL"`` or ``name = { query = "PromQL", unit = "requests" }``."""
    if not isinstance(queries, dict):
        raise ProfileError("expected a table of metric name = PromQL", key=where)
    checked = {}
    for name, entry in queries.items():
        if isinstance(entry, str):
            entry = {"query": entry}
        if not isinstance(entry, dict) or set(entry) - {"query", "unit"}:
            raise ProfileError('expected a PromQL string or { query = "...", unit = "..." }', key=f"{where}.{name}")
        query, unit = entry.get("query"), entry.get("unit", catalog.info(name).unit)
        if not isinstance(query, str) or not query.strip():
            raise ProfileError("expected a non-empty PromQL query", key=f"{where}.{name}.query")
        if not isinstance(unit, str):
            raise ProfileError("expected a unit string such as \"requests\"", key=f"{where}.{name}.unit")
        checked[name] = {"query": query.strip(), "unit": unit}
    return checked


def _validate_metrics(metrics: Any, queries: dict[str, Any], where: str) -> list[str]:
    if not isinstance(metrics, list) or not all(isinstance(name, str) for name in metrics):
        raise ProfileError("expected a list of metric names", key=where)
    for name in metrics:
        if name not in TEMPLATES and name not in queries:
            raise ProfileError(f"{name!r} has no built-in query (built-in: {', '.join(TEMPLATES)}); "
                               "give its PromQL in [sources.prometheus.queries]", key=where)
    return list(dict.fromkeys(metrics))


def build(config: dict, context: Any) -> "PrometheusSource":
    """Start the local exporter if asked, then run the preflight (``PrometheusSource.check``)."""
    exporter = None
    if config.get("exporter_port") is not None:
        if context.cluster is None:
            raise InputError("sources.prometheus.exporter_port serves the local cluster's metrics; "
                             "it needs a local target (target.kind = \"local\")")
        from scalefinder.loadgen.exporter import ClusterExporter

        exporter = ClusterExporter(context.cluster, port=config["exporter_port"])
        exporter.start()
    source = PrometheusSource(config, headers=auth_headers(config), exporter=exporter,
                              on_event=getattr(context, "on_event", None))
    try:
        source.check()
    except BaseException:
        source.stop()
        raise
    return source


def auth_headers(config: dict) -> dict[str, str]:
    """The Authorization header from the environment variables the profile names."""
    def read(key: str) -> str:
        name = config[key]
        value = os.environ.get(name)
        if value is None:
            raise InputError(f"the environment variable {name} (sources.prometheus.{key}) is not set")
        return value

    if config.get("bearer_token_env"):
        return {"Authorization": f"Bearer {read('bearer_token_env')}"}
    if config.get("basic_auth_user_env"):
        pair = f"{read('basic_auth_user_env')}:{read('basic_auth_password_env')}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}
    return {}


# -- queries and rows -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricQuery:
    metric: str
    promql: str
    unit: str


def queries_for(config: dict) -> list[MetricQuery]:
    """The filled-in query of every metric the profile asks for (its own queries after the built-ins)."""
    values = {"selector": config["selector"], "window": config["rate_window"], "task_label": config["task_label"]}
    chosen = [*config["metrics"], *(name for name in config["queries"] if name not in config["metrics"])]
    result = []
    for name in chosen:
        own = config["queries"].get(name)
        template = own["query"] if own else TEMPLATES[name]
        unit = own["unit"] if own else catalog.info(name).unit
        result.append(MetricQuery(name, string.Template(template).safe_substitute(values), unit))
    return result


def rows_from(query: MetricQuery, series: list[dict[str, Any]], task_label: str) -> list[MetricRow]:
    """Rows of one metric from a ``matrix`` result, with derived service rows where needed."""
    rows: list[MetricRow] = []
    per_time: dict[float, list[float]] = {}
    has_service_series = False
    for item in series:
        task = item.get("metric", {}).get(task_label, "")
        has_service_series = has_service_series or not task
        for stamp, raw in item.get("values", []):
            value = float(raw)
            if not math.isfinite(value):
                continue
            rows.append(_row(float(stamp), query, task, value))
            if task:
                per_time.setdefault(float(stamp), []).append(value)
    if not has_service_series:
        total = catalog.info(query.metric).scope == "service_total"
        for stamp, values in per_time.items():
            rows.append(_row(stamp, query, "", sum(values) if total else sum(values) / len(values)))
    rows.sort(key=lambda row: (row["time_unix_s"], row["task"]))
    return rows


def event_queries(config: dict) -> list[MetricQuery]:
    """The filled-in query of each counter read as events (none when ``events`` is off)."""
    if not config.get("events", True):
        return []
    values = {"selector": config["selector"], "window": config["rate_window"], "task_label": config["task_label"]}
    return [MetricQuery(kind, string.Template(template).safe_substitute(values), "count")
            for kind, template in EVENT_QUERIES.items()]


def events_from(kind: str, series: list[dict[str, Any]], task_label: str, first_s: float) -> list[dict[str, Any]]:
    """Events from a counter's ``matrix`` result: one per series and sample where it went up.

    A series present from ``first_s`` (the first evaluation time) starts at its baseline; one
    that appears later is a container started during the window, whose first value counts from
    zero. A fall is a reset (a new container under the same labels): its new value is what was
    added since. ``earliest_unix_s`` is the previous sample: the increase happened in between.
    """
    by_task: dict[str, list[dict[str, Any]]] = {}
    for item in series:
        labels = item.get("metric", {})
        by_task.setdefault(labels.get(task_label, ""), []).append(item)
    events = []
    for task, items in sorted(by_task.items()):
        named = [i for i in items if i.get("metric", {}).get("container", "") not in POD_LEVEL_CONTAINERS]
        for item in named or items:
            container = item.get("metric", {}).get("container")
            previous: tuple[float, float] | None = None
            for stamp, raw in item.get("values", []):
                stamp, value = float(stamp), float(raw)
                if not math.isfinite(value):
                    continue
                if previous is None:
                    added = value if stamp > first_s + 1e-6 else 0.0
                    earliest = first_s
                else:
                    added = value - previous[1] if value >= previous[1] else value
                    earliest = previous[0]
                previous = (stamp, value)
                if added >= 1:
                    event = {"kind": kind, "task": task, "count": int(round(added)), "time_unix_s": stamp,
                             "earliest_unix_s": earliest, "source": PrometheusSource.name}
                    if container is not None:
                        event["container"] = container
                    events.append(event)
    events.sort(key=lambda event: (event["time_unix_s"], event["task"], event["kind"]))
    return events


def _row(stamp: float, query: MetricQuery, task: str, value: float) -> MetricRow:
    return {"time_unix_s": stamp, "source": PrometheusSource.name, "metric": query.metric, "task": task,
            "value": value, "unit": query.unit}


def chunks(start_s: float, end_s: float, step_s: float) -> list[tuple[float, float]]:
    """Step-aligned spans of at most ``MAX_POINTS_PER_QUERY`` points covering ``[start, end]``."""
    first = math.ceil(start_s / step_s) * step_s
    last = math.floor(end_s / step_s) * step_s
    spans = []
    while first <= last:
        span_end = min(first + (MAX_POINTS_PER_QUERY - 1) * step_s, last)
        spans.append((first, span_end))
        first = span_end + step_s
    return spans


# -- the source ------------------------------------------------------------------------------


class PrometheusSource(MetricSource):
    name = "prometheus"
    live = False

    def __init__(self, config: dict, headers: dict[str, str] | None = None, exporter: Any = None,
                 on_event: Callable[..., None] | None = None):
        self.config = config
        self.url = config["url"]
        self.step_s = float(config["step_s"])
        self.settle_s = float(config["settle_s"])
        self.timeout_s = float(config["timeout_s"])
        self.queries = queries_for(config)
        self.on_event = on_event
        self.event_queries = event_queries(config) if on_event is not None else []
        self.events_recorded = 0
        self.exporter = exporter
        self.exporter_url = exporter.url if exporter is not None else None
        self._headers = dict(headers or {})
        self.api_calls = 0
        self.points = 0
        self.warnings: list[str] = []
        # the preflight's findings, for describe()
        self.resources: dict[str, Any] = {**{key: None for key in RESOURCE_QUERIES}, "source": KUBE_STATE_METRICS}
        self.scrape_intervals_s: dict[str, float] = {}
        # With the local exporter, how long the preflight waits for Prometheus's first scrapes.
        self.first_data_wait_s = max(FIRST_DATA_WAIT_S, 2 * self.settle_s, duration_s(config["rate_window"]))

    # -- the preflight --------------------------------------------------------------------------
    def check(self) -> None:
        """Fail before any load is sent; the run calls this before its run directory and its load.

        1. The server answers and accepts every query (``InfrastructureError``, exit 3).
        2. Every built-in query, and the replica count, has data in the last ``RECENT_S``; with
           the local exporter, which has just started, once Prometheus has had time to scrape it
           (``InputError``, exit 2). A profile's own query without data is a warning (it may
           have data only under load), unless no query has any.
        3. ``running_task_count``, when the profile reads it, counts at least one task now.
        4. Each rate's window spans at least ``MIN_SCRAPES_PER_WINDOW`` scrape intervals, measured
           from the raw samples of the series it reads (skipped, with a log line, when there are
           no raw samples to measure).

        Then the containers' requests and limits are read for ``describe()``: optional, so
        absence is None and a failing query a warning.
        """
        recent = self._wait_for_recent_data()
        empty = [query for query in self.queries if not _has_values(recent[query.metric][1])]
        required = [query for query in empty if self._required(query)]
        if required or (empty and len(empty) == len(self.queries)):
            raise self._no_data_error(required or empty)
        for query in empty:
            # A profile's own query may only have data under load (a count of errors, a queue
            # that is empty when idle); the run goes on and warns again if it stays empty.
            log.warning("prometheus: no data before the load for %s (query: %s); it is read again after the "
                        "run, which warns if it is still empty", query.metric, query.promql)
        self._check_running_tasks(recent)
        self._check_rate_windows()
        self.resources = self.read_resources()
        log.info("prometheus: preflight passed: %d queries have data; scrape intervals %s; resources %s",
                 len(self.queries), self.scrape_intervals_s or "not measured", self.resources)

    def _wait_for_recent_data(self) -> dict[str, tuple[float, list[dict[str, Any]]]]:
        """Each query's recent answer, as ``(end of the range, series)``, by metric.

        Without the exporter, one pass. With it, the queries still short of data are asked
        again every ``FIRST_DATA_POLL_S`` until each has data (and the replica count is at
        least one) or ``first_data_wait_s`` has passed; a rejected query ends the wait at once.
        """
        answers: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        started = time.time()

        def all_ready() -> bool:
            for query in self.queries:
                if query.metric not in answers or not self._ready(query, answers[query.metric]):
                    answers[query.metric] = self._recent(query)
            if all(self._ready(query, answers[query.metric]) for query in self.queries if self._required(query)):
                return True
            # Once Prometheus has scraped the exporter often enough for every rate to have its
            # samples, what is still missing will not come (a selector that matches nothing):
            # say so now rather than at the end of the wait.
            return self.exporter is not None and self._exporter_scrapes_since(started) >= EXPORTER_SCRAPES_ENOUGH

        wait_s = self.first_data_wait_s if self.exporter is not None else 0.0
        if self.exporter is not None:
            log.info("prometheus: waiting up to %g s for the first scrapes of the exporter at %s",
                     wait_s, self.exporter_url)
        try:
            wait_until(all_ready, timeout_s=wait_s, interval_s=FIRST_DATA_POLL_S,
                       what="data for every Prometheus query")
        except WaitTimedOut:
            pass  # the callers say what is missing
        return answers

    def _exporter_scrapes_since(self, started: float) -> int:
        """Successful scrapes of the local exporter since ``started``, as Prometheus counts them
        (its target's ``up``); 0 when Prometheus names the target otherwise than host:port."""
        instance = urllib.parse.urlsplit(self.exporter_url or "").netloc
        seconds = max(1, math.ceil(time.time() - started))
        query = MetricQuery("exporter_scrapes", f'sum_over_time(up{{instance="{instance}"}}[{seconds}s])', "count")
        data = self._api("query", {"query": query.promql, "time": f"{time.time():.3f}"}, query)
        values = [float(item["value"][1]) for item in data.get("result", [])
                  if isinstance(item, dict) and isinstance(item.get("value"), list)]
        return int(max(values, default=0.0))

    def _required(self, query: MetricQuery) -> bool:
        """The built-in queries read series every scraped container has, and the replica count
        must answer: without data now, the selector or the scrape targets are wrong."""
        return query.metric not in self.config["queries"] or query.metric == catalog.RUNNING_TASK_COUNT

    def _recent(self, query: MetricQuery) -> tuple[float, list[dict[str, Any]]]:
        """``query`` over the last ``RECENT_S`` (at least four steps) at ``step_s``, ending now."""
        points = max(math.ceil(RECENT_S / self.step_s), 4)
        end = round(time.time(), 3)
        data = self._api("query_range", {"query": query.promql, "start": f"{end - points * self.step_s:.3f}",
                                         "end": f"{end:.3f}", "step": f"{self.step_s:g}"}, query)
        return end, [item for item in data.get("result", []) if isinstance(item, dict)]

    def _ready(self, query: MetricQuery, answer: tuple[float, list[dict[str, Any]]]) -> bool:
        if not _has_values(answer[1]):
            return False
        return query.metric != catalog.RUNNING_TASK_COUNT or self._count_now(answer) >= 1

    def _count_now(self, answer: tuple[float, list[dict[str, Any]]]) -> float:
        """The value at the range's last evaluation (now): service series summed, else the tasks'."""
        end, series = answer
        task_label = self.config["task_label"]
        service, tasks = [], []
        for item in series:
            values = item.get("values") or []
            if not values or float(values[-1][0]) < end - self.step_s / 2:
                continue  # no point now: the series has ended
            value = float(values[-1][1])
            if math.isfinite(value):
                (tasks if item.get("metric", {}).get(task_label) else service).append(value)
        return sum(service) if service else sum(tasks)

    def _no_data_error(self, empty: list[MetricQuery]) -> InputError:
        named = "; ".join(f"{query.metric} (query: {query.promql})" for query in empty)
        waited = ""
        if self.exporter is not None:
            waited = (f" (after waiting {self.first_data_wait_s:g} s for Prometheus to scrape the exporter "
                      f"at {self.exporter_url})")
        return InputError(
            f"Prometheus at {self.url} has no data in the last {RECENT_S:g} s{waited} for {named}. Check that "
            f"sources.prometheus.selector ({self.config['selector']!r}) matches the labels of those series, "
            f"that task_label ({self.config['task_label']!r}) is one of them, and that Prometheus scrapes the "
            "targets (its Status > Targets page); no load was sent")

    def _check_running_tasks(self, recent: dict[str, tuple[float, list[dict[str, Any]]]]) -> None:
        query = next((q for q in self.queries if q.metric == catalog.RUNNING_TASK_COUNT), None)
        if query is None:
            return
        count = self._count_now(recent[query.metric])
        if count < 1:
            raise InputError(
                f"the replica count query for {query.metric} answers {count:g} now, so it sees no running "
                f"task: check sources.prometheus.selector and task_label, or give your own "
                f"{query.metric} query; no load was sent. Query: {query.promql}")

    def _check_rate_windows(self) -> None:
        """Refuse a ``rate_window`` shorter than ``MIN_SCRAPES_PER_WINDOW`` measured scrape intervals."""
        window = self.config["rate_window"]
        window_s = duration_s(window)
        measured: dict[str, float | None] = {}
        problems: list[tuple[float, str]] = []
        for query in self.queries:
            if "$window" not in self._template(query.metric):
                continue
            intervals = []
            for selector in range_selectors(query.promql, window):
                if selector not in measured:
                    measured[selector] = self._scrape_interval(selector, query)
                if measured[selector] is not None:
                    intervals.append((measured[selector], selector))
            if not intervals:
                log.info("prometheus: no raw samples to measure the scrape interval of %s from; its rate window "
                         "%s is not checked against it", query.metric, window)
                continue
            interval, selector = max(intervals)  # the series scraped least often decide
            self.scrape_intervals_s[query.metric] = interval
            # 2% of slack: a measured 15.001 s is a 15 s scrape interval
            if window_s * 1.02 < MIN_SCRAPES_PER_WINDOW * interval:
                problems.append((interval, f"{query.metric} reads {selector}, scraped every {interval:g} s "
                                           f"(query: {query.promql})"))
        if problems:
            needed = prometheus_duration(MIN_SCRAPES_PER_WINDOW * max(interval for interval, _ in problems))
            raise InputError(
                f"the rate window {window} ({window_s:g} s) is shorter than {MIN_SCRAPES_PER_WINDOW} scrape "
                f"intervals, as measured in Prometheus, for {'; '.join(text for _, text in problems)}. With fewer "
                "scrapes in the window, one missed scrape empties or skews the rate: set "
                f"sources.prometheus.rate_window to at least \"{needed}\" (and ramp.warmup_s to at least as "
                "long); no load was sent")

    def _template(self, metric: str) -> str:
        own = self.config["queries"].get(metric)
        return own["query"] if own else TEMPLATES.get(metric, "")

    def _scrape_interval(self, selector: str, query: MetricQuery) -> float | None:
        """The median spacing of the raw samples of ``selector`` over the last ``RAW_RANGE``."""
        raw = MetricQuery(query.metric, f"{selector}[{RAW_RANGE}]", "samples")
        try:
            data = self._api("query", {"query": raw.promql, "time": f"{time.time():.3f}"}, raw)
        except InfrastructureError as exc:
            log.info("prometheus: the raw samples of %s could not be read (%s)", selector, exc)
            return None
        if data.get("resultType") != "matrix":
            return None
        spacings = []
        for item in data.get("result", []):
            stamps = sorted(float(stamp) for stamp, _ in item.get("values", []))
            spacings += [later - earlier for earlier, later in zip(stamps, stamps[1:]) if later > earlier]
        return round(statistics.median(spacings), 3) if spacings else None

    def read_resources(self) -> dict[str, Any]:
        """The containers' CPU and memory requests and limits: one value each, or None.

        From kube-state-metrics with the profile's selector; a limit kube-state-metrics does not
        have is read from cAdvisor's container spec. All pods of a Deployment share their spec,
        so the median over the series is the value (a pod of an older spec still running during
        a rollout does not move it). cAdvisor's pod-level series are left out when container
        series exist: their limit is the pod's sum.
        """
        selector = self.config["selector"].strip()
        values = {"selector": selector, "matchers": f", {selector}" if selector else ""}
        resources: dict[str, Any] = {key: None for key in RESOURCE_QUERIES}
        origins = []
        for key, templates in RESOURCE_QUERIES.items():
            for template, origin in zip(templates, ("kube-state-metrics", "cAdvisor")):
                if template is None:
                    continue
                value = self._resource(key, string.Template(template).safe_substitute(values))
                if value is not None:
                    resources[key] = value
                    origins.append(origin)
                    break
        if "cAdvisor" in origins:
            resources["source"] = (CADVISOR if "kube-state-metrics" not in origins
                                   else "kube-state-metrics and cAdvisor via Prometheus")
        else:
            resources["source"] = KUBE_STATE_METRICS
        return resources

    def _resource(self, key: str, promql: str) -> float | None:
        query = MetricQuery(f"resources.{key}", promql, RESOURCE_UNITS[key])
        try:
            data = self._api("query", {"query": promql, "time": f"{time.time():.3f}"}, query)
        except InfrastructureError as exc:
            warning = f"the containers' {key} could not be read: {exc}"
            log.warning("prometheus: %s", warning)
            self.warnings.append(warning)
            return None
        if data.get("resultType", "vector") != "vector":
            return None
        series = [item for item in data.get("result", []) if isinstance(item, dict)]
        named = [item for item in series if item.get("metric", {}).get("container", "") not in POD_LEVEL_CONTAINERS]
        found = []
        for item in named or series:
            try:
                value = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                found.append(value)
        return statistics.median(found) if found else None

    def fetch(self, start_unix_s: float, end_unix_s: float) -> list[MetricRow]:
        wait_s = end_unix_s + self.settle_s - time.time()
        if wait_s > 0:
            log.info("prometheus: waiting %.1f s for the last scrapes to land", wait_s)
            time.sleep(wait_s)
        self.stop()  # the run is over: nothing is left for Prometheus to scrape
        spans = chunks(start_unix_s, min(end_unix_s, time.time()), self.step_s)
        rows: list[MetricRow] = []
        empty: list[str] = []
        for query in self.queries:
            series: list[dict[str, Any]] = []
            for first, last in spans:
                data = self._api("query_range", {"query": query.promql, "start": f"{first:.3f}",
                                                 "end": f"{last:.3f}", "step": f"{self.step_s:g}"}, query)
                series += data.get("result", [])
            if not any(item.get("values") for item in series):
                empty.append(f"Prometheus has no data for {query.metric} between {start_unix_s:.0f} and "
                             f"{end_unix_s:.0f} (unix s); check the scrape targets and the selector. "
                             f"Query: {query.promql}")
                continue
            rows += rows_from(query, series, self.config["task_label"])
        if not rows and empty:
            raise InfrastructureError("; ".join(empty))
        if spans:
            self._record_events(spans)
        # One metric without data (a family this exporter does not have) costs that metric only;
        # the run keeps the others and says which one is missing.
        self.warnings += empty
        self.points += len(rows)
        log.info("prometheus: %d rows from %d queries", len(rows), len(self.queries))
        return rows

    def _record_events(self, spans: list[tuple[float, float]]) -> None:
        """Read the event counters over ``spans`` and hand each increase to ``on_event``.

        Optional series: one that is missing gives nothing, and one that cannot be read costs
        a warning, never the metrics already read.
        """
        for query in self.event_queries:
            series: list[dict[str, Any]] = []
            try:
                for first, last in spans:
                    data = self._api("query_range", {"query": query.promql, "start": f"{first:.3f}",
                                                     "end": f"{last:.3f}", "step": f"{self.step_s:g}"}, query)
                    series += data.get("result", [])
            except InfrastructureError as exc:
                self.warnings.append(f"{query.metric} events could not be read: {exc}")
                continue
            for event in events_from(query.metric, series, self.config["task_label"], spans[0][0]):
                kind = event.pop("kind")
                self.on_event(kind, **event, time_utc=_iso_utc(event["time_unix_s"]))
                self.events_recorded += 1
        if self.events_recorded:
            log.info("prometheus: %d events from %d counters", self.events_recorded, len(self.event_queries))

    def stop(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()

    def describe(self) -> dict[str, Any]:
        auth = "none"
        if self.config.get("bearer_token_env"):
            auth = f"bearer token from ${self.config['bearer_token_env']}"
        elif self.config.get("basic_auth_user_env"):
            auth = (f"basic auth from ${self.config['basic_auth_user_env']} "
                    f"and ${self.config['basic_auth_password_env']}")
        return {
            "kind": self.name, "url": self.url, "step_s": self.step_s, "settle_s": self.settle_s,
            "rate_window": self.config["rate_window"], "task_label": self.config["task_label"],
            "auth": auth, "queries": {q.metric: q.promql for q in self.queries},
            "exporter": self.exporter_url,
            "event_queries": {q.metric: q.promql for q in self.event_queries},
            "api_calls": self.api_calls, "rows": self.points, "events": self.events_recorded,
            "scrape_interval_s": dict(self.scrape_intervals_s), "resources": dict(self.resources),
        }

    # -- the HTTP API -------------------------------------------------------------------------
    def _api(self, endpoint: str, params: dict[str, str], query: MetricQuery) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/v1/{endpoint}", data=urllib.parse.urlencode(params).encode(), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
                     **self._headers})
        self.api_calls += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc, query) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfrastructureError(f"the Prometheus server at {self.url} does not answer ({reason})") from None
        except ValueError:
            raise InfrastructureError(f"{self.url} did not answer with Prometheus API JSON; is it a "
                                      "Prometheus server?") from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise InfrastructureError(f"Prometheus failed the query for {query.metric}: {error}. Query: {query.promql}")
        return answer.get("data") or {}

    def _refusal(self, exc: urllib.error.HTTPError, query: MetricQuery) -> InfrastructureError:
        if exc.code in (401, 403):
            return InfrastructureError(f"the Prometheus server at {self.url} refused the credentials "
                                       f"(HTTP {exc.code}); check the auth environment variables")
        try:
            error = json.loads(exc.read()).get("error")
        except (ValueError, AttributeError, OSError):
            error = None
        if error:
            return InfrastructureError(f"Prometheus rejected the query for {query.metric}: {error}. "
                                       f"Query: {query.promql}")
        return InfrastructureError(f"the Prometheus server at {self.url} answered HTTP {exc.code} "
                                   f"to the query for {query.metric}")


def _has_values(series: list[dict[str, Any]]) -> bool:
    return any(item.get("values") for item in series)


def _iso_utc(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()
