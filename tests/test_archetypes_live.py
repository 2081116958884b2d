"""The archetypes not covered by the load tests, each started for real and checked for its pattern."""

import asyncio
import time
import urllib.request

import aiohttp
import pytest

from loadgen.cluster import ClusterSpec, LocalCluster
from loadgen.sources.local import parse_gauges

pytestmark = pytest.mark.load


def cluster(archetype, tasks=1, **params):
    return LocalCluster(ClusterSpec(archetype=archetype, command=None, params=params, tasks=tasks,
                                    cpu_units=256, memory_mib=256))


def burst(url, count):
    """``count`` concurrent requests; returns (statuses, seconds for all)."""
    async def run():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async def one():
                async with session.get(url + "/work") as reply:
                    await reply.read()
                    return reply.status
            started = time.monotonic()
            statuses = await asyncio.gather(*[one() for _ in range(count)])
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

