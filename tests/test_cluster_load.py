"""The archetypes under a constant offered rate: measured metrics match their formulas (±15%).

Real task processes, cgroups and the load balancer on 127.0.0.1, driven by a bounded open-loop
client. Rates stay far below what the machine can do so other test runs do not disturb them.
"""

import statistics
import time

import pytest

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster, archetypes
from tests.cluster_helpers import Collector, ConstantLoad, within

pytestmark = pytest.mark.load

TOLERANCE = 0.15
SETTLE_S = 3  # seconds of load before measuring: connections open, first samples taken
MEASURE_S = 6


def start(archetype, tasks=2, events=None, **params):
    spec = ClusterSpec(archetype=archetype, command=None, params=params, tasks=tasks, cpu_units=256, memory_mib=256)
    sink = (lambda kind, **detail: events.append((kind, detail))) if events is not None else None
    return LocalCluster(spec, on_event=sink)


def measure(cluster, collector, seconds=MEASURE_S):
    """Let the load settle, then return the time from which samples count."""
    time.sleep(SETTLE_S)
    since = time.time()
    time.sleep(seconds)
    return since


def per_task(collector, cluster, metric, since):
    return {task: collector.mean(metric, task, since) for task in cluster.running_tasks()}


def test_cpu_matches_formula_and_halves_when_tasks_double():
    rate = 24.0
    cpu_ms = 10.0
    with start("cpu", cpu_ms=cpu_ms) as cluster:
        assert cluster.cgroup_mode in ("cgroup-v1", "cgroup-v2", "unenforced")
        collector = Collector()
        source = cluster.metric_source(interval_s=1.0)
        source.start(collector)
        try:
            with ConstantLoad(cluster.url, rate, duration_s=50) as load:
                since = measure(cluster, collector)
                expected = 100.0 * (rate / 2) * (cpu_ms + archetypes.SERVING_CPU_MS) / 1000 / 0.25
                two = per_task(collector, cluster, "cpu_utilization", since)
                for task, value in two.items():
                    assert within(value, expected, TOLERANCE), (task, value, expected)
                for task, value in per_task(collector, cluster, "requests_per_task", since).items():
                    assert within(value, rate / 2, TOLERANCE), (task, value)
                service_two = collector.mean("cpu_utilization", "", since)

                cluster.scale_to(4)
                assert cluster.running_tasks() == ["task-1", "task-2", "task-3", "task-4"]
                since = measure(cluster, collector)
                four = per_task(collector, cluster, "cpu_utilization", since)
                assert len(four) == 4
                ratio = collector.mean("cpu_utilization", "", since) / service_two
                print(f"cpu: expected {expected:.1f}% per task at 2 tasks, measured {two}; "
                      f"at 4 tasks {four}; ratio {ratio:.3f}")
                assert within(ratio, 0.5, TOLERANCE), (ratio, two, four)
                assert collector.mean("running_task_count", "", since) == 4

                cluster.scale_to(2)  # drains the two newest tasks while the load goes on
                assert cluster.running_tasks() == ["task-1", "task-2"]
        finally:
            source.stop()
        result = load.result
        assert result.dropped == 0
        assert set(result.statuses) == {200}, result.statuses  # no request lost to scaling in or out
        assert result.statuses[200] >= 0.97 * rate * (2 * (SETTLE_S + MEASURE_S))


def test_memory_follows_in_flight_requests_and_a_task_over_its_limit_is_restarted():
    events = []
    mib, hold_ms, rate = 16.0, 1000.0, 8.0
    # No reserve: the heap cap is the whole limit, so the kernel's (or the emulated) limit ends the task.
    with start("memory", events=events, mib_per_request=mib, hold_ms=hold_ms, reserve_mib=0) as cluster:
        idle = {view.task_id: cluster.usage(view).rss_bytes / 2**20 for view in cluster.task_views()}
        collector = Collector()
        source = cluster.metric_source(interval_s=1.0)
        source.start(collector)
        try:
            with ConstantLoad(cluster.url, rate, duration_s=30) as load:
                since = measure(cluster, collector)
                used = per_task(collector, cluster, "memory_used_mib", since)
                utilization = collector.mean("memory_utilization", "task-1", since)
                # Little's law with the time a request was really held, as measured in this run: on
                # a busy host a request takes longer than hold_ms, so more of them are in flight.
                held_s = statistics.fmean(list(load.result.latencies_ms)) / 1000
            assert held_s >= hold_ms / 1000 * 0.95, held_s  # the server holds each request at least hold_ms
            expected_extra = (rate / 2) * held_s * mib  # requests in flight per task x MiB per request
            print(f"memory: requests held {held_s:.2f} s; expected {expected_extra:.1f} MiB above idle, measured "
                  f"{ {task: round(used[task] - idle[task], 1) for task in used} }")
            for task, value in used.items():
                assert within(value - idle[task], expected_extra, TOLERANCE), (task, value, idle[task])
            assert within(utilization, 100 * used["task-1"] / 256, 0.01)

            # Far over capacity: ~20 requests x 16 MiB in flight cannot fit in 256 MiB.
            cluster.scale_to(1)
            with ConstantLoad(cluster.url, 20.0, duration_s=3) as overload:
                time.sleep(3)
            deadline = time.monotonic() + 30
            while not any(kind == "task_restart" for kind, _ in events) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            source.stop()
        crashes = [detail for kind, detail in events if kind == "task_crash"]
        assert crashes, events
        assert crashes[0]["task"] == "task-1"
        assert "memory limit" in crashes[0]["reason"]
        assert cluster.crashes and cluster.crashes[0]["reason"] == crashes[0]["reason"]
        assert any(kind == "task_restart" and detail["task"] == "task-1" for kind, detail in events)
        assert cluster.running_tasks() == ["task-1"]
        assert overload.result.statuses.get(200, 0) < overload.result.sent  # the crash cost requests


def test_workers_concurrency_matches_littles_law():
    rate, work_ms = 24.0, 200.0
    with start("workers", workers=4, work_ms=work_ms, backlog=8) as cluster:
        collector = Collector()
        source = cluster.metric_source(interval_s=1.0)
        source.start(collector)
        try:
            with ConstantLoad(cluster.url, rate, duration_s=30) as load:
                since = measure(cluster, collector)
        finally:
            source.stop()
        expected = (rate / 2) * work_ms / 1000
        print(f"workers: expected {expected:.2f} in flight, measured "
              f"{per_task(collector, cluster, 'concurrency_per_task', since)}")
        for task, value in per_task(collector, cluster, "concurrency_per_task", since).items():
            assert within(value, expected, TOLERANCE), (task, value, expected)
        for value in per_task(collector, cluster, "workers_busy", since).values():
            assert 0 <= value <= 4
        assert set(load.result.statuses) == {200}


def test_workers_answer_503_when_the_backlog_overflows():
    # capacity 2 workers / 0.5 s = 4 req/s per task; 20 req/s overflows a backlog of 2 at once
    with start("workers", tasks=1, workers=2, work_ms=500, backlog=2) as cluster:
        with ConstantLoad(cluster.url, 20.0, duration_s=3) as load:
            time.sleep(3)
    statuses = load.result.statuses
    assert statuses[503] > 0.5 * load.result.sent, statuses
    assert statuses[200] > 0, statuses
    assert statuses.get("error", 0) == 0


def test_queue_backlog_grows_at_the_rate_beyond_capacity():
    rate, jobs_at_once, job_ms = 60.0, 2, 100.0
    capacity_per_task = jobs_at_once * 1000 / job_ms  # 20 jobs/s
    with start("queue", jobs_at_once=jobs_at_once, job_ms=job_ms, max_backlog=10_000) as cluster:
        collector = Collector()
        source = cluster.metric_source(interval_s=1.0)
        source.start(collector)
        try:
            with ConstantLoad(cluster.url, rate, duration_s=30) as load:
                since = measure(cluster, collector, seconds=8)
        finally:
            source.stop()
        backlog = [(row["time_unix_s"], row["value"]) for row in collector.rows
                   if row["metric"] == "queue_backlog" and row["time_unix_s"] >= since]
        assert all(row["task"] == "" for row in collector.rows if row["metric"] == "queue_backlog")
        (t0, b0), (t1, b1) = backlog[0], backlog[-1]
        growth_per_s = (b1 - b0) / (t1 - t0)
        processed_per_task = (rate - growth_per_s) / 2
        print(f"queue: backlog grows {growth_per_s:.1f} jobs/s, {processed_per_task:.1f} jobs/s per task processed")
        assert within(processed_per_task, capacity_per_task, TOLERANCE), (processed_per_task, backlog)
        in_progress = per_task(collector, cluster, "jobs_in_progress", since)
        assert all(within(value, jobs_at_once, TOLERANCE) for value in in_progress.values()), in_progress
        assert set(load.result.statuses) == {202}
