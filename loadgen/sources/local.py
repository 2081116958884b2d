"""The local metric source: Container Insights and ALB style metrics of the embedded cluster.

Every ``interval_s`` a thread reads, for each task in rotation: its CPU time (the cgroup's
``cpuacct``/``cpu.stat`` when enforced, the process tree's otherwise), the resident memory of
its process tree (shared pages of forked workers counted once: see ``Supervisor.usage``), its
storage I/O, the balancer's counters for it, and the gauges it serves in
Prometheus text format on the cluster's ``metrics_path``. Rates are differences between two
reads divided by the time between them, so a row describes the interval that ends at its time.

Per-task rows carry the task id; service rows (task "") are the average over tasks for
``task_average`` metrics and the total for ``service_total`` ones. A gauge labelled
``scope="service"`` is a value of the whole service that every task reports (a shared queue's
depth): it gets one service row, the median of what the tasks reported, and no per-task rows.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from scalefinder.loadgen.sources.base import MetricRow, MetricSink, MetricSource
from scalefinder.core import catalog
from scalefinder.loadgen.kind_config import seconds, with_defaults
from scalefinder.core.errors import InfrastructureError, InputError

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 0.5
MIB = 1024 * 1024


@dataclass(frozen=True)
class Reading:
    """Cumulative counters of one task incarnation at one moment."""

    time_s: float  # when the task was sampled (the balancer's counters were read just before)
    incarnation: int
    cpu_s: float
    cpu_read_unix_s: float  # when cpu_s was read
    rss_bytes: int
    read_bytes: int
    write_bytes: int
    balancer: dict


@dataclass(frozen=True)
class Gauge:
    name: str
    value: float
    service_wide: bool


def parse_gauges(text: str) -> list[Gauge]:
    """Gauges (and untyped samples) from Prometheus text format; counters and histograms skipped.

    Parsed by prometheus_client. A page it refuses is read again line by line, so one line it
    cannot read (a task's own metrics page is not always well made) costs that line only.
    """
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        families = _families_line_by_line(text)
    gauges: list[Gauge] = []
    for family in families:
        if family.type not in ("gauge", "unknown"):  # prometheus_client calls untyped "unknown"
            continue
        for sample in family.samples:
            value = float(sample.value)
            if math.isfinite(value):
                gauges.append(Gauge(sample.name, value, sample.labels.get("scope") == "service"))
    return gauges


def _families_line_by_line(text: str) -> list[Metric]:
    """Each sample line parsed on its own, after the TYPE lines seen so far; lines refused are skipped."""
    type_lines: dict[str, str] = {}
    families: list[Metric] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                type_lines[parts[2]] = line
            continue
        if not line:
            continue
        try:
            # the TYPE lines tell a counter's or histogram's samples from gauges, as in the whole page
            families += text_string_to_metric_families("\n".join([*type_lines.values(), line]) + "\n")
        except ValueError:
            continue
    return families


class LocalMetricSource(MetricSource):
    name = "local"
    live = True

    def __init__(self, cluster: Any, interval_s: float = 1.0):
        if not interval_s > 0:
            raise InputError(f"interval_s must be greater than 0, got {interval_s!r}")
        self.cluster = cluster
        self.interval_s = float(interval_s)
        self._previous: dict[str, Reading] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scrapers = _scraper_pool()
        self.samples_taken = 0
        self.scrape_failures = 0

    def start(self, sink: MetricSink) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._scrapers = _scraper_pool()
        self._thread = threading.Thread(target=self._run, args=(sink,), name="local-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._scrapers.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "local", "interval_s": self.interval_s, "cgroup_mode": self.cluster.cgroup_mode,
            "cpu_from": "cgroup" if self.cluster.cgroup_mode != "unenforced" else "process tree",
            "memory_from": "resident set size of each task's own process plus the private memory (USS) "
                           "of every other process in its tree",
            "network_from": "load balancer bytes to and from each task",
            "gauges_from": self.cluster.spec.metrics_path,
            "samples_taken": self.samples_taken, "scrape_failures": self.scrape_failures,
        }

    def _run(self, sink: MetricSink) -> None:
        self.sample()  # the first read only sets the baseline of every counter
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (a slow scrape): skip, don't burst
                next_at = time.monotonic() + self.interval_s
            try:
                rows = self.sample()
            except InfrastructureError as exc:  # the cluster is stopping or its balancer is gone
                log.warning("local metrics skipped a sample: %s", exc)
                continue
            except Exception:
                log.exception("local metric sample failed")
                continue
            if rows:
                sink(rows)

    def sample(self) -> list[MetricRow]:
        """Read every counter once; return the rows for the interval since the previous read."""
        views = self.cluster.task_views()
        report = self.cluster.balancer_report().get("targets", {})
        now = time.time()
        scrapes = {view.task_id: self._scrapers.submit(self._scrape, view.url) for view in views}
        per_task: dict[str, dict[str, float]] = {}
        service_gauges: dict[str, list[float]] = {}
        readings: dict[str, Reading] = {}
        for view in views:
            try:
                usage = self.cluster.usage(view)
            except OSError:
                continue  # the task is going away between the listing and the read
            reading = Reading(now, view.incarnation, usage.cpu_s, usage.cpu_read_unix_s, usage.rss_bytes,
                              usage.read_bytes, usage.write_bytes, report.get(view.task_id, {}))
            readings[view.task_id] = reading
            values = self._task_values(reading, self._previous.get(view.task_id))
            for gauge in scrapes[view.task_id].result():
                if gauge.service_wide:
                    service_gauges.setdefault(gauge.name, []).append(gauge.value)
                else:
                    values[gauge.name] = gauge.value
            per_task[view.task_id] = values
        self._previous = readings
        self.samples_taken += 1
        return self._rows(now, per_task, service_gauges, len(views))

    def _task_values(self, now: Reading, before: Reading | None) -> dict[str, float]:
        memory_mib = now.rss_bytes / MIB
        values = {
            "memory_used_mib": memory_mib,
            catalog.MEMORY_UTILIZATION: 100.0 * memory_mib / self.cluster.spec.memory_mib,
        }
        if before is None or before.incarnation != now.incarnation or now.time_s <= before.time_s:
            return values  # no interval yet (new or restarted task): rates need two reads
        elapsed = now.time_s - before.time_s
        cores = self.cluster.spec.cpu_units / 1024.0
        cpu_elapsed = now.cpu_read_unix_s - before.cpu_read_unix_s
        if cpu_elapsed > 0:
            values[catalog.CPU_UTILIZATION] = 100.0 * max(now.cpu_s - before.cpu_s, 0.0) / cpu_elapsed / cores
        values["storage_read_bytes_per_s"] = max(now.read_bytes - before.read_bytes, 0) / elapsed
        values["storage_write_bytes_per_s"] = max(now.write_bytes - before.write_bytes, 0) / elapsed
        lb_now, lb_before = now.balancer, before.balancer
        if lb_now and lb_before:
            def delta(key: str) -> float:
                return max(lb_now.get(key, 0) - lb_before.get(key, 0), 0)

            values["network_rx_bytes_per_s"] = delta("bytes_in_total") / elapsed
            values["network_tx_bytes_per_s"] = delta("bytes_out_total") / elapsed
            values[catalog.REQUESTS_PER_TASK] = delta("requests_total") / elapsed
            values[catalog.CONCURRENCY_PER_TASK] = delta("in_flight_area_s") / elapsed
            values["http_5xx_per_s"] = delta("http_5xx_total") / elapsed
            responses = delta("responses_total")
            if responses:
                values["target_response_time_ms"] = delta("response_ms_total") / responses
        return values

    def _rows(self, now: float, per_task: dict[str, dict[str, float]],
              service_gauges: dict[str, list[float]], running: int) -> list[MetricRow]:
        rows: list[MetricRow] = []
        by_metric: dict[str, list[float]] = {}
        for task_id, values in per_task.items():
            for metric, value in values.items():
                rows.append(self._row(now, metric, task_id, value))
                by_metric.setdefault(metric, []).append(value)
        for metric, values in by_metric.items():
            scope = catalog.info(metric).scope
            value = sum(values) if scope == "service_total" else sum(values) / len(values)
            rows.append(self._row(now, metric, "", value))
        for metric, values in service_gauges.items():
            rows.append(self._row(now, metric, "", statistics.median(values)))
        rows.append(self._row(now, catalog.RUNNING_TASK_COUNT, "", running))
        return rows

    def _row(self, now: float, metric: str, task: str, value: float) -> MetricRow:
        return {"time_unix_s": now, "source": self.name, "metric": metric, "task": task,
                "value": float(value), "unit": catalog.info(metric).unit}

    def _scrape(self, base_url: str) -> list[Gauge]:
        try:
            with urllib.request.urlopen(base_url + self.cluster.spec.metrics_path, timeout=SCRAPE_TIMEOUT_S) as reply:
                text = reply.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # a server without a metrics page is normal, not a failure
                self.scrape_failures += 1
            return []
        except (urllib.error.URLError, OSError, ValueError):
            self.scrape_failures += 1
            return []
        return parse_gauges(text)


def _scraper_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-scrape")


def validate_config(table: dict, where: str) -> dict:
    """Check ``[sources.local]``: only ``interval_s`` (seconds between samples, default 1)."""
    config = with_defaults(table, where, {"interval_s": 1.0})
    return {"interval_s": seconds(config["interval_s"], 0.1, 60, f"{where}.interval_s")}


def build(config: dict, context: Any) -> MetricSource:
    if context.cluster is None:
        raise InputError("the local metric source needs a local target (target.kind = \"local\")")
    return LocalMetricSource(context.cluster, interval_s=config.get("interval_s", 1.0))
