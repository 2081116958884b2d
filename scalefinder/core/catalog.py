"""The names scalefinder gives metrics, whatever source measured them.

Every source (local, CloudWatch, Prometheus) writes samples under these canonical names, so the
analyzer can judge a metric without knowing where it came from. A metric not listed here (an
application gauge, a custom CloudWatch metric) keeps the name the profile gives it and is
treated as ``role="utilization"``, ``scope="service_total"`` unless the profile says otherwise.

Scope says what a service-level sample (``task == ""``) means:

* ``task_average`` - the average over running tasks (Container Insights' service averages);
  per-task samples carry each task's own value.
* ``service_total`` - one value for the whole service (a shared queue's depth); the analyzer
  divides it by the running task count to get a per-task value.
* ``service_count`` - a count of tasks (no per-task meaning).

Role says how the analyzer uses it:

* ``utilization`` - a candidate scaling metric;
* ``outcome`` - a result of load (latency, errors): evidence, never a scaling metric;
* ``capacity`` - the running task count.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    unit: str
    scope: str
    role: str
    limit: float | None = None  # the value at which the resource is exhausted, if known
    description: str = ""


CPU_UTILIZATION = "cpu_utilization"
MEMORY_UTILIZATION = "memory_utilization"
CONCURRENCY_PER_TASK = "concurrency_per_task"
REQUESTS_PER_TASK = "requests_per_task"
QUEUE_BACKLOG = "queue_backlog"
QUEUE_BACKLOG_PER_TASK = "queue_backlog_per_task"
RUNNING_TASK_COUNT = "running_task_count"

CATALOG: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo(CPU_UTILIZATION, "percent", "task_average", "utilization", 100.0,
                   "CPU used as a percentage of the task's CPU reservation"),
        MetricInfo(MEMORY_UTILIZATION, "percent", "task_average", "utilization", 100.0,
                   "memory of the task's whole process tree as a percentage of its memory reservation"),
        MetricInfo("memory_used_mib", "MiB", "task_average", "utilization", None,
                   "memory of the task's process tree"),
        MetricInfo("network_rx_bytes_per_s", "bytes/s", "task_average", "utilization", None,
                   "bytes received per second"),
        MetricInfo("network_tx_bytes_per_s", "bytes/s", "task_average", "utilization", None,
                   "bytes sent per second"),
        MetricInfo("storage_read_bytes_per_s", "bytes/s", "task_average", "utilization", None,
                   "bytes read from storage per second"),
        MetricInfo("storage_write_bytes_per_s", "bytes/s", "task_average", "utilization", None,
                   "bytes written to storage per second"),
        MetricInfo(CONCURRENCY_PER_TASK, "requests", "task_average", "utilization", None,
                   "requests in flight at a task (the load balancer's active requests per target)"),
        MetricInfo(REQUESTS_PER_TASK, "requests/s", "task_average", "utilization", None,
                   "requests per second handled by a task (ALB RequestCountPerTarget / 60)"),
        MetricInfo(QUEUE_BACKLOG, "jobs", "service_total", "utilization", None,
                   "jobs waiting in the service's queue"),
        MetricInfo(QUEUE_BACKLOG_PER_TASK, "jobs", "task_average", "utilization", None,
                   "jobs waiting in the queue divided by the running task count"),
        MetricInfo("target_response_time_ms", "ms", "task_average", "outcome", None,
                   "mean time a target took to answer (ALB TargetResponseTime)"),
        MetricInfo("http_5xx_per_s", "errors/s", "task_average", "outcome", None,
                   "5xx answers per second from targets"),
        MetricInfo(RUNNING_TASK_COUNT, "tasks", "service_count", "capacity", None,
                   "tasks running and receiving traffic"),
    ]
}


def info(name: str) -> MetricInfo:
    """What scalefinder knows about a metric; unknown names are service-wide utilization gauges."""
    return CATALOG.get(name) or MetricInfo(name, "", "service_total", "utilization")
