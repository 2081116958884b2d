"""The analyzer on real runs of the local cluster: the expected answer of method.md section 7.

Each test runs a shortened copy of an archetype's profile (short holds, a coarse ramp) through
``scalefinder run`` in a child process, loads only 127.0.0.1, and analyses the result. The
capacity must be within +-15% of the archetype's own ground truth in the manifest.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scalefinder.analysis.command import analyze
from scalefinder.analysis.findings import load_findings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.load


def _short_profile(tmp_path: Path, archetype: str, ramp: dict) -> Path:
    profile = tomllib.loads((ROOT / "profiles" / f"{archetype}.toml").read_text())
    profile["ramp"].update(ramp)
    path = tmp_path / f"{archetype}.toml"
    path.write_text(_toml(profile))
    return path


def _toml(data: dict, prefix: str = "") -> str:
    """Just enough TOML for a profile: scalars, lists of scalars or inline tables, nested tables."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}.{key}" if prefix else key
        text += f"\n[{name}]\n" + _toml(value, name)
    return text


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _run(tmp_path: Path, archetype: str, ramp: dict) -> dict:
    profile = _short_profile(tmp_path, archetype, ramp)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out", str(out),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return analyze(out)


def _truth(findings: dict) -> dict:
    return findings["run"]["target"]["ground_truth"]


def test_cpu_archetype_scales_on_cpu(demo_run):
    # The demo profile is the cpu archetype; its run is shared with the other demo tests.
    assert demo_run.returncode == 0, demo_run.stderr
    findings = load_findings(demo_run.path)
    assert findings["run"]["target"]["ground_truth"]["archetype"] == "cpu"
    assert findings["verdict"] == "recommended", findings["headline"]
    assert findings["recommendation"]["metric"] == "cpu_utilization"
    truth = _truth(findings)["capacity_rps_per_task"]
    assert findings["capacity"]["per_task_rps"] == pytest.approx(truth, rel=0.15)


def test_shared_archetype_has_no_task_level_metric(tmp_path):
    findings = _run(tmp_path, "shared", {"start_rps": 4, "step_rps": 7, "hold_s": 5, "min_hold_s": 4.5,
                                         "warmup_s": 1.5, "refine": False, "max_duration_s": 240})
    assert findings["verdict"] == "no_task_level_metric", findings["headline"]
    assert findings["capacity"]["doubling"]["verdict"] == "does_not_scale"
    assert findings["recommendation"] is None
