"""The archetypes not covered by the load tests, each started for real and checked for its pattern."""

import asyncio
import time
import urllib.request

import aiohttp
import pytest

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from scalefinder.loadgen.sources.local import parse_gauges

pytestmark = pytest.mark.load


def cluster(archetype, tasks=1, **params):
    return LocalCluster(ClusterSpec(archetype=archetype, command=None, params=params, tasks=tasks,
                                    cpu_units=256, memory_mib=256))


def burst(url, count, return_exceptions=False):
    """``count`` concurrent requests; returns (statuses or exceptions, seconds for all)."""
    async def run():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async def one():
                async with session.get(url + "/work") as reply:
                    await reply.read()
                    return reply.status
            started = time.monotonic()
            statuses = await asyncio.gather(*[one() for _ in range(count)], return_exceptions=return_exceptions)
            return statuses, time.monotonic() - started
    return asyncio.run(run())


def gauges(task_url):
    with urllib.request.urlopen(task_url + "/metrics", timeout=5) as reply:
        return {gauge.name: gauge.value for gauge in parse_gauges(reply.read().decode())}


def test_retaining_keeps_memory_per_request_served():
    with cluster("retaining", cpu_ms=1, retained_kib_per_request=64) as running:
        statuses, _ = burst(running.url, 40)
        assert set(statuses) == {200}
        assert gauges(running.task_views()[0].url)["retained_mib"] == pytest.approx(40 * 64 / 1024)


def test_waiting_queues_requests_beyond_its_pool():
    with cluster("waiting", pool_size=4, latency_ms=200) as running:
        statuses, seconds = burst(running.url, 12)  # three rounds of the pool
    assert set(statuses) == {200}
    assert 0.55 <= seconds < 2.0, seconds


def test_jvm_memory_is_near_the_limit_from_the_start():
    with cluster("jvm", heap_fraction=0.75) as running:
        view = running.task_views()[0]
        assert running.usage(view).rss_bytes / 2**20 >= 0.75 * 256
        statuses, _ = burst(running.url, 5)
        assert set(statuses) == {200}


def test_memory_task_ends_at_the_request_that_would_pass_its_heap_cap():
    # 256 MiB less the 48 MiB reserve leaves a 208 MiB heap: three 64 MiB requests fit, a fourth does not.
    events = []
    spec = ClusterSpec(archetype="memory", command=None, params={"mib_per_request": 64, "hold_ms": 1500},
                       tasks=1, cpu_units=256, memory_mib=256)
    with LocalCluster(spec, on_event=lambda kind, **detail: events.append((kind, detail))) as running:
        assert running.ground_truth()["capacity_rps_per_task"] == pytest.approx(3 / 1.5)
        fits, _ = burst(running.url, 3)
        assert set(fits) == {200}
        assert gauges(running.task_views()[0].url)["request_memory_mib"] == 0
        overflow, _ = burst(running.url, 4, return_exceptions=True)
        deadline = time.monotonic() + 20
        while not any(kind == "task_crash" for kind, _ in events) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert overflow.count(200) < 4, overflow
    crash = next(detail for kind, detail in events if kind == "task_crash")
    assert crash["reason"].startswith("out of memory: requests in flight would pass its 208 MiB heap cap"), crash


def test_shared_downstream_limits_the_whole_service():
    with cluster("shared", tasks=2, downstream_capacity=2, downstream_ms=200) as running:
        statuses, seconds = burst(running.url, 8)  # 8 calls, 2 at a time: four rounds, whatever the tasks
        truth = running.ground_truth()
    assert set(statuses) == {200}
    assert 0.75 <= seconds < 2.5, seconds
    assert truth["capacity_rps_service"] == pytest.approx(10.0)
    assert truth["expected_verdict"] == "no_task_level_metric"


def test_a_full_queue_refuses_new_jobs():
    # one consumer busy for a second per job, room for 5 waiting jobs: of 12 at once about 6 fit
    with cluster("queue", jobs_at_once=1, job_ms=1000, max_backlog=5) as running:
        statuses, _ = burst(running.url, 12)
        backlog = running.metric_source()
        rows = backlog.sample()
    assert 5 <= statuses.count(202) <= 7 and statuses.count(503) == 12 - statuses.count(202), statuses
    depth = [row["value"] for row in rows if row["metric"] == "queue_backlog"]
    assert depth and 4 <= depth[0] <= 5, rows

