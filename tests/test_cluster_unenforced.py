"""Without cgroups the cluster says so, measures CPU from process trees and emulates the memory limit."""

import time

import pytest

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from tests.cluster_helpers import Collector, ConstantLoad

pytestmark = pytest.mark.load


def test_unenforced_mode_is_reported_and_a_task_over_its_memory_is_killed(monkeypatch):
    monkeypatch.setenv("SCALEFINDER_CGROUPS", "off")
    events = []
    spec = ClusterSpec(archetype="memory", command=None, params={"hold_ms": 1000, "reserve_mib": 0}, tasks=1,
                       cpu_units=256, memory_mib=160)
    with LocalCluster(spec, on_event=lambda kind, **detail: events.append((kind, detail))) as cluster:
        assert cluster.cgroup_mode == "unenforced"
        assert "NOT enforced" in cluster.cgroup_detail
        collector = Collector()
        source = cluster.metric_source(interval_s=1.0)
        source.start(collector)
        try:
            # 2 req/s x 1 s x 16 MiB = 32 MiB in flight: fits in 160 MiB
            with ConstantLoad(cluster.url, 2.0, duration_s=4):
                time.sleep(4)
            assert collector.values("cpu_utilization", "task-1"), "CPU comes from the process tree"
            assert max(collector.values("memory_used_mib", "task-1")) > 60
            assert not events or all(kind != "task_crash" for kind, _ in events)
            # 20 req/s x 16 MiB = 320 MiB wanted: over the limit within a second
            with ConstantLoad(cluster.url, 20.0, duration_s=3):
                time.sleep(3)
            deadline = time.monotonic() + 30
            while not any(kind == "task_restart" for kind, _ in events) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            source.stop()
        crash = next(detail for kind, detail in events if kind == "task_crash")
        assert "over its 160 MiB memory limit (emulated)" in crash["reason"]
        assert any(kind == "task_restart" for kind, _ in events)
