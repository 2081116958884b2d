"""What Container Insights, the load balancer and SQS would write to CloudWatch, from local samples.

The local cluster's metric source samples every task once a second. ``MinuteBook`` collects those
samples and, once a minute has ended, turns it into the datapoints AWS writes for that minute:

* ``ECS/ContainerInsights`` under ``ClusterName, ServiceName`` (and ``ClusterName`` alone):
  ``CpuUtilized`` (CPU units), ``CpuReserved``, ``MemoryUtilized`` (MiB), ``MemoryReserved``,
  ``NetworkRxBytes``/``NetworkTxBytes`` (bytes a second), ``StorageReadBytes``/``StorageWriteBytes``
  (cumulative bytes since the task started, as the performance log writes them) and
  ``RunningTaskCount``. The service-level datapoint has two readings in the wild, and the
  emulator writes either (``mode``): ``per_task`` writes each task's own value (one datapoint per
  task per minute: ``Average`` is per task, ``Sum`` the total), ``total`` writes one datapoint a
  minute with the tasks' total. A source that is right must give the same answer in both.
* with enhanced observability, ``TaskCpuUtilization`` and ``TaskMemoryUtilization`` (percent of
  the task's reservation) under ``ClusterName, ServiceName, TaskId``.
* ``AWS/ApplicationELB``: ``RequestCount`` and ``RequestCountPerTarget`` (requests in the minute;
  per target is the count over the healthy targets), ``TargetResponseTime`` (seconds, mean over
  the minute's responses), ``HTTPCode_Target_5XX_Count`` and ``ActiveConnectionCount`` (the mean
  number of open requests over the minute, the local balancer's nearest equivalent).
* ``AWS/SQS``: ``ApproximateNumberOfMessagesVisible`` (mean of the broker's backlog).

Every datapoint of a minute is stamped at the minute's start. The minute may be compressed (a few
seconds for tests); its datapoints are then written at one-second storage resolution.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from scalefinder.core import catalog

INSIGHTS = "ECS/ContainerInsights"
ALB = "AWS/ApplicationELB"
SQS = "AWS/SQS"
PER_TASK, TOTAL = "per_task", "total"
MODES = (PER_TASK, TOTAL)


@dataclass(frozen=True)
class Names:
    """The dimension values the datapoints carry."""
    cluster: str
    service: str
    target_group: str  # the TargetGroup dimension, "targetgroup/name/id"
    load_balancer: str  # the LoadBalancer dimension, "app/name/id"
    queue: str | None = None


@dataclass
class _TaskMinute:
    cpu_pct: list[float] = field(default_factory=list)
    memory_mib: list[float] = field(default_factory=list)
    rx: list[float] = field(default_factory=list)
    tx: list[float] = field(default_factory=list)
    storage_read: float = 0.0  # cumulative bytes at the end of the minute
    storage_write: float = 0.0
    requests: float = 0.0
    errors: float = 0.0
    response_ms_weighted: float = 0.0  # response time × requests, over the intervals that had both
    timed_requests: float = 0.0
    in_flight_area: float = 0.0


@dataclass
class _Minute:
    tasks: dict[str, _TaskMinute] = field(default_factory=lambda: defaultdict(_TaskMinute))
    running: list[float] = field(default_factory=list)
    backlog: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class MinuteBook:
    """Samples of the local source grouped by CloudWatch minute, and the minute's datapoints."""

    def __init__(self, names: Names, *, cpu_units: int, memory_mib: int, minute_s: int = 60,
                 interval_s: float = 1.0, mode: str = PER_TASK, enhanced: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.names, self.cpu_units, self.memory_mib = names, cpu_units, memory_mib
        self.minute_s, self.interval_s, self.mode, self.enhanced = minute_s, interval_s, mode, enhanced
        self._minutes: dict[int, _Minute] = defaultdict(_Minute)
        # cumulative storage bytes of each task since it started (Container Insights' counter)
        self._storage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """One sample of the local source: its rows describe the interval that ends at their time."""
        rows = list(rows)
        if not rows:
            return
        # the interval's middle decides its minute, so a sample is never counted in two
        minute = int((rows[0]["time_unix_s"] - self.interval_s / 2) // self.minute_s)
        book = self._minutes[minute]
        book.seconds += self.interval_s
        by_task: dict[str, dict[str, float]] = defaultdict(dict)
        for row in rows:
            metric, task, value = row["metric"], row["task"], float(row["value"])
            if task:
                by_task[task][metric] = value
            elif metric == catalog.RUNNING_TASK_COUNT:
                book.running.append(value)
            elif metric == catalog.QUEUE_BACKLOG:
                book.backlog.append(value)
        for task_id, values in by_task.items():
            self._add_task_sample(book.tasks[task_id], task_id, values)

    def _add_task_sample(self, task: _TaskMinute, task_id: str, values: dict[str, float]) -> None:
        step = self.interval_s
        for metric, samples in ((catalog.CPU_UTILIZATION, task.cpu_pct), ("memory_used_mib", task.memory_mib),
                                ("network_rx_bytes_per_s", task.rx), ("network_tx_bytes_per_s", task.tx)):
            if metric in values:
                samples.append(values[metric])
        counters = self._storage[task_id]
        counters[0] += values.get("storage_read_bytes_per_s", 0.0) * step
        counters[1] += values.get("storage_write_bytes_per_s", 0.0) * step
        task.storage_read, task.storage_write = counters
        requests = values.get(catalog.REQUESTS_PER_TASK, 0.0) * step
        task.requests += requests
        task.errors += values.get("http_5xx_per_s", 0.0) * step
        task.in_flight_area += values.get(catalog.CONCURRENCY_PER_TASK, 0.0) * step
        if "target_response_time_ms" in values and requests > 0:
            task.response_ms_weighted += values["target_response_time_ms"] * requests
            task.timed_requests += requests

    def forget_task(self, task_id: str) -> None:
        """A task that stopped: a new one under the same id starts its storage counters at zero."""
        self._storage.pop(task_id, None)

    def ended_minutes(self, now_s: float) -> list[int]:
        """Minutes that ended before ``now_s`` and were not yet taken."""
        current = int(now_s // self.minute_s)
        return sorted(minute for minute in self._minutes if minute < current)

    def take(self, minute: int) -> dict[str, list[dict[str, Any]]]:
        """The datapoints of an ended minute, by namespace; the minute is then forgotten."""
        book = self._minutes.pop(minute, None)
        if book is None or not book.running:
            return {}
        stamp = minute * self.minute_s
        resolution = 60 if self.minute_s >= 60 else 1
        service = [{"Name": "ClusterName", "Value": self.names.cluster},
                   {"Name": "ServiceName", "Value": self.names.service}]
        cluster = service[:1]
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)

        def put(namespace: str, name: str, dimensions: list[dict[str, str]], value: float) -> None:
            out[namespace].append({"MetricName": name, "Dimensions": dimensions, "Timestamp": stamp,
                                   "Value": float(value), "StorageResolution": resolution})

        running = sum(book.running) / len(book.running)
        for dimensions in (service, cluster):
            put(INSIGHTS, "RunningTaskCount", dimensions, running)
        per_task = self._task_values(book)
        for name in ("CpuUtilized", "CpuReserved", "MemoryUtilized", "MemoryReserved", "NetworkRxBytes",
                     "NetworkTxBytes", "StorageReadBytes", "StorageWriteBytes"):
            values = [values[name] for values in per_task.values() if name in values]
            if not values:
                continue
            written = values if self.mode == PER_TASK else [sum(values)]
            for value in written:
                for dimensions in (service, cluster):
                    put(INSIGHTS, name, dimensions, value)
        if self.enhanced:
            for task_id, values in per_task.items():
                task = service + [{"Name": "TaskId", "Value": task_id}]
                if "CpuUtilized" in values:
                    put(INSIGHTS, "TaskCpuUtilization", task, 100.0 * values["CpuUtilized"] / self.cpu_units)
                if "MemoryUtilized" in values:
                    put(INSIGHTS, "TaskMemoryUtilization", task, 100.0 * values["MemoryUtilized"] / self.memory_mib)
        self._balancer(book, running, put)
        backlog = _mean(book.backlog)
        if self.names.queue and backlog is not None:
            put(SQS, "ApproximateNumberOfMessagesVisible", [{"Name": "QueueName", "Value": self.names.queue}], backlog)
        return dict(out)

    def _task_values(self, book: _Minute) -> dict[str, dict[str, float]]:
        values: dict[str, dict[str, float]] = {}
        for task_id, task in book.tasks.items():
            mine = {"CpuReserved": float(self.cpu_units), "MemoryReserved": float(self.memory_mib),
                    "StorageReadBytes": task.storage_read, "StorageWriteBytes": task.storage_write}
            for name, samples, scale in (("CpuUtilized", task.cpu_pct, self.cpu_units / 100.0),
                                         ("MemoryUtilized", task.memory_mib, 1.0),
                                         ("NetworkRxBytes", task.rx, 1.0), ("NetworkTxBytes", task.tx, 1.0)):
                mean = _mean(samples)
                if mean is not None:
                    mine[name] = mean * scale
            if "CpuUtilized" in mine:  # a task's first sample has no CPU yet: it joins next minute
                values[task_id] = mine
        return values

    def _balancer(self, book: _Minute, running: float, put: Any) -> None:
        group = [{"Name": "TargetGroup", "Value": self.names.target_group}]
        balancer = [{"Name": "LoadBalancer", "Value": self.names.load_balancer}]
        both = balancer + group
        tasks = list(book.tasks.values())
        requests = sum(task.requests for task in tasks)
        put(ALB, "RequestCount", both, requests)
        put(ALB, "RequestCount", balancer, requests)
        if running > 0:
            for dimensions in (group, both):
                put(ALB, "RequestCountPerTarget", dimensions, requests / running)
        put(ALB, "HTTPCode_Target_5XX_Count", both, sum(task.errors for task in tasks))
        if book.seconds > 0:
            put(ALB, "ActiveConnectionCount", balancer, sum(task.in_flight_area for task in tasks) / book.seconds)
        timed = sum(task.timed_requests for task in tasks)
        if timed > 0:
            mean_ms = sum(task.response_ms_weighted for task in tasks) / timed
            for dimensions in (both, balancer):
                put(ALB, "TargetResponseTime", dimensions, mean_ms / 1000.0)
