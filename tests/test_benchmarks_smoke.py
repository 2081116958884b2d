"""Each benchmark script in a tiny mode: they run, print their tables and write their raw outputs.

The figures themselves are published in docs/benchmarks/; here only that the scripts work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scalefinder.analysis.command import analyze
from benchmarks.accuracy import judge, setting_profile
from tests.synthetic import write_synthetic_run

REPO = Path(__file__).resolve().parents[1]


def _benchmark(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout_s)


def test_accuracy_judges_real_findings_against_the_manifest(tmp_path):
    for archetype in ("cpu", "shared"):
        run = tmp_path / archetype
        write_synthetic_run(run, archetype, seed=0)
        manifest = json.loads((run / "manifest.json").read_text())
        result = judge(archetype, manifest, analyze(run))
        assert result["metric_ok"], result
        assert result["capacity_ok"] and result["target_ok"], result


def test_accuracy_judge_reports_a_wrong_metric(tmp_path):
    run = tmp_path / "cpu"
    write_synthetic_run(run, "cpu", seed=0)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["target"]["ground_truth"]["expected_metric"] = "memory_utilization"
    assert judge("cpu", manifest, analyze(run))["metric_ok"] is False
    assert judge("cpu", manifest, None)["capacity_ok"] is False


def test_second_setting_scales_the_ramp_with_the_capacity():
    first, second = setting_profile("memory", 1), setting_profile("memory", 2)
    assert second["target"]["params"]["mib_per_request"] == 24
    # the 208 MiB heap cap holds floor(208 / 24) = 8 whole requests against floor(208 / 16) = 13:
    # the ramp scales with them
    assert abs(second["ramp"]["max_rps"] / first["ramp"]["max_rps"] - 8 / 13) < 0.01


@pytest.mark.processes
def test_accuracy_plan_only_checks_every_setting():
    done = _benchmark("-m", "benchmarks.accuracy", "--archetypes", "cpu,shared", "--plan-only")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("plan ok") == 4


@pytest.mark.load
def test_generator_fidelity_tiny(tmp_path):
    out = tmp_path / "fidelity.json"
    done = _benchmark("-m", "benchmarks.generator_fidelity", "--rates", "10", "--hold-s", "3", "--warmup-s", "1",
                      "--workers", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    for ladder in ("engine", "engine_workers", "plain_locust"):
        (step,) = result[ladder]
        # a light step on loopback: within the benchmark's own 2% sustained rule, with slack for a busy machine
        assert 0.9 <= step["achieved_share"] <= 1.15, (ladder, step)
    assert "max sustained rate, engine" in done.stdout


@pytest.mark.processes
def test_analysis_speed_tiny():
    done = _benchmark("benchmarks/analysis_speed.py", "--sizes", "0.02")
    assert done.returncode == 0, done.stderr
    assert "recommended cpu_utilization" in done.stdout


@pytest.mark.processes
def test_time_to_answer_reads_the_accuracy_runs(tmp_path):
    accuracy = tmp_path / "accuracy.jsonl"
    record = {"kind": "accuracy_run", "archetype": "cpu", "setting": 1, "repeat": 1, "run_wall_s": 127.0,
              "analyze_wall_s": 9.7, "finished_utc": "2026-11-29T19:28:36+00:00",
              "load_average_before": "1.54 2.76 4.18"}
    accuracy.write_text(json.dumps({"kind": "benchmark_start"}) + "\n" + json.dumps(record) + "\n")
    out = tmp_path / "time.json"
    done = _benchmark("-m", "benchmarks.time_to_answer", "--skip-demo", "--compare", "", "--accuracy",
                      str(accuracy), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["archetype_runs"][0]["run_wall_s"] == 127.0
    assert "cpu/s1/r1" in done.stdout


@pytest.mark.processes
def test_accuracy_table_from_a_file_judges_stability_and_prints_markdown(tmp_path):
    run = tmp_path / "cpu"
    write_synthetic_run(run, "cpu", seed=0)
    judged = judge("cpu", json.loads((run / "manifest.json").read_text()), analyze(run))
    common = {"kind": "accuracy_run", "archetype": "cpu", "setting": 1, "run_wall_s": 180.0,
              "load_average_before": "0.50 0.60 0.70"}
    right = {**common, **judged, "repeat": 1, "run_dir": str(run)}  # judged again from its files
    wrong = {**common, **judged, "repeat": 2, "run_dir": str(tmp_path / "gone"),
             "metric": "requests_per_task", "metric_ok": False}
    results = tmp_path / "accuracy.jsonl"
    results.write_text("".join(json.dumps(record) + "\n" for record in (right, wrong)))
    done = _benchmark("-m", "benchmarks.accuracy", "--table-from", str(results), "--markdown")
    assert done.returncode == 1, done.stderr  # a miss, and the setting is not stable
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| run | answer |") and len(lines) == 4
    assert "| `cpu` s1 #1 | `cpu_utilization` |" in lines[2] and "**miss** (stable)" in lines[2]
    assert "**miss** (metric, stable)" in lines[3]
