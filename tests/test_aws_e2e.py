"""End to end on the AWS path: the local cluster plays an ECS service whose world lives in moto.

Two helper threads stand in for AWS: an "ECS agent" makes the local cluster follow the desired
count the ECS controller sets in moto (and registers that many healthy targets), and an
"Container Insights agent" publishes the cluster's own measurements into moto as
``ECS/ContainerInsights`` and ``AWS/ApplicationELB`` metrics, one service datapoint a second: the
profile compresses CloudWatch's minute to one second (``minute_s = 1``, which the source accepts
only against a loopback endpoint), so the run reads them as it reads AWS's once-a-minute data. The run
itself goes through `scalefinder run` with the ECS controller and the CloudWatch source against a
127.0.0.1 URL target, and `scalefinder analyze` must reach the recommendation that the same run
gives when its metrics come straight from the local source.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from scalefinder.cli import cli
from scalefinder.core.rundir import METRIC_COLUMNS, RunDirectory, write_json_atomic
from tests.moto_server import CLUSTER, SERVICE, client, register_targets, seed_world, service_state

CPU_UNITS = 256
MEMORY_MIB = 256


class EcsAgent:
    """Makes the local cluster run as many tasks as moto's ECS service desires."""

    def __init__(self, cluster: LocalCluster, target_group_arn: str):
        self.cluster = cluster
        self.arn = target_group_arn
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="ecs-agent", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=60)

    def _follow(self):
        ecs = client("ecs")
        while not self._stop.wait(0.2):
            try:
                desired = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["desiredCount"]
                if desired != len(self.cluster.running_tasks()):
                    self.cluster.scale_to(desired, timeout_s=60)
                register_targets(self.arn, desired)
            except Exception as exc:  # surfaced by the test
                self.errors.append(exc)
                return


class InsightsAgent:
    """Publishes the local source's service rows into moto the way Container Insights and the ALB would."""

    def __init__(self, cluster: LocalCluster, world):
        self.source = cluster.metric_source(interval_s=1.0)
        self.world = world
        self.rows: list[dict] = []
        self.errors: list[BaseException] = []
        self.published = threading.Event()
        self._cloudwatch = client("cloudwatch")
        self._storage_bytes = {"StorageReadBytes": 0.0, "StorageWriteBytes": 0.0}  # cumulative, as ECS writes them

    def __enter__(self):
        self.source.start(self._publish)
        return self

    def __exit__(self, *_):
        self.source.stop()

    def _publish(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        service = {r["metric"]: r["value"] for r in rows if r["task"] == ""}
        running = service.get("running_task_count")
        if not running:
            return
        stamp = rows[0]["time_unix_s"] - 0.5  # the row describes the second that ends at its time
        insights = {"RunningTaskCount": running}
        if "cpu_utilization" in service:
            insights.update(CpuUtilized=service["cpu_utilization"] / 100 * CPU_UNITS * running,
                            CpuReserved=CPU_UNITS * running)
        if "memory_utilization" in service:
            insights.update(MemoryUtilized=service["memory_utilization"] / 100 * MEMORY_MIB * running,
                            MemoryReserved=MEMORY_MIB * running)
        for ours, theirs in (("network_rx_bytes_per_s", "NetworkRxBytes"), ("network_tx_bytes_per_s", "NetworkTxBytes")):
            if ours in service:
                insights[theirs] = service[ours] * running  # one-second periods: per second == per period
        for ours, theirs in (("storage_read_bytes_per_s", "StorageReadBytes"),
                             ("storage_write_bytes_per_s", "StorageWriteBytes")):
            if ours in service:
                # a counter since the task started: the service total of the tasks' counters
                self._storage_bytes[theirs] += service[ours] * running
                insights[theirs] = self._storage_bytes[theirs]
        dims = [{"Name": "ClusterName", "Value": CLUSTER}, {"Name": "ServiceName", "Value": SERVICE}]
        data = [{"MetricName": k, "Dimensions": dims, "Timestamp": stamp, "Value": float(v), "StorageResolution": 1}
                for k, v in insights.items()]
        data += self._balancer(service, running, stamp)
        try:
            self._cloudwatch.put_metric_data(Namespace="ECS/ContainerInsights", MetricData=data[:len(insights)])
            if data[len(insights):]:
                self._cloudwatch.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data[len(insights):])
            self.published.set()
        except Exception as exc:  # surfaced by the test
            self.errors.append(exc)

    def _balancer(self, service: dict, running: float, stamp: float) -> list[dict]:
        group = [{"Name": "TargetGroup", "Value": self.world.target_group_dimension}]
        balancer = [{"Name": "LoadBalancer", "Value": self.world.load_balancer_dimension}]
        values = []
        if "requests_per_task" in service:
            values.append(("RequestCountPerTarget", group, service["requests_per_task"]))
        if "concurrency_per_task" in service:
            values.append(("ActiveConnectionCount", balancer, service["concurrency_per_task"] * running))
        if "target_response_time_ms" in service:
            values.append(("TargetResponseTime", balancer + group, service["target_response_time_ms"] / 1000))
        if "http_5xx_per_s" in service:
            values.append(("HTTPCode_Target_5XX_Count", balancer + group, service["http_5xx_per_s"] * running))
        return [{"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": float(value),
                 "StorageResolution": 1} for name, dims, value in values]


PROFILE = """
name = "ecs-e2e"
description = "The CPU archetype as an ECS service in moto, measured through CloudWatch"

[target]
kind = "url"
url = "{url}"
environment = "staging"
allowed_hosts = ["127.0.0.1"]

[workload]
requests = [{{ name = "work", method = "GET", path = "/work", weight = 1 }}]
max_in_flight = 200
timeout_s = 5

[slo]
percentile = 95
latency_ms = 250
error_budget_pct = 1.0

[ramp]
start_rps = 6
step_rps = 6
hold_s = 5
min_hold_s = 5
warmup_s = 1.5
max_rps = 90
max_duration_s = 300
refine = false
replay_steps = 4
beyond = false
scale_timeout_s = 90

[capacity]
controller = "ecs"
tasks = 2

[capacity.ecs]
cluster = "{cluster}"
service = "{service}"
poll_s = 0.25

[sources.cloudwatch]
cluster = "{cluster}"
service = "{service}"
period_s = 1
minute_s = 1
settle_s = 3

[analysis]
headroom = 0.7
availability_zones = 3
"""


def _local_copy(run_dir: Path, local_rows: list[dict], destination: Path) -> Path:
    """The same run with the local source's measurements in place of CloudWatch's."""
    shutil.copytree(run_dir, destination)
    for name in ("findings.json",):
        (destination / name).unlink(missing_ok=True)
    pd.DataFrame(local_rows, columns=METRIC_COLUMNS).to_csv(destination / "metrics.csv", index=False)
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["sources"] = {"local": {"kind": "local", "interval_s": 1.0}}
    write_json_atomic(destination / "manifest.json", manifest)
    return destination


@pytest.mark.load
def test_run_and_analyze_through_moto_match_the_local_path(aws, tmp_path, monkeypatch):
    secrets = {"AWS_ACCESS_KEY_ID": "AKIASFE2EKEYID0002", "AWS_SECRET_ACCESS_KEY": "sfE2eSecret/0002+y"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    world = seed_world(desired=2, min_capacity=1, max_capacity=3)
    found = service_state()
    spec = ClusterSpec(archetype="cpu", command=None, params={"cpu_ms": 10}, tasks=2, cpu_units=CPU_UNITS,
                       memory_mib=MEMORY_MIB)
    run_dir = tmp_path / "aws-run"
    with LocalCluster(spec) as cluster:
        profile = tmp_path / "ecs-e2e.toml"
        profile.write_text(PROFILE.format(url=cluster.url, cluster=CLUSTER, service=SERVICE))
        with EcsAgent(cluster, world.target_group_arn) as agent, InsightsAgent(cluster, world) as insights:
            assert insights.published.wait(timeout=20), insights.errors  # the run's preflight looks for data
            started = time.monotonic()
            result = CliRunner().invoke(cli, ["run", str(profile), "--yes", "--no-progress", "--out", str(run_dir)])
            elapsed = time.monotonic() - started
        tasks_seen = sorted({int(r["value"]) for r in insights.rows if r["metric"] == "running_task_count"})
    assert result.exit_code == 0, result.output
    assert not agent.errors and not insights.errors, (agent.errors, insights.errors)
    print(f"AWS-path run took {elapsed:.0f} s")

    # The ECS controller drove the local cluster from 2 to 4 tasks and back, and left moto as found.
    assert 4 in tasks_seen and 2 in tasks_seen
    after = service_state()
    assert after["desired"] == found["desired"]
    assert after["scalable"]["min"] == found["scalable"]["min"] and after["scalable"]["max"] == found["scalable"]["max"]
    assert not any((after["scalable"]["suspended"] or {}).values())

    run = RunDirectory.open(run_dir)
    assert run.status == "complete"
    described = run.manifest.sources["cloudwatch"]
    # one call for the whole run, after the preflight's own
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 1 + described["preflight"]["get_metric_data_calls"]
    assert described["service_datapoint"] == "total"  # the agent writes one service total a (compressed) minute
    metrics = run.metrics()
    assert set(metrics["source"]) == {"cloudwatch"}
    assert {"cpu_utilization", "running_task_count", "requests_per_task"} <= set(metrics["metric"])
    assert {e["kind"] for e in run.events()} >= {"scale", "restore"}

    for written in run_dir.iterdir():
        text = written.read_text(encoding="utf-8")
        assert not any(value in text for value in secrets.values()), f"a credential leaked into {written.name}"

    local_dir = _local_copy(run_dir, insights.rows, tmp_path / "local-run")
    findings = {}
    for name, path in (("aws", run_dir), ("local", local_dir)):
        analyzed = CliRunner().invoke(cli, ["analyze", str(path)])
        assert analyzed.exit_code == 0, analyzed.output
        findings[name] = json.loads((path / "findings.json").read_text())
        print(name, findings[name]["headline"])
    # Same run, two measurement paths: the conclusions must agree, whatever this busy machine allowed.
    assert findings["aws"]["verdict"] == findings["local"]["verdict"]
    aws_pick, local_pick = findings["aws"]["recommendation"], findings["local"]["recommendation"]
    assert (aws_pick or {}).get("metric") == (local_pick or {}).get("metric")
    if aws_pick:
        assert aws_pick["target"] == pytest.approx(local_pick["target"], rel=0.15)
    verdicts = {name: {m["name"]: m["verdict"] for m in found["metrics"]} for name, found in findings.items()}
    assert verdicts["aws"]["cpu_utilization"] == verdicts["local"]["cpu_utilization"]
