"""The CI gate on real analyses of synthetic runs: exit codes, JUnit test cases, the numbers."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from scalefinder.analysis.reporting.figures import RunFigures
from scalefinder.analysis.reporting.gate import FAIL, PASS, check_capacity
from scalefinder.cli import cli
from tests.synthetic import write_synthetic_run

METRICS = ("cpu_utilization", "memory_utilization", "concurrency_per_task", "requests_per_task", "running_task_count")


def gate(*args: str):
    return CliRunner().invoke(cli, ["gate", *map(str, args)])


def junit_cases(path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {case.get("name"): case for case in root.iter("testcase")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A baseline, an identical rerun, a run with 30% less capacity per task, a run whose
    bottleneck moved to a worker pool, and a run killed half way."""
    root = tmp_path_factory.mktemp("gate")
    baseline = write_synthetic_run(root / "baseline", "cpu", metrics=METRICS, seed=1)
    result = CliRunner().invoke(cli, ["analyze", str(baseline)])
    assert result.exit_code == 0, result.output
    same = root / "same"
    shutil.copytree(baseline, same)
    slower = write_synthetic_run(root / "slower", "cpu", metrics=METRICS, seed=2, capacity_per_task_rps=17.5)
    workers = write_synthetic_run(root / "workers", "workers", metrics=METRICS, seed=3)
    partial = write_synthetic_run(root / "partial", "cpu", metrics=METRICS, seed=4, partial=True)
    return {"baseline": baseline, "same": same, "slower": slower, "workers": workers, "partial": partial}


def test_identical_baseline_passes(runs, tmp_path):
    junit = tmp_path / "junit.xml"
    result = gate(runs["same"], "--baseline", runs["baseline"] / "findings.json", "--slo-rate-rps", 30,
                  "--junit", junit)
    assert result.exit_code == 0, result.output
    assert "Gate passed" in result.output
    cases = junit_cases(junit)
    assert set(cases) == {"slo_at_rate", "capacity_per_task", "recommended_metric", "target"}
    assert all(case.find("failure") is None and case.find("error") is None for case in cases.values())
    assert "+0.0%" in cases["capacity_per_task"].findtext("system-out")


def test_capacity_drop_fails_with_numbers(runs, tmp_path):
    junit = tmp_path / "ci" / "gate.xml"
    result = gate(runs["slower"], "--baseline", runs["baseline"], "--junit", junit)
    assert result.exit_code == 1, result.output
    cases = junit_cases(junit)
    failure = cases["capacity_per_task"].find("failure")
    assert failure is not None
    message = failure.get("message")
    assert "significant" in message and "tolerance -10%" in message
    # 17.5 against 25 req/s per task: a drop near 30%, reported as a signed percentage.
    drop = float(message.split("req/s: ")[1].split("%")[0])
    assert -40 < drop < -20
    assert cases["recommended_metric"].find("failure") is None
    failed = sum(case.find("failure") is not None for case in cases.values())
    assert ET.parse(junit).getroot().get("failures") == str(failed)


def test_changed_metric_fails(runs):
    result = gate(runs["workers"], "--baseline", runs["baseline"] / "findings.json")
    assert result.exit_code == 1, result.output
    cases = junit_cases(runs["workers"] / "junit.xml")
    failure = cases["recommended_metric"].find("failure")
    assert failure is not None
    before = json.loads((runs["baseline"] / "findings.json").read_text())["recommendation"]["metric"]
    after = json.loads((runs["workers"] / "findings.json").read_text())["recommendation"]["metric"]
    assert failure.get("message") == f"changed from {before} (baseline) to {after}"
    assert cases["target"].find("skipped") is not None


def test_missing_baseline_is_an_input_error(runs, tmp_path):
    result = gate(runs["same"], "--baseline", tmp_path / "nowhere" / "findings.json")
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_newer_baseline_schema_is_refused(runs, tmp_path):
    findings = json.loads((runs["baseline"] / "findings.json").read_text())
    findings["schema_version"] = 99
    newer = tmp_path / "findings.json"
    newer.write_text(json.dumps(findings))
    result = gate(runs["same"], "--baseline", newer, "--junit", tmp_path / "junit.xml")
    assert result.exit_code == 2
    assert "newer scalefinder" in result.output
    assert junit_cases(tmp_path / "junit.xml")["gate"].find("error") is not None


def test_partial_run_is_an_infrastructure_error(runs):
    result = gate(runs["partial"], "--slo-rate-rps", 10)
    assert result.exit_code == 3
    assert "partial run" in result.output
    cases = junit_cases(runs["partial"] / "junit.xml")
    assert cases["gate"].find("error") is not None


@pytest.mark.parametrize("flags", [
    ["--slo-rate-rps", "-5"],
    ["--capacity-tolerance-pct", "150", "--baseline", "BASELINE"],
    ["--capacity-tolerance-pct", "10"],
    ["--no-such-flag"],
    [],
])
def test_bad_or_missing_criteria_exit_2(runs, flags):
    flags = [str(runs["baseline"]) if f == "BASELINE" else f for f in flags]
    result = gate(runs["same"], *flags)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_profile_gate_table_is_used(runs, tmp_path):
    run = tmp_path / "with-gate"
    shutil.copytree(runs["same"], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["profile"]["gate"] = {"slo_rate_rps": 500}
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = gate(run)
    assert result.exit_code == 1, result.output
    failure = junit_cases(run / "junit.xml")["slo_at_rate"].find("failure")
    assert "required 500 req/s" in failure.get("message")
    assert gate(run, "--slo-rate-rps", 20).exit_code == 0


def _figures(per_task_rps: float, interval: tuple[float, float] | None) -> RunFigures:
    return RunFigures(
        run_id="r", profile_name="p", status="complete", started_utc=None, duration_s=None,
        verdict="recommended", headline="", metric="cpu_utilization", metric_label=None, target=50.0,
        target_interval=None, unit="percent", per_task_rps=per_task_rps, per_task_rps_interval=interval,
        service_rps=None, tasks=2, pattern=None, pattern_label=None, warnings=(),
    )


@pytest.mark.parametrize("current, interval, outcome", [
    (20.0, (19.5, 20.5), FAIL),   # 20% lower, tight intervals: significant and beyond 10%
    (20.0, (12.0, 33.0), PASS),   # 20% lower but the interval reaches past the bound: noise
    (23.5, (23.3, 23.7), PASS),   # significant but within the tolerance
    (26.0, (25.5, 26.5), PASS),   # faster
])
def test_capacity_rule_needs_size_and_significance(current, interval, outcome):
    baseline = _figures(25.0, (24.5, 25.5))
    assert check_capacity(_figures(current, interval), baseline, 10.0).outcome == outcome


@pytest.mark.parametrize("damage", [{"metrics": "cpu_utilization"}, {"capacity": "fast"},
                                    {"recommendation": ["cpu_utilization", 70]}])
def test_findings_that_do_not_validate_never_pass_the_gate(runs, tmp_path, damage):
    """Such a file once passed the gate with exit 0 while the report crashed on it."""
    run = tmp_path / "damaged"
    shutil.copytree(runs["baseline"], run)
    findings = json.loads((run / "findings.json").read_text())
    (run / "findings.json").write_text(json.dumps({**findings, **damage}))
    result = gate(run, "--slo-rate-rps", 10)
    assert result.exit_code == 2, result.output
    assert "is damaged" in result.output and "Traceback" not in result.output
    assert junit_cases(run / "junit.xml")["gate"].find("error") is not None
    report = CliRunner().invoke(cli, ["report", str(run)])
    assert report.exit_code == 2 and "is damaged" in report.output
