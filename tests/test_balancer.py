"""The load balancer: how it picks targets, and what it costs per request."""

import statistics
import time
import urllib.request

import pytest

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from scalefinder.loadgen.cluster.balancer import Balancer, Target


def balancer_with(policy, *in_flight):
    balancer = Balancer(policy, timeout_s=10)
    for number, count in enumerate(in_flight, 1):
        target = Target(f"task-{number}", f"http://127.0.0.1:{9000 + number}")
        target.in_flight = count
        balancer.targets[target.target_id] = target
    return balancer


def test_least_outstanding_picks_the_least_busy_target_and_spreads_ties():
    balancer = balancer_with("least_outstanding", 3, 1, 2)
    assert {balancer.choose().target_id for _ in range(6)} == {"task-2"}
    tied = balancer_with("least_outstanding", 0, 0, 0)
    assert {tied.choose().target_id for _ in range(6)} == {"task-1", "task-2", "task-3"}


def test_round_robin_ignores_load_and_draining_targets_get_nothing():
    balancer = balancer_with("round_robin", 5, 0, 0)
    balancer.targets["task-3"].state = "draining"
    picks = [balancer.choose().target_id for _ in range(6)]
    assert sorted(set(picks)) == ["task-1", "task-2"] and picks.count("task-1") == 3
    balancer.targets["task-1"].state = balancer.targets["task-2"].state = "draining"
    assert balancer.choose() is None


def test_in_flight_is_integrated_over_time():
    target = Target("task-1", "http://127.0.0.1:9001")
    before = target.report()["in_flight_area_s"]
    target.begin(100)
    target.begin(100)
    time.sleep(0.2)
    target.end(200, 200.0, 50)
    target.end(503, 200.0, 50)
    report = target.report()
    assert report["in_flight_area_s"] - before == pytest.approx(0.4, abs=0.08)
    assert report["requests_total"] == 2 and report["http_5xx_total"] == 1
    assert report["bytes_in_total"] == 200 and report["bytes_out_total"] == 100


def medians_ms(direct_url, balanced_url, rounds):
    """Median latency of each path, alternating so machine noise hits both alike."""
    times = {direct_url: [], balanced_url: []}
    for _ in range(rounds):
        for url in times:
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
            times[url].append((time.perf_counter() - started) * 1000)
    return statistics.median(times[direct_url]), statistics.median(times[balanced_url])


@pytest.mark.load
def test_balancer_adds_little_latency():
    spec = ClusterSpec(archetype="cpu", command=None, params={"cpu_ms": 1}, tasks=1, cpu_units=1024,
                       memory_mib=256)
    with LocalCluster(spec) as cluster:
        direct_url, balanced_url = cluster.task_views()[0].url + "/work", cluster.url + "/work"
        medians_ms(direct_url, balanced_url, 20)  # warm both paths
        direct, balanced = medians_ms(direct_url, balanced_url, 150)
    added = balanced - direct
    print(f"direct p50 {direct:.2f} ms, through the balancer {balanced:.2f} ms, added {added:.2f} ms")
    assert added < 10.0  # about 2 ms on a quiet machine; the bound leaves room for a busy one
