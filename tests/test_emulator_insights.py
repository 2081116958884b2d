"""The ECS emulator's metrics publisher: a minute of local samples becomes what AWS would write.

Pure arithmetic on hand-made samples (no process, no server): two tasks sampled once a second for
a minute, with known CPU, memory, traffic and storage, in both readings of the service datapoint.
The CloudWatch source's own rule (``per_task_series``) must then give the same per-task values
from either reading, which is what lets one source serve both.
"""

from __future__ import annotations

import pytest

from scalefinder.core import catalog
from scalefinder.loadgen.emulator.insights import ALB, INSIGHTS, SQS, MinuteBook, Names
from scalefinder.loadgen.sources.cloudwatch import PER_TASK, TOTAL, per_task_series, service_datapoint_mode

NAMES = Names("staging", "web", "targetgroup/web-tg/1", "app/web-alb/2", "jobs")
MINUTE = 60
START = 1_800_000_000 - 1_800_000_000 % MINUTE  # a minute boundary


def _sample(second: int, cpu: dict[str, float], requests: float = 10.0) -> list[dict]:
    time_s = START + second + 1.0  # a sample describes the second that ends at its time
    rows = [{"time_unix_s": time_s, "metric": catalog.RUNNING_TASK_COUNT, "task": "", "value": len(cpu)},
            {"time_unix_s": time_s, "metric": catalog.QUEUE_BACKLOG, "task": "", "value": 4.0}]
    for task, pct in cpu.items():
        rows += [{"time_unix_s": time_s, "metric": metric, "task": task, "value": value} for metric, value in (
            (catalog.CPU_UTILIZATION, pct), ("memory_used_mib", 100.0), ("network_rx_bytes_per_s", 1000.0),
            ("network_tx_bytes_per_s", 2000.0), ("storage_write_bytes_per_s", 50.0),
            (catalog.REQUESTS_PER_TASK, requests), ("target_response_time_ms", 40.0),
            ("http_5xx_per_s", 0.5), (catalog.CONCURRENCY_PER_TASK, 2.0))]
    return rows


def _minute(mode: str) -> dict[str, list[dict]]:
    book = MinuteBook(NAMES, cpu_units=256, memory_mib=512, minute_s=MINUTE, mode=mode)
    for second in range(MINUTE):
        book.add(_sample(second, {"task-1": 40.0, "task-2": 60.0}))
    assert book.ended_minutes(START + MINUTE - 1) == []  # not over yet
    assert book.ended_minutes(START + MINUTE + 0.1) == [START // MINUTE]
    return book.take(START // MINUTE)


def _values(data: list[dict], name: str, dimension_names: set[str]) -> list[float]:
    return [d["Value"] for d in data if d["MetricName"] == name
            and {dim["Name"] for dim in d["Dimensions"]} == dimension_names]


SERVICE = {"ClusterName", "ServiceName"}


@pytest.mark.parametrize("mode", [PER_TASK, TOTAL])
def test_a_minute_of_two_tasks_in_either_reading(mode):
    out = _minute(mode)
    insights = out[INSIGHTS]
    assert all(d["Timestamp"] == START and d["StorageResolution"] == 60 for data in out.values() for d in data)
    assert _values(insights, "RunningTaskCount", SERVICE) == [2.0]
    cpu = _values(insights, "CpuUtilized", SERVICE)
    # 40% and 60% of 256 CPU units: 102.4 and 153.6, per task or as one total
    assert sorted(cpu) == pytest.approx([102.4, 153.6] if mode == PER_TASK else [256.0])
    assert sum(_values(insights, "MemoryReserved", SERVICE)) == 1024.0
    # the storage counter: 50 B/s for 60 s, cumulative per task
    assert sum(_values(insights, "StorageWriteBytes", SERVICE)) == pytest.approx(2 * 3000.0)
    # enhanced observability: each task's own utilization under its TaskId
    assert sorted(_values(insights, "TaskCpuUtilization", SERVICE | {"TaskId"})) == pytest.approx([40.0, 60.0])
    balancer = out[ALB]
    # 10 req/s a task for 60 s: 1,200 requests, 600 a target
    assert _values(balancer, "RequestCountPerTarget", {"TargetGroup"}) == pytest.approx([600.0])
    assert _values(balancer, "RequestCount", {"LoadBalancer", "TargetGroup"}) == pytest.approx([1200.0])
    assert _values(balancer, "TargetResponseTime", {"LoadBalancer", "TargetGroup"}) == pytest.approx([0.040])
    assert _values(balancer, "HTTPCode_Target_5XX_Count", {"LoadBalancer", "TargetGroup"}) == pytest.approx([60.0])
    assert _values(balancer, "ActiveConnectionCount", {"LoadBalancer"}) == pytest.approx([4.0])
    assert _values(out[SQS], "ApproximateNumberOfMessagesVisible", {"QueueName"}) == [4.0]


def test_the_source_reads_the_same_per_task_value_from_either_reading():
    """What CloudWatch would answer for one period (Sum, SampleCount) gives 128 CPU units a task."""
    per_task = {}
    for mode in (PER_TASK, TOTAL):
        cpu = _values(_minute(mode)[INSIGHTS], "CpuUtilized", SERVICE)
        # each series maps a period's start to (value, period)
        sums, counts, running = {START: (sum(cpu), MINUTE)}, {START: (float(len(cpu)), MINUTE)}, {START: (2.0, MINUTE)}
        detected, _ = service_datapoint_mode(counts, running, MINUTE)
        assert detected == mode
        per_task[mode] = per_task_series(sums, counts, running, detected)[START][0]
    assert per_task[PER_TASK] == pytest.approx(per_task[TOTAL]) == pytest.approx(128.0)


def test_a_task_without_a_cpu_reading_yet_joins_the_next_minute():
    book = MinuteBook(NAMES, cpu_units=256, memory_mib=512, minute_s=2, interval_s=1.0)
    rows = _sample(0, {"task-1": 50.0})
    rows += [{"time_unix_s": START + 1.0, "metric": "memory_used_mib", "task": "task-2", "value": 90.0}]
    book.add(rows)
    out = book.take(START // 2)
    assert out[INSIGHTS][0]["StorageResolution"] == 1  # a compressed minute is written at 1 s resolution
    assert _values(out[INSIGHTS], "CpuUtilized", SERVICE) == [128.0]
    assert book.take(START // 2) == {}  # taken once
