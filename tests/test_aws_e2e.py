"""End to end on the AWS path: profiles/ecs-emulated.toml against the ECS emulator, minute compressed.

The emulator (``scalefinder.loadgen.emulator``) plays AWS around the local cluster: its ECS agent
makes the cluster run as many tasks as moto's ECS service desires (and registers that many healthy
targets), and its publisher writes the cluster's own measurements into moto as Container Insights
(one datapoint per task a minute), ``AWS/ApplicationELB`` and ``AWS/SQS`` metrics. The profile is
the committed one with its durations compressed from CloudWatch's 60 s minute to 1 s
(``minute_s = 1``, which the source accepts only against a loopback endpoint), so the run reads
the metrics as it reads AWS's once-a-minute data. The run goes through `scalefinder run` with the
ECS controller and the CloudWatch source, and `scalefinder analyze` must reach the recommendation
that the same run gives when its metrics come straight from the local source.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from click.testing import CliRunner

from benchmarks.ecs_accuracy import compressed, local_copy
from benchmarks.experiments import read_profile, write_profile
from scalefinder.cli import cli
from scalefinder.core.rundir import RunDirectory
from scalefinder.loadgen.cluster import ClusterSpec
from scalefinder.loadgen.emulator import EcsEmulator
from scalefinder.loadgen.emulator.world import service_state
from scalefinder.loadgen.plan import step_change_slack_s

MINUTE_S = 1


@pytest.mark.load
def test_the_emulated_ecs_profile_runs_and_analyzes_like_the_local_path(tmp_path, monkeypatch):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    # the emulator's own default sizing, as `scalefinder cluster --emulate ecs --archetype cpu` starts it
    spec = ClusterSpec(archetype="cpu", command=None, params={"cpu_ms": 10}, tasks=2, cpu_units=256, memory_mib=256)
    run_dir = tmp_path / "aws-run"
    with EcsEmulator(spec, minute_s=MINUTE_S, keep_samples=True) as emulator:
        for name, value in emulator.environment().items():
            monkeypatch.setenv(name, value)
        # credentials the run must never write anywhere (moto accepts any)
        secrets = {"AWS_ACCESS_KEY_ID": "AKIASFE2EKEYID0002", "AWS_SECRET_ACCESS_KEY": "sfE2eSecret/0002+y"}
        for name, value in secrets.items():
            monkeypatch.setenv(name, value)
        found = service_state(endpoint_url=emulator.endpoint)
        profile = write_profile(compressed(read_profile("ecs-emulated"), emulator.url, MINUTE_S),
                                tmp_path / "ecs-emulated.toml")
        assert emulator.wait_for_data(timeout_s=20), emulator.errors  # the run's preflight looks for data
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["run", str(profile), "--yes", "--no-progress", "--out", str(run_dir)])
        elapsed = time.monotonic() - started
        after = service_state(endpoint_url=emulator.endpoint)
        samples = list(emulator.samples or [])
        errors = list(emulator.errors)
    tasks_seen = sorted({int(r["value"]) for r in samples if r["metric"] == "running_task_count"})
    assert result.exit_code == 0, result.output
    assert not errors, errors
    print(f"AWS-path run took {elapsed:.0f} s")

    # The ECS controller drove the local cluster from 2 to 4 tasks and back, and left moto as found.
    assert 4 in tasks_seen and 2 in tasks_seen
    assert after["desired"] == found["desired"]
    assert after["scalable"]["min"] == found["scalable"]["min"] and after["scalable"]["max"] == found["scalable"]["max"]
    assert not any((after["scalable"]["suspended"] or {}).values())

    run = RunDirectory.open(run_dir)
    assert run.status == "complete"
    described = run.manifest.sources["cloudwatch"]
    # one call for the whole run, after the preflight's own
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 1 + described["preflight"]["get_metric_data_calls"]
    assert described["service_datapoint"] == "per_task"  # the emulator writes one datapoint per task a minute
    # Holds end on the minute's boundaries, so every measured step holds the 6 whole minutes after
    # its warm-up that the analysis needs, however its start fell against the minutes.
    steps = run.steps()
    measured = steps[steps["phase"].isin(["ramp", "refine", "replay", "beyond"])
                     & steps["end_reason"].isin(["held", "steady", "slo_breach"])]
    assert len(measured) >= 5
    slack = step_change_slack_s(MINUTE_S)
    for start, end in zip(measured["start_unix_s"], measured["end_unix_s"]):
        whole = [k for k in range(math.ceil(start + MINUTE_S - slack), math.floor(end) + 1) if k + 1 <= end]
        assert len(whole) >= 6, (start, end)
    late = sorted(end - math.floor(end) for end in measured["end_unix_s"])
    assert late[len(late) // 2] < 0.25, late  # most end just after the boundary itself
    metrics = run.metrics()
    assert set(metrics["source"]) == {"cloudwatch"}
    assert {"cpu_utilization", "running_task_count", "requests_per_task"} <= set(metrics["metric"])
    assert {e["kind"] for e in run.events()} >= {"scale", "restore"}

    for written in run_dir.iterdir():
        text = written.read_text(encoding="utf-8")
        assert not any(value in text for value in secrets.values()), f"a credential leaked into {written.name}"

    local_dir = local_copy(run_dir, samples, tmp_path / "local-run")
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
        assert aws_pick["metric"] == "cpu_utilization"  # the archetype's metric
        assert aws_pick["target"] == pytest.approx(local_pick["target"], rel=0.15)
    verdicts = {name: {m["name"]: m["verdict"] for m in found["metrics"]} for name, found in findings.items()}
    assert verdicts["aws"]["cpu_utilization"] == verdicts["local"]["cpu_utilization"]
