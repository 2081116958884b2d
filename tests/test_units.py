"""A utilization metric in the wrong unit is named as such, never turned into a target."""

from __future__ import annotations

import numpy as np
import pytest

from scalefinder.analysis import policy, recommend
from scalefinder.analysis.command import analyze
from scalefinder.analysis.units import check_units, cpu_units_from_manifest
from scalefinder.core import catalog
from scalefinder.core.errors import InputError
from scalefinder.core.models import RUN_KIND, RUN_SCHEMA_VERSION, RunManifest
from tests.synthetic import write_synthetic_run

CPU = catalog.info(catalog.CPU_UTILIZATION)
MEMORY = catalog.info(catalog.MEMORY_UTILIZATION)


def ramp(low, high, n=10):
    return np.linspace(low, high, n)


def test_percent_in_range_is_fine():
    assert check_units(CPU.name, CPU, ramp(4, 96), cpu_units=1024) is None
    assert check_units(MEMORY.name, MEMORY, ramp(20, 99), cpu_units=None) is None


def test_an_overshoot_of_an_enforced_quota_is_noise():
    # step values of a real run on a 0.125-vCPU cgroup quota at saturation reached 105%
    assert check_units(CPU.name, CPU, [4.84, 51.7, 92.7, 101.4, 103.3, 105.04], cpu_units=128) is None
    assert check_units(CPU.name, CPU, ramp(10, 124), cpu_units=128) is None
    assert check_units(CPU.name, CPU, ramp(10, 130), cpu_units=128) is not None


def test_percent_of_one_vcpu_on_a_multi_vcpu_task():
    problem = check_units(CPU.name, CPU, ramp(20, 390), cpu_units=4096)
    assert "reported above its limit" in problem
    assert "percent of one vCPU on a task of 4 vCPUs" in problem
    assert "observed 20 to 390" in problem


def test_percent_of_one_vcpu_without_the_task_size():
    problem = check_units(CPU.name, CPU, ramp(30, 251), cpu_units=None)
    assert "percent of one vCPU on a task of at least 3 vCPUs" in problem and "251" in problem


def test_above_the_limit_on_a_task_whose_size_does_not_explain_it():
    problem = check_units(CPU.name, CPU, ramp(30, 251), cpu_units=256)
    assert "reported above its limit" in problem and "more than the task's 0.25 vCPU(s)" in problem


def test_a_fraction_instead_of_percent():
    problem = check_units(CPU.name, CPU, ramp(0.04, 0.93), cpu_units=1024)
    assert "looks like a fraction, not percent" in problem
    assert "observed 0.04 to 0.93" in problem
    assert check_units(MEMORY.name, MEMORY, ramp(0.2, 0.7), cpu_units=None) is not None


def test_a_flat_small_value_is_not_called_a_fraction():
    assert check_units(CPU.name, CPU, np.full(8, 0.5), cpu_units=1024) is None
    assert check_units(CPU.name, CPU, ramp(0.50, 0.52), cpu_units=1024) is None


def test_memory_above_its_limit():
    problem = check_units(MEMORY.name, MEMORY, ramp(50, 140), cpu_units=None)
    assert "above its limit" in problem and "vCPU" not in problem


def test_metrics_without_a_limit_are_not_checked():
    requests = catalog.info(catalog.REQUESTS_PER_TASK)
    assert check_units(requests.name, requests, ramp(0.1, 0.9), cpu_units=None) is None
    custom = catalog.info("app_in_flight_per_task")
    assert check_units(custom.name, custom, ramp(0, 500), cpu_units=None) is None


def test_missing_values_are_ignored():
    assert check_units(CPU.name, CPU, [np.nan, np.nan], cpu_units=None) is None
    assert check_units(CPU.name, CPU, [], cpu_units=None) is None
    assert "390" in check_units(CPU.name, CPU, [np.nan, 20.0, 390.0, np.inf], cpu_units=4096)


def _manifest(**tables) -> RunManifest:
    return RunManifest.from_dict({"kind": RUN_KIND, "schema_version": RUN_SCHEMA_VERSION, **tables})


def test_cpu_units_from_the_manifest():
    assert cpu_units_from_manifest(_manifest(target={"kind": "local", "cpu_units": 512})) == 512
    assert cpu_units_from_manifest(_manifest(target={"kind": "url"},
                                             sources={"cloudwatch": {"task_cpu_units": 4096}})) == 4096
    assert cpu_units_from_manifest(_manifest(target={"kind": "url"},
                                             sources={"cloudwatch": {"task_cpu_units": None}})) is None
    assert cpu_units_from_manifest(_manifest()) is None


@pytest.mark.parametrize("kind", ["cpu", "memory", "jvm"])
def test_no_false_alarm_on_the_synthetic_runs(tmp_path, kind):
    write_synthetic_run(tmp_path / "run", kind)
    findings = analyze(tmp_path / "run")
    for metric in findings["metrics"]:
        values = [v["value"] for v in metric["step_values"]]
        assert check_units(metric["name"], catalog.info(metric["name"]), values,
                           cpu_units_from_manifest(_manifest(target=findings["run"]["target"]))) is None, metric["name"]


# -- the policy refuses what the check would have caught ---------------------------------------------
def _render(metric, target):
    step = recommend.step_thresholds(target, max(target * 1.3, 1.0), 1)
    return policy.render_all(metric, target, step, policy.aws_metric(metric))


@pytest.mark.parametrize("target", [251.0, 100.5, 0.0, -3.0])
def test_policy_refuses_a_percent_target_outside_0_100(target):
    for metric in (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION):
        with pytest.raises(policy.PolicyTargetError, match=r"outside \(0, 100\]"):
            _render(metric, target)
        assert policy.target_problem(metric, target) is not None


def test_the_refusal_is_an_input_error_with_one_clear_line():
    with pytest.raises(InputError) as caught:
        _render(catalog.CPU_UTILIZATION, 251.0)
    assert "ECSServiceAverageCPUUtilization" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("target", [0.6, 62.8, 100.0])
def test_policy_renders_a_percent_target_inside(target):
    rendered = _render(catalog.CPU_UTILIZATION, target)
    config = rendered["target_tracking"]["api_request"]["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == target


def test_other_metrics_are_not_bounded_at_100():
    assert policy.target_problem(catalog.REQUESTS_PER_TASK, 250.0) is None
    assert policy.target_problem(catalog.CONCURRENCY_PER_TASK, 120.0) is None
    _render(catalog.REQUESTS_PER_TASK, 250.0)
