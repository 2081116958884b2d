"""scalefinder simulate: the policy semantics, the sweep's monotonicity, the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scalefinder.analysis.command import analyze
from scalefinder.analysis.simulation import demand as demands
from scalefinder.analysis.simulation.compare import compare, policy_for
from scalefinder.analysis.simulation.model import load_model
from scalefinder.analysis.simulation.policies import StepScaling, TargetTracking
from scalefinder.analysis.simulation.simulator import default_bounds, parse_sweep, settled_tasks, simulate, sweep
from scalefinder.cli import cli
from tests.synthetic import write_synthetic_run

SWEEP = "40:95:5"


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    runs = {}
    for kind, seed in (("cpu", 0), ("cpu", 3), ("workers", 1)):
        path = write_synthetic_run(tmp_path_factory.mktemp(f"{kind}{seed}") / "run", kind, seed=seed)
        findings = analyze(path)
        assert findings["verdict"] == "recommended", findings["headline"]
        runs[(kind, seed)] = path
    return runs


def invoke(*args: str):
    return CliRunner().invoke(cli, ["simulate", *args])


# -- policy semantics -------------------------------------------------------------------------
def test_target_tracking_scales_out_after_three_datapoints_above_the_target_in_proportion():
    policy = TargetTracking(target=50)
    assert policy.decide(60, [60, 60], 4) is None  # two datapoints are not enough
    assert policy.decide(120, [40, 60, 60, 75], 4) == 6  # ceil(4 x 75 / 50)
    assert policy.decide(150, [60, 60, 75, 80], 6) is None  # inside the 60 s scale-out cooldown
    assert policy.decide(181, [60, 75, 80, 80], 6) == 10


def test_target_tracking_scales_in_only_after_fifteen_datapoints_under_ninety_percent():
    policy = TargetTracking(target=50)
    assert policy.decide(900, [44.0] * 14, 10) is None
    assert policy.decide(900, [46.0] * 15, 10) is None  # 46 is above 0.9 x 50
    assert policy.decide(900, [30.0] * 15, 10) == 6
    assert policy.decide(1000, [30.0] * 16, 6) is None  # inside the 300 s scale-in cooldown
    assert TargetTracking(target=50, disable_scale_in=True).decide(900, [10.0] * 15, 10) is None


def test_step_scaling_reads_the_rendered_alarms_and_steps():
    step = {"adjustment_type": "PercentChangeInCapacity", "scale_out_threshold": 60.0,
            "thresholds": [60.0, 75.0, 90.0], "adjustments": [10, 30, 50], "scale_in_threshold": 42.0,
            "scale_in_adjustment": -10, "min_adjustment_magnitude": 1}
    policy = StepScaling.from_recommendation("cpu_utilization", step)
    assert policy.out_alarm.threshold == 60.0 and policy.in_alarm.threshold == 42.0
    assert policy.out_steps == [(0.0, 15.0, 10), (15.0, 30.0, 30), (30.0, float("inf"), 50)]
    assert policy.decide(60, [61.0], 10) == 11  # +10% of 10
    assert policy.decide(90, [95.0], 11) is None  # scale-out cooldown
    assert policy.decide(130, [95.0], 11) == 16  # +50% of 11 = 5.5, rounded towards zero
    assert policy.decide(1000, [41.0] * 4, 16) is None  # 4 of the 5 datapoints the low alarm needs
    assert policy.decide(1000, [41.0] * 5, 16) == 15  # -10% of 16 = -1.6 -> -1
    assert policy.decide(1100, [41.0] * 5, 15) is None  # scale-in cooldown


def test_requests_per_task_is_tracked_per_minute_as_the_load_balancer_counts():
    model_like = type("M", (), {"metric": "requests_per_task", "target": 10.0, "metric_points": (0.0, 20.0),
                                "recommendation": {}})()
    policy = policy_for(model_like, "target-tracking", 12.0)
    assert policy.target == 720.0


# -- the model and the sweep ------------------------------------------------------------------
def swept(path, curve: str, kind: str) -> list[dict]:
    model = load_model(path)
    bounds = default_bounds(model)
    demand = demands.built_in(curve, bounds.min_tasks * model.target_rate_per_task_rps)
    return sweep(model, demand, parse_sweep(SWEEP), bounds, lambda t: policy_for(model, kind, t))["sweep"]


@pytest.mark.parametrize("curve", demands.BUILT_IN)
def test_a_higher_tracking_target_never_breaches_less_nor_costs_more(analyzed, curve):
    for path in analyzed.values():
        rows = swept(path, curve, "target-tracking")
        breaches = [r["breach_minutes"] for r in rows]
        hours = [r["task_hours"] for r in rows]
        assert breaches == sorted(breaches), (path, rows)
        assert hours == sorted(hours, reverse=True), (path, rows)


@pytest.mark.parametrize("curve", demands.BUILT_IN)
def test_a_higher_step_threshold_never_breaches_less(analyzed, curve):
    # Task-hours are not monotonic for step scaling (next test): only breaches are asserted.
    for path in analyzed.values():
        breaches = [r["breach_minutes"] for r in swept(path, curve, "step")]
        assert breaches == sorted(breaches), (path, breaches)


def test_step_scaling_overshoots_a_spike_on_late_datapoints(analyzed):
    # One-minute datapoints published a minute late and tasks that serve a minute after they
    # start keep the high alarm firing for minutes after enough tasks were asked for; each
    # firing past the 60 s cooldown adds up to half the tasks again. A higher threshold starts
    # from fewer, hotter tasks and can end with more: the cost is not monotonic in the target.
    model = load_model(analyzed[("cpu", 0)])
    bounds = default_bounds(model)
    spike = demands.built_in("spike", bounds.min_tasks * model.target_rate_per_task_rps)
    result = simulate(model, spike, policy_for(model, "step", None), bounds,
                      settled_tasks(model, spike, bounds, model.target))
    needed = model.tasks_needed(max(spike.rate(m) for m in range(spike.minutes)))
    assert result.summary()["peak_tasks"] >= 1.5 * needed


def test_a_service_settled_at_the_target_holds_a_flat_demand(analyzed):
    model = load_model(analyzed[("cpu", 0)])
    bounds = default_bounds(model)
    flat = demands.Demand("flat", 60, lambda t: 4 * model.target_rate_per_task_rps, "flat")
    start = settled_tasks(model, flat, bounds, model.target)
    result = simulate(model, flat, policy_for(model, "target-tracking", None), bounds, start)
    assert result.breach_minutes == 0
    assert {m.tasks for m in result.minutes} == {start}


def test_demand_past_every_task_breaches_from_the_first_minute(analyzed):
    model = load_model(analyzed[("cpu", 0)])
    bounds = default_bounds(model, max_tasks=3)
    heavy = demands.Demand("heavy", 10, lambda t: 10 * model.capacity_per_task_rps, "x10")
    result = simulate(model, heavy, policy_for(model, "target-tracking", None), bounds, 3)
    assert result.breach_minutes == 10 and result.first_breach_minute == 0
    assert result.summary()["peak_tasks"] == 3


# -- the command line -------------------------------------------------------------------------
def test_simulate_prints_the_trajectory_and_the_summary(analyzed):
    result = invoke(str(analyzed[("cpu", 0)]), "--demand", "spike", "--start-delay-s", "60")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(1 for line in lines if line.strip() and line.split()[0].isdigit()) == 60
    assert any(line.startswith("Summary: ") and "task-hours" in line for line in lines)
    assert "a new task serves after 60 s (--start-delay-s)" in result.output


def test_simulate_json_has_the_summary_and_the_sweep(analyzed):
    result = invoke(str(analyzed[("workers", 1)]), "--demand", "step", "--sweep", "50:90:10", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out["summary"]) >= {"breach_minutes", "first_breach_minute", "task_hours", "overprovisioning"}
    assert [row["target"] for row in out["sweep"]] == [50, 60, 70, 80, 90]
    assert all(set(row) == {"target", "breach_minutes", "task_hours"} for row in out["sweep"])
    assert len(out["trajectory"]) == 60 and out["analyzer_target"] == out["model"]["target"]


def test_a_csv_of_requests_per_minute_drives_the_simulation(analyzed, tmp_path):
    model = load_model(analyzed[("cpu", 0)])
    per_minute = 60 * 3 * model.target_rate_per_task_rps
    rows = ["timestamp,RequestCount"] + [f"2026-12-01T00:{m:02d}:00Z,{per_minute * (1 + m / 10):.0f}" for m in range(20)]
    (tmp_path / "alb.csv").write_text("\n".join(rows) + "\n")
    result = invoke(str(analyzed[("cpu", 0)]), "--demand", str(tmp_path / "alb.csv"), "--json")
    assert result.exit_code == 0, result.output
    trajectory = json.loads(result.output)["trajectory"]
    assert len(trajectory) == 20
    assert trajectory[0]["demand_rps"] == pytest.approx(per_minute / 60, rel=0.01)
    assert trajectory[-1]["tasks"] > trajectory[0]["tasks"]


@pytest.mark.parametrize("args, message", [
    (["--target", "70", "--sweep", "50:90:10"], "exclude each other"),
    (["--sweep", "90:50:10"], "LOW <= HIGH"),
    (["--sweep", "fast"], "LOW:HIGH:STEP"),
    (["--demand", "weekly"], "no such demand file"),
    (["--min-tasks", "5", "--max-tasks", "4"], "below --min-tasks"),
    (["--start-delay-s", "-1"], "--start-delay-s"),
])
def test_bad_options_give_one_line_and_exit_2(analyzed, args, message):
    result = invoke(str(analyzed[("cpu", 0)]), *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output


def test_a_run_not_yet_analyzed_is_named(tmp_path):
    path = write_synthetic_run(tmp_path / "run", "cpu", replay=False, beyond=False)
    result = invoke(str(path))
    assert result.exit_code == 2 and "scalefinder analyze" in result.output, result.output


def test_a_bad_csv_is_named_with_its_line(analyzed, tmp_path):
    (tmp_path / "bad.csv").write_text("minute,requests\n0,100\n1,lots\n")
    result = invoke(str(analyzed[("cpu", 0)]), "--demand", str(tmp_path / "bad.csv"))
    assert result.exit_code == 2 and "bad.csv:3" in result.output, result.output


def test_the_report_compares_the_recommendation_with_step_scaling_and_a_lower_target(analyzed):
    model = load_model(analyzed[("cpu", 0)])
    demand, bounds, scenarios = compare(model)
    assert demand.name == "spike" and [s.key for s in scenarios] == ["recommended", "step", "lower"]
    recommended, _, lower = scenarios
    assert lower.target < recommended.target
    assert lower.simulation.breach_minutes <= recommended.simulation.breach_minutes
    assert lower.simulation.task_hours >= recommended.simulation.task_hours
