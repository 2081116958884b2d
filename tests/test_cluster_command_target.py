"""Any HTTP server command as the task; the local capacity controller and source built for a run."""

import sys
import time
import urllib.request

import pytest

from scalefinder.loadgen.capacity import local as local_capacity
from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.sources import local as local_source
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError

HTTP_SERVER = f"{sys.executable} -m http.server {{port}} --bind {{host}}"


@pytest.mark.processes
def test_a_custom_command_is_run_measured_and_scaled():
    spec = ClusterSpec(archetype=None, command=HTTP_SERVER, params={}, tasks=2, cpu_units=256,
                       memory_mib=256, health_path="/")
    events = []
    with LocalCluster(spec, on_event=lambda kind, **detail: events.append(kind)) as cluster:
        with urllib.request.urlopen(cluster.url + "/", timeout=5) as reply:
            assert reply.status == 200
        assert cluster.ground_truth()["bottleneck"] == "unknown"

        context = RunContext(profile=None, cluster=cluster)
        source = local_source.build(local_source.validate_config({"interval_s": 0.5}, "sources.local"), context)
        rows = []
        source.start(rows.extend)
        time.sleep(1.6)
        source.stop()
        tasks = {row["task"] for row in rows}
        assert tasks == {"", "task-1", "task-2"}
        count = [row["value"] for row in rows if row["metric"] == "running_task_count"]
        assert count and set(count) == {2}
        assert {"cpu_utilization", "memory_utilization", "requests_per_task"} <= {row["metric"] for row in rows}
        assert source.describe()["cgroup_mode"] == cluster.cgroup_mode

        controller = local_capacity.build(local_capacity.validate_config({}, "capacity.local"), context)
        snapshot = controller.snapshot()
        assert snapshot == {"kind": "local", "tasks": 2}
        controller.scale_to(3, timeout_s=30)
        assert controller.current() == 3 and cluster.running_tasks() == ["task-1", "task-2", "task-3"]
        controller.restore(snapshot)
        assert cluster.running_tasks() == ["task-1", "task-2"]
    assert events.count("task_start") == 3 and events.count("scale") == 2


@pytest.mark.processes
def test_a_command_that_dies_at_start_is_an_infrastructure_error():
    spec = ClusterSpec(archetype=None, command=f"{sys.executable} -c 'raise SystemExit(4)' {{port}}", params={},
                       tasks=1, cpu_units=256, memory_mib=256)
    with pytest.raises(InfrastructureError, match="exited with code 4 before it became healthy"):
        LocalCluster(spec).start()


def test_source_and_controller_configs_are_checked():
    with pytest.raises(ProfileError, match="interval_s"):
        local_source.validate_config({"interval_s": 0}, "sources.local")
    with pytest.raises(ProfileError, match=r"\[sources.local.rate\] unknown key; expected one of interval_s"):
        local_source.validate_config({"rate": 1}, "sources.local")
    with pytest.raises(ProfileError, match="timeout_s"):
        local_capacity.validate_config({"timeout_s": "soon"}, "capacity.local")
    with pytest.raises(InputError, match="needs a local target"):
        local_source.build({"interval_s": 1.0}, RunContext(profile=None))
    # Without a running cluster (restoring a dead run) the controller can only restore, and a
    # stopped local cluster has nothing left to restore; anything else is a clear error.
    detached = local_capacity.build({}, RunContext(profile=None))
    detached.restore({"kind": "local", "tasks": 2})
    with pytest.raises(InputError, match="not running"):
        detached.scale_to(3)
