"""A full ``scalefinder run`` + ``analyze`` through a real Prometheus server gives the local answer.

One run measures the same load with both sources (so no run-to-run noise blurs the comparison);
its run directory is then split in two, each keeping one source's metric rows, and each half is
analysed on its own.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scalefinder.loadgen.cluster.process import free_port
from tests.prometheus_server import PrometheusServer

PROFILE = """
name = "prometheus-run"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 256
[target.params]
cpu_ms = 10
[workload]
requests = [{{ name = "work", path = "/work" }}]
max_in_flight = 100
timeout_s = 5
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 3
step_factor = 1.6
hold_s = 7
min_hold_s = 7
warmup_s = 4
max_rps = 60
max_duration_s = 200
refine = false
replay_steps = 4
beyond = false
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
[sources.prometheus]
url = "{url}"
exporter_port = {exporter_port}
selector = 'job="scalefinder-exporter"'
step_s = 1
rate_window = "4s"               # four scrapes, and no longer than the warm-up
settle_s = 2
[sources.prometheus.queries]
ghost = "no_such_metric_at_all"  # a query of the profile's own without data costs its own metric only, with a warning
"""


def scalefinder(*args: str, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalefinder.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)


def keep_source(run: Path, source: str, destination: Path) -> Path:
    shutil.copytree(run, destination)
    with (run / "metrics.csv").open(newline="") as original:
        reader = csv.DictReader(original)
        rows = [row for row in reader if row["source"] == source]
        fields = reader.fieldnames
    with (destination / "metrics.csv").open("w", newline="") as kept:
        writer = csv.DictWriter(kept, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    assert rows, f"the run has no {source} rows"
    return destination


@pytest.mark.prometheus
@pytest.mark.load
def test_run_and_analysis_through_prometheus_match_the_local_source(tmp_path):
    exporter_port = free_port()
    with PrometheusServer(tmp_path, exporter_port) as server:
        profile = tmp_path / "profile.toml"
        profile.write_text(PROFILE.format(url=server.url, exporter_port=exporter_port))
        run = tmp_path / "run"
        result = scalefinder("run", str(profile), "--out", str(run), "--no-progress", timeout_s=300)
        assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    described = manifest["sources"]["prometheus"]
    assert described["rows"] > 0 and described["exporter"] == f"http://127.0.0.1:{exporter_port}"
    about_prometheus = [w for w in manifest["warnings"] if "prometheus" in w]
    assert len(about_prometheus) == 1 and "Prometheus has no data for ghost" in about_prometheus[0], about_prometheus
    assert described["resources"] == {"cpu_request_cores": None, "memory_request_bytes": None,
                                      "cpu_limit_cores": 0.25, "memory_limit_bytes": 256 * 2**20,
                                      "source": "kube-state-metrics via Prometheus"}

    halves = {source: keep_source(run, source, tmp_path / source) for source in ("local", "prometheus")}
    analyses = {source: subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "analyze", str(half)],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for source, half in halves.items()}  # both at once: each is mostly waiting on imports
    findings = {}
    for source, analysis in analyses.items():
        output, _ = analysis.communicate(timeout=120)
        assert analysis.returncode == 0, output
        findings[source] = json.loads((halves[source] / "findings.json").read_text())
    assert findings["prometheus"]["verdict"] == findings["local"]["verdict"]
    cpu = {source: next(m for m in found["metrics"] if m["name"] == "cpu_utilization")
           for source, found in findings.items()}
    local_steps = {v["step_id"]: v["value"] for v in cpu["local"]["step_values"]}
    settled = {step["step_id"] for step in findings["local"]["steps"] if step["valid"] and step["slo_met"]}
    for value in cpu["prometheus"]["step_values"]:
        if value["step_id"] not in settled:
            continue  # an overloaded step has no steady level for two samplings to agree on
        expected = local_steps[value["step_id"]]
        # three seconds of data a step: a few samples' jitter is worth a couple of points
        assert abs(value["value"] - expected) <= max(0.05 * expected, 2.5), (value, expected)
    if findings["local"]["verdict"] != "recommended":
        pytest.skip(f"both halves agree, but this machine was too busy for a conclusive run: "
                    f"{findings['local']['headline']}")
    local, prometheus = findings["local"]["recommendation"], findings["prometheus"]["recommendation"]
    assert prometheus["metric"] == local["metric"] == "cpu_utilization"
    assert findings["prometheus"]["bottleneck"]["metric"] == findings["local"]["bottleneck"]["metric"]
    assert abs(prometheus["aws_target_value"] - local["aws_target_value"]) <= 0.05 * local["aws_target_value"]
