"""The typed contract between the two halves: each model reads and writes itself, refuses what
it cannot read with one line, and holds its defaults and ranges once for both halves."""

from __future__ import annotations

import json

import pytest

from scalefinder.analysis.command import analyze
from scalefinder.analysis.findings import load_findings
from scalefinder.core.errors import InputError, RunDirectoryError
from scalefinder.core.models import (
    FINDINGS_SCHEMA_VERSION,
    RUN_KIND,
    RUN_SCHEMA_VERSION,
    AnalysisOptions,
    Findings,
    GateCriteria,
    ModelError,
    Recommendation,
    RunManifest,
    Slo,
    StepRow,
    TestResult,
    TestVerdict,
    Verdict,
)
from scalefinder.core.rundir import STEP_COLUMNS, RunDirectory
from scalefinder.core.slo import step_met
from tests.synthetic import write_synthetic_run


@pytest.fixture(scope="module")
def analyzed_run(tmp_path_factory):
    run = write_synthetic_run(tmp_path_factory.mktemp("models") / "run", "cpu", seed=3)
    analyze(run)
    return run


def manifest(**entries) -> RunManifest:
    return RunManifest.from_dict({"kind": RUN_KIND, "schema_version": RUN_SCHEMA_VERSION, **entries})


# -- findings ------------------------------------------------------------------------------------
def test_findings_read_back_into_the_model_and_write_the_same_file(analyzed_run):
    data = load_findings(analyzed_run)
    findings = Findings.from_dict(data)
    assert findings.verdict is Verdict.RECOMMENDED
    assert isinstance(findings.recommendation, Recommendation) and findings.recommendation.metric == "cpu_utilization"
    assert json.loads(json.dumps(findings.to_dict())) == data


@pytest.mark.parametrize("change, message", [
    ({"schema_version": FINDINGS_SCHEMA_VERSION + 1}, "was written by a newer scalefinder"),
    ({"verdict": "probably"}, "unknown verdict 'probably'"),
    ({"kind": "something-else"}, "is not a scalefinder findings file"),
])
def test_findings_the_model_cannot_read_are_refused_with_one_line(analyzed_run, change, message):
    data = {**load_findings(analyzed_run), **change}
    with pytest.raises(RunDirectoryError, match=message):
        Findings.from_dict(data, source="f.json")


@pytest.mark.parametrize("change, message", [
    ({"metrics": "cpu_utilization"}, "metrics is not a list"),
    ({"metrics": [1, 2]}, "an entry of metrics is not an object with a name"),
    ({"capacity": []}, "capacity is not an object"),
    ({"recommendation": "cpu"}, "recommendation is not an object or null"),
    ({"steps": [None]}, "an entry of steps is not an object"),
])
def test_findings_of_the_wrong_shape_are_refused_once_for_every_reader(analyzed_run, change, message):
    """A findings file whose metrics was a string once passed the gate while the report crashed."""
    with pytest.raises(RunDirectoryError, match=f"f.json is damaged: {message}"):
        Findings.from_dict({**load_findings(analyzed_run), **change}, source="f.json")


def test_a_recommendation_of_the_wrong_shape_is_refused(analyzed_run):
    data = load_findings(analyzed_run)
    broken = {**data, "recommendation": {**data["recommendation"], "target": "70%"}}
    with pytest.raises(RunDirectoryError, match="recommendation.target is not a number"):
        Findings.from_dict(broken)


def test_findings_lacking_a_key_name_it():
    with pytest.raises(RunDirectoryError, match="lacks capacity, pattern, metrics"):
        Findings.from_dict({"schema_version": 1, "verdict": "inconclusive", "recommendation": None})


def test_a_test_result_round_trips_and_its_verdict_is_the_enum():
    result = TestResult("saturation", "hinge", {"steps": 6}, 0.5, 0.01, (1.0, 2.0), "p < 0.05", TestVerdict.PASS,
                        "flattened")
    stored = json.loads(json.dumps(result.as_dict()))
    assert stored["verdict"] == "pass"
    assert TestResult.from_dict(stored) == result
    # a bound that was not finite is stored as null and read back as None
    open_ended = {**stored, "interval": [1.0, None]}
    assert TestResult.from_dict(open_ended).interval == (1.0, None)


# -- the manifest --------------------------------------------------------------------------------
def test_the_manifest_model_types_what_readers_need(analyzed_run):
    run = RunDirectory.open(analyzed_run)
    recorded = json.loads((analyzed_run / "manifest.json").read_text())
    assert run.manifest.run_id == recorded["run_id"] and run.manifest.status == "complete"
    assert run.manifest.slo == Slo(**recorded["slo"])
    assert run.manifest.initial_tasks == 2 and run.manifest.analysis_options == AnalysisOptions()
    assert run.manifest.to_dict() == recorded


def test_an_older_manifest_with_the_slo_only_in_its_profile_is_read():
    """Runs recorded before the manifest held its own slo entry kept it in the profile."""
    older = manifest(profile={"slo": {"percentile": 99, "latency_ms": 300}})
    assert older.slo == Slo(percentile=99.0, latency_ms=300.0, error_budget_pct=1.0)


def test_a_manifest_without_a_usable_slo_is_read_and_the_analysis_says_why_it_cannot_go_on(tmp_path):
    assert manifest(slo={"percentile": 95}).slo is None
    run = write_synthetic_run(tmp_path / "run", "cpu")
    data = json.loads((run / "manifest.json").read_text())
    data["slo"] = {"percentile": 95}
    data["profile"].pop("slo", None)
    (run / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(RunDirectoryError, match="no SLO"):
        analyze(run)


def test_a_manifest_from_a_newer_version_or_of_another_kind_is_refused():
    with pytest.raises(RunDirectoryError, match="newer scalefinder"):
        manifest(schema_version=RUN_SCHEMA_VERSION + 1)
    with pytest.raises(RunDirectoryError, match="not a scalefinder run manifest"):
        RunManifest.from_dict({"kind": "other", "schema_version": 1})


# -- one rule, one range -------------------------------------------------------------------------
def test_a_step_row_is_the_step_table_and_judges_with_the_shared_rule():
    assert StepRow.columns() == STEP_COLUMNS
    slo = Slo(percentile=95, latency_ms=200)
    row = StepRow(step_id=0, phase="ramp", tasks=2, offered_rps=10, start_unix_s=0, end_unix_s=20, warmup_s=4,
                  achieved_rps=10, sent=100, completed=100, failures=1, dropped=1, late=0, p50_ms=50, p90_ms=90,
                  p95_ms=150, p99_ms=300, max_ms=400, mean_ms=60, error_kinds="{}", generator_cpu_pct=5,
                  valid=True, invalid_reason=None, slo_met=True, end_reason="held", slo_latency_ms=150)
    assert row.error_pct == pytest.approx(100 * 2 / 101)
    assert row.judged(slo) is step_met(150, 1, 1, 100, slo) is False  # 1.98% errors > the 1% budget


@pytest.mark.parametrize("values, key", [
    ({"headroom": 0.9}, "headroom"),
    ({"availability_zones": 0}, "availability_zones"),
    ({"peak_rps": -1}, "peak_rps"),
])
def test_analysis_options_outside_their_range_name_the_key(values, key):
    with pytest.raises(ModelError) as raised:
        AnalysisOptions(**values)
    assert raised.value.key == key and key in str(raised.value)


def test_analysis_options_from_a_profile_table_take_the_defaults_for_what_is_absent():
    assert AnalysisOptions.from_mapping({"peak_rps": 300, "availability_zones": 2.0}) == \
        AnalysisOptions(headroom=0.7, availability_zones=2, peak_rps=300)
    assert AnalysisOptions().overridden(headroom=0.6, peak_rps=None).headroom == 0.6


@pytest.mark.parametrize("values", [{"slo_rate_rps": 0}, {"capacity_tolerance_pct": 100},
                                    {"target_tolerance_pct": -1}, {"metric_unchanged": "yes"}])
def test_gate_criteria_outside_their_range_are_refused(values):
    with pytest.raises(ModelError):
        GateCriteria(**values)


def test_gate_criteria_from_a_table_refuse_unknown_keys_and_flags_win():
    with pytest.raises(InputError, match="unknown key"):
        GateCriteria.from_mapping({"slo_rate": 5})
    table = GateCriteria.from_mapping({"slo_rate_rps": 40, "target_tolerance_pct": 10})
    merged = table.merged(GateCriteria(target_tolerance_pct=20))
    assert merged == GateCriteria(slo_rate_rps=40, target_tolerance_pct=20)
    assert merged.to_dict() == {"slo_rate_rps": 40, "target_tolerance_pct": 20}
