"""A cAdvisor-compatible exporter of the embedded local cluster, for a real Prometheus server.

It serves on 127.0.0.1:

* ``/metrics`` - per running task, the container metrics cAdvisor publishes in Kubernetes
  (``container_cpu_usage_seconds_total``, ``container_spec_cpu_quota`` and ``_period``,
  ``container_memory_working_set_bytes``, ``container_spec_memory_limit_bytes``,
  ``container_network_receive_bytes_total``, ``container_network_transmit_bytes_total``,
  ``container_oom_events_total``), labelled ``pod`` and ``task`` with the task id, so the
  Prometheus source's built-in queries work on the local cluster exactly as on a Kubernetes
  cluster; each task's restarts and limits as kube-state-metrics reports them
  (``kube_pod_container_status_restarts_total``; ``kube_pod_container_resource_limits``, one
  series per ``resource`` with its ``unit``: cpu in cores, memory in bytes); and, as a load
  balancer would report them, each task's requests and requests in flight (integrated over
  time: its rate is the average concurrency);
* ``/targets`` - the running tasks in Prometheus's HTTP service discovery format
  (``http_sd_configs``), so a server can also scrape each task's own gauges, labelled the same way.

Every value is read at scrape time through the cluster's public readers (``task_views``,
``usage``, ``balancer_report``) - the same readings the local metric source turns into rows - so
Prometheus's numbers and the local source's agree. Working set is the resident memory of the
task's process tree, which is what the local source calls memory used. The OOM and restart
counts are per task id, summed over its incarnations (``LocalCluster.task_counters``); OOM
kills come from the kernel's count in the task's cgroup, so they stay 0 when the cluster runs
unenforced.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scalefinder.loadgen.cluster.cgroups import PERIOD_US
from scalefinder.core.errors import InfrastructureError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MIB = 1024 * 1024
LABELS = ("pod", "task", "container")
#: Families with labels besides ``LABELS``, as kube-state-metrics labels them.
EXTRA_LABELS: dict[str, tuple[str, ...]] = {"kube_pod_container_resource_limits": ("resource", "unit")}

# name -> (type, help). The names are the series names Prometheus stores: a counter's keeps its
# "_total" (prometheus_client takes it off the family's name and puts it back on the samples).
FAMILIES: dict[str, tuple[str, str]] = {
    "container_cpu_usage_seconds_total": ("counter", "Cumulative CPU time consumed by the task in seconds."),
    "container_spec_cpu_quota": ("gauge", "CPU quota of the task in microseconds per period."),
    "container_spec_cpu_period": ("gauge", "CPU period of the task in microseconds."),
    "container_memory_working_set_bytes": ("gauge", "Resident memory of the task's process tree in bytes."),
    "container_spec_memory_limit_bytes": ("gauge", "Memory limit of the task in bytes."),
    "container_network_receive_bytes_total": ("counter", "Bytes the load balancer sent to the task."),
    "container_network_transmit_bytes_total": ("counter", "Bytes the task answered through the load balancer."),
    "container_oom_events_total": ("counter", "Processes of the task the kernel's OOM killer killed."),
    # kube-state-metrics' name, not cAdvisor's: the orchestrator, not the container, counts restarts.
    "kube_pod_container_status_restarts_total": ("counter", "Times the task was started again after it ended."),
    # kube-state-metrics' too: the task's limits as the orchestrator declares them, one series per
    # resource (labels resource and unit as well). No requests: the local cluster reserves what it limits.
    "kube_pod_container_resource_limits": ("gauge", "The task's CPU (cores) and memory (bytes) limits."),
    # Not cAdvisor's: what a load balancer or ingress reports per target, for request-based metrics.
    "scalefinder_balancer_requests_total": ("counter", "Requests the load balancer sent to the task."),
    "scalefinder_balancer_in_flight_seconds_total": (
        "counter", "Requests in flight at the task integrated over time; its rate is the average concurrency."),
}


class ClusterCollector(Collector):
    """A prometheus_client collector reading every running task of ``cluster`` at each scrape."""

    def __init__(self, cluster: Any):
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        spec = self.cluster.spec
        quota_us = spec.cpu_units / 1024.0 * PERIOD_US
        limit_bytes = spec.memory_mib * MIB
        targets = self.cluster.balancer_report().get("targets", {})
        families = {name: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                        name, help_text, labels=LABELS + EXTRA_LABELS.get(name, ()))
                    for name, (kind, help_text) in FAMILIES.items()}
        # (resource, unit) -> limit, as kube-state-metrics reports it: cpu in cores, memory in bytes
        limits = {("cpu", "core"): spec.cpu_units / 1024.0, ("memory", "byte"): float(limit_bytes)}
        for view in self.cluster.task_views():
            try:
                usage = self.cluster.usage(view)
            except OSError:
                continue  # the task is going away between the listing and the read
            balancer = targets.get(view.task_id, {})
            counters = self.cluster.task_counters(view.task_id)
            values = {
                "container_cpu_usage_seconds_total": usage.cpu_s,
                "container_spec_cpu_quota": quota_us,
                "container_spec_cpu_period": PERIOD_US,
                "container_memory_working_set_bytes": usage.rss_bytes,
                "container_spec_memory_limit_bytes": limit_bytes,
                "container_network_receive_bytes_total": balancer.get("bytes_in_total", 0),
                "container_network_transmit_bytes_total": balancer.get("bytes_out_total", 0),
                "container_oom_events_total": counters["oom_kills"],
                "kube_pod_container_status_restarts_total": counters["restarts"],
                "scalefinder_balancer_requests_total": balancer.get("requests_total", 0),
                "scalefinder_balancer_in_flight_seconds_total": balancer.get("in_flight_area_s", 0.0),
            }
            labels = [view.task_id, view.task_id, "task"]  # pod and task are both the task id
            for name, value in values.items():
                families[name].add_metric(labels, float(value))
            for resource_unit, limit in limits.items():
                families["kube_pod_container_resource_limits"].add_metric([*labels, *resource_unit], limit)
        yield from families.values()


def cluster_registry(cluster: Any) -> CollectorRegistry:
    """A registry of its own holding only the cluster's collector (never the process-wide one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(cluster))
    return registry


def render_metrics(cluster: Any) -> str:
    """The exposition text of every running task of ``cluster``, read now."""
    return generate_latest(cluster_registry(cluster)).decode("utf-8")


def discovery_targets(cluster: Any) -> list[dict[str, Any]]:
    """The running tasks as HTTP service discovery target groups."""
    metrics_path = cluster.spec.metrics_path
    groups = []
    for view in cluster.task_views():
        groups.append({"targets": [f"{HOST}:{view.port}"],
                       "labels": {"pod": view.task_id, "task": view.task_id, "__metrics_path__": metrics_path}})
    return groups


class ClusterExporter:
    """Serves ``/metrics`` and ``/targets`` for a running ``LocalCluster`` from a background thread.

    A context manager; ``port=0`` picks a free port (read it back from ``url``).
    """

    def __init__(self, cluster: Any, port: int = 0):
        self.cluster = cluster
        self.requested_port = port
        self.scrapes = 0
        self.registry = cluster_registry(cluster)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            return ""
        return f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> "ClusterExporter":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = ThreadingHTTPServer((HOST, self.requested_port), _handler_for(self))
        except OSError as exc:
            raise InfrastructureError(
                f"the cluster exporter cannot listen on {HOST}:{self.requested_port} ({exc.strerror or exc}); "
                "choose another exporter_port") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="cluster-exporter", daemon=True)
        self._thread.start()
        log.info("cluster exporter serving on %s", self.url)

    def stop(self) -> None:
        """Stop serving and free the port. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _handler_for(exporter: ClusterExporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    exporter.scrapes += 1
                    self._reply(200, generate_latest(exporter.registry), CONTENT_TYPE_LATEST)
                elif path == "/targets":
                    self._reply(200, json.dumps(discovery_targets(exporter.cluster)), "application/json")
                else:
                    self._reply(404, "not found: try /metrics or /targets\n", "text/plain")
            except Exception as exc:  # a cluster stopping under a scrape: a failed scrape, not a crash
                log.debug("exporter request %s failed: %s", path, exc)
                self._reply(503, f"the cluster could not be read: {exc}\n", "text/plain")

        def _reply(self, status: int, body: str | bytes, content_type: str) -> None:
            data = body if isinstance(body, bytes) else body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes every second: keep quiet
            log.debug("exporter: " + format, *args)

    return Handler
