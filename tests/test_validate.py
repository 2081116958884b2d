"""scalefinder validate: the closed loop's readings, its comparison with the simulator, its errors,
and one short loop on the local cluster."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from scalefinder.analysis.command import analyze
from scalefinder.analysis.simulation import demand as demands
from scalefinder.analysis.simulation.simulator import simulate
from scalefinder.cli import cli
from scalefinder.core import catalog
from scalefinder.loadgen.closedloop import LoopMinute, LoopResult, ScaleAction
from scalefinder.loadgen.profile import load_profile
from scalefinder.profiles import shipped_profile
from scalefinder.validate import MetricReading, PolicyInTheLoop, _compare, _prepare
from tests.synthetic import write_synthetic_run
from tests.processes import reaped

DEMO = shipped_profile("demo.toml")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    path = write_synthetic_run(tmp_path_factory.mktemp("cpu") / "run", "cpu", seed=0)
    assert analyze(path)["verdict"] == "recommended"
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["validate", *args])


def row(t: float, metric: str, value: float, task: str = "") -> dict:
    return {"time_unix_s": t, "metric": metric, "task": task, "value": value}


# -- what the autoscaler reads ------------------------------------------------------------------
def test_the_datapoint_is_the_mean_of_the_service_level_samples():
    rows = [row(1, "cpu_utilization", 40), row(1, "cpu_utilization", 90, task="t1"), row(2, "cpu_utilization", 60),
            row(2, "memory_utilization", 10)]
    assert MetricReading("cpu_utilization")(rows) == 50
    assert MetricReading("cpu_utilization")([row(1, "memory_utilization", 10)]) is None


def test_a_queue_backlog_is_read_per_running_task_as_the_analysis_derives_it():
    rows = [row(1, catalog.QUEUE_BACKLOG, 12), row(1, catalog.RUNNING_TASK_COUNT, 2),
            row(2, catalog.QUEUE_BACKLOG, 30), row(2, catalog.RUNNING_TASK_COUNT, 3)]
    assert MetricReading(catalog.QUEUE_BACKLOG_PER_TASK)(rows) == pytest.approx((6 + 10) / 2)


def test_the_policy_sees_request_counts_per_minute_as_the_load_balancer_counts_them():
    seen = []

    class Recording:
        def decide(self, now_s, datapoints, desired):
            seen.append(datapoints)

    PolicyInTheLoop(catalog.REQUESTS_PER_TASK, Recording()).decide(60, [2.5, 3.0], 2)
    PolicyInTheLoop("cpu_utilization", Recording()).decide(60, [55.0], 2)
    assert seen == [[150.0, 180.0], [55.0]]


def test_a_curve_held_per_minute_offers_each_minute_at_its_mean():
    spike = demands.built_in("spike", 10)
    held = spike.held_per_minute()
    assert held.minutes == 60
    assert held.rate(5.9) == pytest.approx(10) and held.rate(20) == pytest.approx(30)
    assert held.rate(10.0) == held.rate(10.99) == pytest.approx(15)  # a quarter up the ramp, on average
    assert sum(held.minute_means()) == pytest.approx(sum(spike.minute_means()))


# -- the comparison -------------------------------------------------------------------------------
def _setup(cpu_run, **overrides):
    options = {"demand_spec": "spike", "base_rps": None, "policy_kind": "target-tracking", "target": None,
               "minute_s": 3.0, "start_delay_s": 60.0, "min_tasks": 1, "max_tasks": None, **overrides}
    return _prepare(load_profile(shipped_profile("cpu.toml")), cpu_run, **options)


def _loop_like_the_prediction(setup, delay_s=60.0):
    """A loop result that is exactly the simulation, and scale-outs that took ``delay_s`` (simulated)."""
    from scalefinder.analysis.simulation.simulator import Bounds

    bounds = setup["bounds"]
    predicted = simulate(setup["model"], setup["offered"], setup["make_policy"](),
                         Bounds(bounds.min_tasks, bounds.max_tasks, delay_s), setup["start_tasks"])
    minutes = [LoopMinute(m.minute, m.demand_rps, m.tasks, m.serving, m.metric, requests=100, p95_ms=m.p95_ms,
                          breached=m.breached) for m in predicted.minutes]
    actions = [ScaleAction(m.minute, a.tasks, m.tasks, 0.0, applied_unix_s=delay_s * 3.0 / 60)
               for a, m in zip(predicted.minutes, predicted.minutes[1:]) if m.tasks > a.tasks]
    return LoopResult(minutes, actions)


def test_a_loop_that_did_what_was_predicted_agrees(cpu_run):
    setup = _setup(cpu_run)
    loop = _loop_like_the_prediction(setup)
    assert loop.actions, "the spike must make the policy scale out"
    validation = _compare(setup, loop, 3.0, 60.0)
    comparison = validation["comparison"]
    assert validation["clock"]["measured_start_delay_s"] == pytest.approx(60.0)
    assert comparison["tasks_within_1_share"] == 1.0
    assert comparison["breach_minutes_predicted"] == comparison["breach_minutes_actual"]
    assert comparison["verdict"] == "agrees"
    assert len(validation["predicted"]) == len(validation["actual"]) == 60


def test_tasks_off_by_two_in_a_tenth_of_the_minutes_or_three_more_breaches_disagree(cpu_run):
    setup = _setup(cpu_run)
    loop = _loop_like_the_prediction(setup)
    off = LoopResult([replace(m, tasks=m.tasks + 2) if m.minute % 9 == 0 else m for m in loop.minutes], loop.actions)
    assert _compare(setup, off, 3.0, 60.0)["comparison"]["tasks_within_1_share"] < 0.9
    assert _compare(setup, off, 3.0, 60.0)["comparison"]["verdict"] == "disagrees"
    breached = LoopResult([replace(m, breached=True) if m.minute in (40, 41, 42) else m for m in loop.minutes],
                          loop.actions)
    comparison = _compare(setup, breached, 3.0, 60.0)["comparison"]
    assert comparison["breach_minutes_actual"] == comparison["breach_minutes_predicted"] + 3
    assert comparison["verdict"] == "disagrees"


# -- user mistakes: one line, exit 2, before anything starts ----------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--minute-s", "0.1"], "--minute-s must be from 0.5 to 60"),
    (["--start-delay-s", "-1"], "--start-delay-s must be from 0 to 3600"),
    (["--target", "0"], "--target must be above 0"),
    (["--min-tasks", "0"], "--min-tasks must be at least 1"),
    (["--min-tasks", "3", "--max-tasks", "2"], "--max-tasks (2) is below --min-tasks (3)"),
    (["--max-tasks", "65"], "at most 64 tasks"),
    (["--base-rps", "500"], "give a lower --base-rps"),
])
def test_bad_options_give_one_line_and_exit_2(cpu_run, args, message):
    result = invoke(str(shipped_profile("cpu.toml")), "--run", str(cpu_run), *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output


def test_a_profile_that_does_not_target_the_local_cluster_is_refused(cpu_run):
    result = invoke(str(shipped_profile("ecs-emulated.toml")), "--run", str(cpu_run))
    assert result.exit_code == 2 and 'kind = "local"' in result.output, result.output


def test_a_run_that_was_not_analyzed_is_named(tmp_path):
    path = write_synthetic_run(tmp_path / "run", "cpu", replay=False, beyond=False)
    result = invoke(str(shipped_profile("cpu.toml")), "--run", str(path))
    assert result.exit_code == 2 and "scalefinder analyze" in result.output, result.output


# -- the loop itself ----------------------------------------------------------------------------------
@pytest.mark.load
@pytest.mark.browser
def test_the_loop_scales_out_for_the_spike_and_back_in_after_it(demo_run, tmp_path):
    """The demo's recommendation applied to the demo's cluster, the spike's hour in a minute."""
    assert demo_run.returncode == 0, demo_run.stderr
    run = tmp_path / "run"
    shutil.copytree(demo_run.path, run)
    result = invoke(str(DEMO), "--run", str(run), "--demand", "spike", "--minute-s", "1")
    assert result.exit_code == 0, result.output
    validation = json.loads((run / "validation-spike.json").read_text())
    actual = validation["actual"]
    assert [m["minute"] for m in actual] == list(range(60))
    assert len((run / "validation-spike" / "minutes.jsonl").read_text().splitlines()) == 60
    start = validation["bounds"]["start_tasks"]
    # the policy acted on what the cluster measured: more tasks during the spike, the start count after it
    assert max(m["tasks"] for m in actual[12:30]) > start
    assert all(m["tasks"] == start for m in actual[:10])
    assert actual[-1]["tasks"] == start
    assert any(a["desired"] > a["previous"] and a["took_s"] is not None and a["error"] is None
               for a in validation["actions"])
    assert all(m["breached"] is not None for m in actual)
    assert not any(m["breached"] for m in actual[:10])  # the base rate sits at the target
    comparison = validation["comparison"]
    assert comparison["verdict"] in ("agrees", "disagrees")
    assert f"Verdict: the simulation {comparison['verdict']}" in result.output

    from tests.browser import chromium, open_page

    assert CliRunner().invoke(cli, ["report", str(run)]).exit_code == 0
    with chromium() as browser:
        page, problems = open_page(browser, run / "report.html")
        rows = page.locator("#hold .validation-table tbody tr")
        assert rows.count() == 1 and "spike" in rows.first.inner_text()
        assert comparison["verdict"] in rows.first.inner_text()
        assert page.locator("#hold .chart .main-svg").count() >= 2  # the simulation's, the validation's
        page.close()
    assert problems == []


@pytest.mark.load
def test_ctrl_c_keeps_every_minute_the_loop_ran_and_stops_the_cluster(demo_run, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    assert demo_run.returncode == 0, demo_run.stderr
    run = tmp_path / "run"
    shutil.copytree(demo_run.path, run)
    minutes = run / "validation-spike" / "minutes.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "validate", str(DEMO), "--run", str(run),
                                "--demand", "spike", "--minute-s", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(process):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (minutes.is_file() and len(minutes.read_text().splitlines()) >= 3):
            time.sleep(0.2)
        assert minutes.is_file(), "no minute was judged within 60 s"
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the cluster and the load generator run in processes of their own"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped by SIGINT" in stderr, stderr
    kept = [json.loads(line) for line in minutes.read_text().splitlines()]
    # every minute that ran is kept, in order; those whose requests were cut off stay unjudged
    assert [m["minute"] for m in kept] == list(range(len(kept))) and len(kept) >= 3
    assert all(m["breached"] is not None for m in kept[:3])
    assert not (run / "validation-spike.json").exists()
    # nothing of the loop is left running: no task, balancer or load generator
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
