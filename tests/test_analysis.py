"""The analyzer end to end on synthetic run directories whose answer is known."""

import json

import pytest
from click.testing import CliRunner

from scalefinder.analysis.command import analyze
from scalefinder.analysis.findings import load_findings
from scalefinder.analysis.policy import PolicyShapeError, validate
from scalefinder.cli import cli
from scalefinder.core.errors import RunDirectoryError
from tests.synthetic import write_synthetic_run

EXPECTED = {
    # kind: (verdict, metric, pattern)
    "cpu": ("recommended", "cpu_utilization", "cpu_bound"),
    "memory": ("recommended", "memory_utilization", "memory_bound"),
    "retaining": ("recommended", "cpu_utilization", "memory_not_freed"),
    "jvm": ("recommended", "cpu_utilization", "gc_runtime"),
    "workers": ("recommended", "concurrency_per_task", "worker_based"),
    "shared": ("no_task_level_metric", None, "shared_bottleneck"),
    "queue": ("recommended", "queue_backlog_per_task", "job_processor"),
}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    cache = {}

    def get(kind, **options):
        key = (kind, tuple(sorted(options.items())))
        if key not in cache:
            path = tmp_path_factory.mktemp(kind)
            write_synthetic_run(path / "run", kind, **options)
            cache[key] = analyze(path / "run", peak_rps=1000)
        return cache[key]

    return get


def _metric(findings, name):
    return next(m for m in findings["metrics"] if m["name"] == name)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_expected_answer_per_archetype(analysed, kind):
    findings = analysed(kind)
    verdict, metric, pattern = EXPECTED[kind]
    assert findings["verdict"] == verdict, findings["headline"]
    assert findings["pattern"]["name"] == pattern
    assert findings["capacity"]["per_task_rps"] == pytest.approx(25.0, rel=0.15)
    if metric:
        assert findings["recommendation"]["metric"] == metric
        assert _metric(findings, metric)["verdict"] == "recommended"
    else:
        assert findings["recommendation"] is None
        assert findings["capacity"]["doubling"]["verdict"] == "does_not_scale"
        assert any("did not grow" in line or "shared" in line for line in findings["pattern"]["evidence"])


def test_memory_rejected_for_the_right_reason(analysed):
    retaining = _metric(analysed("retaining"), "memory_utilization")
    assert retaining["verdict"] == "rejected"
    assert any("follows time" in reason for reason in retaining["reasons"])
    jvm = _metric(analysed("jvm"), "memory_utilization")
    assert jvm["verdict"] == "rejected"
    assert any("flat near the limit" in reason for reason in jvm["reasons"])


def test_cpu_recommendation_target_policies_and_sizing(analysed):
    findings = analysed("cpu")
    rec = findings["recommendation"]
    # CPU = 4 + 84 * load: at 0.7 of capacity the fitted line gives about 62.8%.
    assert rec["target"] == pytest.approx(62.8, abs=2.0)
    low, high = rec["target_interval"]
    assert low <= rec["target"] <= high
    assert rec["target"] * 1.1 < rec["saturation_value"]
    assert rec["aws_metric"]["predefined"] == "ECSServiceAverageCPUUtilization"
    tracking = rec["policies"]["target_tracking"]
    assert tracking["api_request"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == rec["target"]
    assert "put-scaling-policy" in tracking["aws_cli"]
    assert "AWS::ApplicationAutoScaling::ScalingPolicy" in tracking["cloudformation"]
    assert 'resource "aws_appautoscaling_policy"' in tracking["terraform"]
    step = rec["policies"]["step_scaling"]["api_request"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    assert step[0]["MetricIntervalLowerBound"] == 0 and "MetricIntervalUpperBound" not in step[-1]
    sizing = findings["capacity"]["tasks_for_peak"]
    assert sizing["availability_zones"] == 3 and sizing["tasks"] >= 1000 / 25.0 * 1.5
    for test in _metric(findings, "cpu_utilization")["tests"]:
        assert {"name", "method", "inputs", "statistic", "threshold", "verdict"} <= set(test)


def test_worker_recommendation_uses_metric_math(analysed):
    rec = analysed("workers")["recommendation"]
    assert "customized" in rec["aws_metric"]
    queries = rec["policies"]["target_tracking"]["api_request"]["TargetTrackingScalingPolicyConfiguration"][
        "CustomizedMetricSpecification"]["Metrics"]
    assert sum(q["ReturnData"] for q in queries) == 1


def test_job_processor_target_is_capacity_times_latency_times_headroom(analysed):
    findings = analysed("queue")
    rec = findings["recommendation"]
    per_task = findings["capacity"]["per_task_rps"]
    assert rec["target"] == pytest.approx(round(per_task * 0.250 * 0.7, 2))  # SLO 250 ms, headroom 0.7
    assert "capacity per task x acceptable latency x headroom" in rec["method"]
    growth = next(t for t in _metric(findings, "queue_backlog_per_task")["tests"] if t["name"] == "backlog_growth")
    assert growth["verdict"] == "pass"
    assert growth["extra"]["onset_per_task_rps"] == pytest.approx(25.0, rel=0.10)
    # the capacity is the last rate with the queue empty, bracketed by the rate it overflows from
    # (the synthetic queue's requests keep meeting the SLO for a while past it)
    assert findings["capacity"]["per_task_rps_interval"][1] == growth["extra"]["onset_per_task_rps"]
    slo_capacity = findings["knee"]["last_good_rps"] / findings["capacity"]["tasks"]
    assert per_task < growth["extra"]["onset_per_task_rps"] <= slo_capacity
    assert "queue overflows" in findings["capacity"]["method"]
    math = rec["policies"]["target_tracking"]["api_request"]["TargetTrackingScalingPolicyConfiguration"]
    expression = math["CustomizedMetricSpecification"]["Metrics"]
    assert any(m.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "ApproximateNumberOfMessagesVisible"
               for m in expression)
    assert math["TargetValue"] == rec["target"]
    validate("application-autoscaling", "PutScalingPolicy", rec["policies"]["target_tracking"]["api_request"])


@pytest.mark.parametrize("shape", ["flat", "growing"])
def test_a_backlog_that_does_not_saturate_is_not_recommended(analysed, shape):
    findings = analysed("queue", backlog=shape)
    growth = next(t for t in _metric(findings, "queue_backlog_per_task")["tests"] if t["name"] == "backlog_growth")
    assert growth["verdict"] == "fail"
    assert findings["pattern"]["name"] != "job_processor"
    assert (findings["recommendation"] or {}).get("metric") not in ("queue_backlog", "queue_backlog_per_task")


def test_too_few_steps_is_inconclusive(analysed):
    findings = analysed("cpu", steps=(0.3, 0.6, 0.9, 1.1), refine=False)
    assert findings["verdict"] == "inconclusive"
    assert findings["recommendation"] is None
    assert any("below saturation" in r for r in findings["inconclusive"]["reasons"])
    assert findings["inconclusive"]["next_steps"]


def test_one_task_count_is_inconclusive(analysed):
    findings = analysed("cpu", replay=False, beyond=False)
    assert findings["verdict"] == "inconclusive"
    assert any("one task count" in r for r in findings["inconclusive"]["reasons"])


def test_generator_bound_run_is_inconclusive(analysed):
    findings = analysed("cpu", generator_bound_from=0.45)
    assert findings["verdict"] == "inconclusive"
    assert any("load generator" in r for r in findings["inconclusive"]["reasons"])


def test_missing_metrics_is_inconclusive(analysed):
    findings = analysed("cpu", metrics=("running_task_count",))
    assert findings["verdict"] == "inconclusive"
    assert any("no utilization metric" in r for r in findings["inconclusive"]["reasons"])


def test_partial_run_gives_no_made_up_recommendation(analysed):
    findings = analysed("cpu", partial=True)
    assert findings["run"]["status"] == "running"
    assert findings["verdict"] == "inconclusive"
    assert findings["recommendation"] is None
    assert any("partial" in w for w in findings["warnings"])


def test_cli_writes_findings_and_prints_the_headline(tmp_path):
    run = write_synthetic_run(tmp_path / "run", "cpu", beyond=False)
    result = CliRunner().invoke(cli, ["analyze", str(run), "--headroom", "0.6", "--peak-rps", "500", "--azs", "2"])
    assert result.exit_code == 0, result.output
    assert "Scale on average CPU utilization" in result.output
    data = load_findings(run)
    assert data == load_findings(run / "findings.json")
    assert data["recommendation"]["headroom"] == 0.6
    assert data["capacity"]["tasks_for_peak"]["availability_zones"] == 2
    assert data["capacity"]["doubling"]["tested"] is False
    bad = CliRunner().invoke(cli, ["analyze", str(run), "--headroom", "0.95"])
    assert bad.exit_code == 2 and "headroom" in bad.output and "Traceback" not in bad.output


def test_bad_run_directories_give_one_clear_error(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["analyze", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a directory" in missing.output
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{not json")
    result = runner.invoke(cli, ["analyze", str(corrupt)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    newer = write_synthetic_run(tmp_path / "newer", "cpu", replay=False, beyond=False)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(cli, ["analyze", str(newer)])
    assert result.exit_code == 2 and "newer scalefinder" in result.output
    for outcome in (missing, result):
        assert "Traceback" not in outcome.output


def test_findings_reader_refuses_newer_and_damaged_files(tmp_path):
    path = tmp_path / "findings.json"
    path.write_text(json.dumps({"schema_version": 2, "kind": "scalefinder-findings"}))
    with pytest.raises(RunDirectoryError, match="newer scalefinder"):
        load_findings(path)
    path.write_text(json.dumps({"schema_version": 1, "kind": "scalefinder-findings", "verdict": "recommended"}))
    with pytest.raises(RunDirectoryError, match="lacks"):
        load_findings(tmp_path)
    with pytest.raises(RunDirectoryError, match="does not exist"):
        load_findings(tmp_path / "elsewhere")


def test_policy_validation_rejects_a_wrong_shape():
    with pytest.raises(PolicyShapeError, match="TargetValue"):
        validate("application-autoscaling", "PutScalingPolicy", {
            "PolicyName": "p", "ServiceNamespace": "ecs", "ResourceId": "service/c/s",
            "ScalableDimension": "ecs:service:DesiredCount", "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {"TargetValue": "sixty"}})


def test_metric_samples_skip_a_line_cut_by_a_hard_kill(tmp_path):
    from scalefinder.core.rundir import RunDirectory

    run = write_synthetic_run(tmp_path / "run", "cpu", replay=False, beyond=False)
    rows = RunDirectory.open(run).metric_samples()
    with open(run / "metrics.csv", "a", encoding="utf-8") as handle:
        handle.write("1795009999.0,local,cpu_utilization,task-1,4")  # cut short: no unit, no newline
    samples = RunDirectory.open(run).metric_samples()
    assert len(samples) == len(rows)
    assert str(samples["metric"].dtype) == "category" and samples["value"].dtype == float


def test_an_oom_kill_inside_a_running_task_counts_as_a_crash_at_the_memory_limit(tmp_path):
    # A pre-forking server: the kernel kills a worker at the memory limit and the master starts
    # another, so the task itself never crashes. Only the OOM-kill events say what happened.
    run = write_synthetic_run(tmp_path / "run", "memory", seed=3)
    events_path = run / "events.jsonl"
    kept = []
    for line in events_path.read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "task_crash":
            event = {**event, "kind": "oom_kill", "count": 1}
            event.pop("reason", None)
        elif event["kind"] == "task_restart":
            continue
        kept.append(json.dumps(event))
    events_path.write_text("\n".join(kept) + "\n")
    findings = analyze(run)
    assert findings["verdict"] == "recommended", findings["headline"]
    assert findings["recommendation"]["metric"] == "memory_utilization"
    memory = next(m for m in findings["metrics"] if m["name"] == "memory_utilization")
    crash = next(t for t in memory["tests"] if t["name"] == "crash_at_limit")
    assert crash["verdict"] == "pass" and "OOM-kill" in crash["method"]
