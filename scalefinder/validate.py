"""``scalefinder validate PROFILE --demand CURVE``: the recommended policy applied for real.

``scalefinder simulate`` predicts, from an analyzed run's measurements, how a policy behaves on a
demand curve. This command checks that prediction on the embedded local cluster: it drives the
curve with the load generator on a compressed clock while a local autoscaler resizes the cluster
with the very policy logic the simulator uses (``analysis/simulation/policies.py``), fed by the
metric as the local source measures it. Then it simulates the same curve, policy, bounds and
(measured) start delay, and puts the two trajectories side by side in the run directory
(``validation-<curve>.json``), where ``scalefinder report`` shows them.

It lives above both halves because it is both: the run side drives the loop
(``loadgen/closedloop.py``), the read side models and simulates.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from scalefinder.analysis.simulation.validation import validation_path
from scalefinder.core import catalog
from scalefinder.core.errors import InputError
from scalefinder.core.rundir import create_run_directory

DEFAULT_MINUTE_S = 6.0
DEFAULT_START_DELAY_S = 60.0  # a Fargate task's usual start, in simulated seconds
MIN_MINUTE_S = 0.5
TASKS_TOLERANCE = 1  # the prediction's task count is right within one task ...
TASKS_SHARE = 0.9  # ... in at least this share of the minutes
BREACH_TOLERANCE_MINUTES = 2  # and its breach minutes within two of the loop's
# A built-in curve starts the service below its target by default. Exactly at the target, the
# measured metric is above it in every other minute, and three such minutes in a row scale out
# (the proportional rule rounds up) where the noiseless simulation never does: the comparison would
# measure the noise at the knife edge, not the model.
BASE_SHARE_OF_TARGET = 0.8
HOST_CPU_SPARE = 0.5  # of a core, kept for the load generator and the balancer
# A backlog fills and drains in real seconds, which the compressed clock does not compress.
BACKLOG_METRICS = {catalog.QUEUE_BACKLOG, catalog.QUEUE_BACKLOG_PER_TASK}


@dataclass
class MetricReading:
    """The minute's datapoint of the recommended metric from the local source's rows: the mean
    of its service-level samples. A queue's backlog per task is the service's backlog over the
    tasks running at the same sample, as the analysis derives it."""

    metric: str

    def __call__(self, rows: list[dict[str, Any]]) -> float | None:
        service = [r for r in rows if not r.get("task")]
        if self.metric == catalog.QUEUE_BACKLOG_PER_TASK and not any(r["metric"] == self.metric for r in service):
            running = {r["time_unix_s"]: r["value"] for r in service if r["metric"] == catalog.RUNNING_TASK_COUNT}
            values = [r["value"] / running[r["time_unix_s"]] for r in service
                      if r["metric"] == catalog.QUEUE_BACKLOG and running.get(r["time_unix_s"])]
        else:
            values = [r["value"] for r in service if r["metric"] == self.metric]
        return sum(values) / len(values) if values else None


class PolicyInTheLoop:
    """The simulator's policy, fed the loop's readings in AWS's unit."""

    def __init__(self, metric: str, policy: Any):
        from scalefinder.analysis import policy as renderings

        self._aws = lambda value: renderings.aws_target(metric, value)
        self.policy = policy
        self.reading = MetricReading(metric)

    def decide(self, now_s: float, datapoints: list[float], desired: int) -> int | None:
        return self.policy.decide(now_s, [self._aws(v) for v in datapoints], desired)


@click.command("validate")
@click.argument("profile_path", metavar="PROFILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--demand", "demand_spec", default="spike", show_default=True,
              help="A built-in curve (step, spike, ramp, daily) or a CSV of requests per minute.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An analyzed run of PROFILE whose recommendation to validate (default: run and analyze "
                   "PROFILE first).")
@click.option("--base-rps", type=float, default=None,
              help="Base rate of a built-in curve (default: 80% of the rate at which --min-tasks tasks sit at the "
                   "target).")
@click.option("--policy", "policy_kind", type=click.Choice(("target-tracking", "step")), default="target-tracking",
              show_default=True)
@click.option("--target", type=float, default=None, help="Target in the metric's unit (default: the analyzer's).")
@click.option("--minute-s", type=float, default=DEFAULT_MINUTE_S, show_default=True,
              help="Real seconds per simulated minute (the compressed clock).")
@click.option("--start-delay-s", type=float, default=DEFAULT_START_DELAY_S, show_default=True,
              help="Simulated seconds before an added task is launched; its real start is on top.")
@click.option("--min-tasks", type=int, default=1, show_default=True)
@click.option("--max-tasks", type=int, default=None, help="Default: twice the tasks the curve's peak needs.")
@click.pass_context
def validate_command(ctx: click.Context, profile_path: Path, demand_spec: str, run_dir: Path | None,
                     base_rps: float | None, policy_kind: str, target: float | None, minute_s: float,
                     start_delay_s: float, min_tasks: int, max_tasks: int | None) -> None:
    """Apply the recommended policy to the local cluster under a demand curve, and compare the
    tasks and SLO breaches minute by minute with what `scalefinder simulate` predicts."""
    from scalefinder.loadgen.profile import load_profile

    profile = load_profile(profile_path)
    if not profile.target.is_local:
        raise InputError(f"{profile_path} targets {profile.target.kind}; validate drives the embedded local "
                         "cluster, so its [target] must be kind = \"local\"")
    if not MIN_MINUTE_S <= minute_s <= 60:
        raise InputError(f"--minute-s must be from {MIN_MINUTE_S:g} to 60, got {minute_s:g}")
    if not 0 <= start_delay_s <= 3600:
        raise InputError(f"--start-delay-s must be from 0 to 3600, got {start_delay_s:g}")
    if target is not None and not target > 0:
        raise InputError(f"--target must be above 0, got {target:g}")
    if run_dir is None:
        run_dir = _run_and_analyze(ctx, profile_path, profile.name)
    setup = _prepare(profile, run_dir, demand_spec, base_rps, policy_kind, target, minute_s, start_delay_s,
                     min_tasks, max_tasks)
    _check_host(profile, setup)
    click.echo(f"Validating {setup['policy_line']} on the {setup['demand'].name} curve "
               f"({setup['demand'].minutes} minutes of {minute_s:g} s, {setup['real_minutes']:.1f} real minutes); "
               f"tasks {setup['bounds'].min_tasks}-{setup['bounds'].max_tasks}, starting at {setup['start_tasks']}")
    path = validation_path(run_dir, setup["demand"].name)
    if setup["model"].metric in BACKLOG_METRICS and minute_s < 60:
        click.echo(f"Note: a backlog fills and drains in real seconds, which the compressed clock does not "
                   f"compress: at {minute_s:g} s a minute it takes {60 / minute_s:.0f} times as many minutes to "
                   "fill as it would, so the loop breaches later, or not at all, where the simulation breaches. "
                   "Use a longer --minute-s to check breaches.")
    out_dir = path.with_suffix("")  # the loop's own minutes, written as they end
    out_dir.mkdir(exist_ok=True)
    (out_dir / "minutes.jsonl").unlink(missing_ok=True)
    result = _loop(profile, setup, minute_s, start_delay_s, out_dir)
    validation = _compare(setup, result, minute_s, start_delay_s)
    path.write_text(json.dumps(validation, indent=1) + "\n", encoding="utf-8")
    _print_summary(validation)
    click.echo(f"Written {path}")


def _run_and_analyze(ctx: click.Context, profile_path: Path, name: str) -> Path:
    from scalefinder.analysis.command import analyze_command
    from scalefinder.loadgen.commands import run_command

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    _, out = create_run_directory(Path("reports"), f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{stamp}")
    click.echo(f"No --run given: running {profile_path} first, into {out}/")
    ctx.invoke(run_command, profile=profile_path, out=out)
    ctx.invoke(analyze_command, run_dir=out)
    return out


def _prepare(profile: Any, run_dir: Path, demand_spec: str, base_rps: float | None, policy_kind: str,
             target: float | None, minute_s: float, start_delay_s: float, min_tasks: int,
             max_tasks: int | None) -> dict[str, Any]:
    from scalefinder.analysis.simulation import demand as demands
    from scalefinder.analysis.simulation.command import resolve_demand
    from scalefinder.analysis.simulation.compare import policy_for
    from scalefinder.analysis.simulation.model import load_model
    from scalefinder.analysis.simulation.simulator import Bounds, settled_tasks
    from scalefinder.loadgen.cluster.spec import MAX_TASKS

    model = load_model(run_dir)
    if min_tasks < 1:
        raise InputError(f"--min-tasks must be at least 1, got {min_tasks}")
    provisional = Bounds(min_tasks, max(min_tasks, max_tasks or min_tasks), start_delay_s)
    if base_rps is None and demand_spec in demands.BUILT_IN:
        base_rps = BASE_SHARE_OF_TARGET * min_tasks * model.target_rate_per_task_rps
    demand = resolve_demand(demand_spec, model, base_rps, provisional)
    peak = max(demand.rate(m + 0.5) for m in range(demand.minutes))
    high = max_tasks if max_tasks is not None else max(min_tasks, 2 * model.tasks_needed(peak))
    if high > MAX_TASKS:
        raise InputError(f"the local cluster runs at most {MAX_TASKS} tasks; --max-tasks is {high} "
                         f"(give a lower --base-rps or --max-tasks)")
    if high < min_tasks:
        raise InputError(f"--max-tasks ({high}) is below --min-tasks ({min_tasks})")
    bounds = Bounds(min_tasks, high, start_delay_s)
    value = model.target if target is None else target
    described = policy_for(model, policy_kind, target).describe()
    # A policy keeps its cooldowns' state: the loop and the prediction each get a fresh one.
    return {"model": model, "demand": demand, "offered": demand.held_per_minute(), "bounds": bounds,
            "make_policy": lambda: policy_for(model, policy_kind, target), "policy_kind": policy_kind,
            "target": value, "start_tasks": settled_tasks(model, demand, bounds, value), "peak_rps": peak,
            "peak_tasks_needed": model.tasks_needed(peak), "run_dir": str(run_dir),
            "profile": profile.name, "real_minutes": demand.minutes * minute_s / 60,
            "policy_line": f"{described['policy']} on {model.metric} at {value:g}"}


def _check_host(profile: Any, setup: dict[str, Any]) -> None:
    """The tasks the curve's peak needs must fit the host's cores, or the loop measures the host."""
    cores = os.cpu_count() or 1
    wanted = setup["peak_tasks_needed"] * profile.target.cpu_units / 1024
    if wanted > cores - HOST_CPU_SPARE:
        raise InputError(f"the curve's peak ({setup['peak_rps']:.1f} req/s) needs {setup['peak_tasks_needed']} tasks "
                         f"of {profile.target.cpu_units} CPU units, {wanted:.2f} cores, and this machine has {cores}; "
                         "give a lower --base-rps")


def _loop(profile: Any, setup: dict[str, Any], minute_s: float, start_delay_s: float, out_dir: Path) -> Any:
    from scalefinder.loadgen.closedloop import ClosedLoop, LoopPlan
    from scalefinder.loadgen.cluster import LocalCluster
    from scalefinder.loadgen.experiment import local_cluster_spec

    demand, bounds = setup["offered"], setup["bounds"]
    plan = LoopPlan(minutes=demand.minutes, rate_of_minute=lambda minute: demand.rate(minute), minute_s=minute_s,
                    start_tasks=setup["start_tasks"], min_tasks=bounds.min_tasks, max_tasks=bounds.max_tasks,
                    start_delay_s=start_delay_s, metric_interval_s=min(1.0, max(0.25, minute_s / 6)))
    policy = PolicyInTheLoop(setup["model"].metric, setup["make_policy"]())
    click.echo(f"{'minute':>6} {'demand':>8} {'tasks':>5} {'serving':>7} {'metric':>8} {'p95 ms':>8}  SLO")

    def show(minute: Any) -> None:
        metric = "-" if minute.metric is None else f"{minute.metric:.1f}"
        p95 = "-" if minute.p95_ms is None else f"{minute.p95_ms:.0f}"
        slo = "?" if minute.breached is None else ("BREACH" if minute.breached else "ok")
        click.echo(f"{minute.minute:>6} {minute.offered_rps:>8.2f} {minute.tasks:>5} {minute.serving:>7} "
                   f"{metric:>8} {p95:>8}  {slo}")

    with LocalCluster(local_cluster_spec(profile, setup["start_tasks"])) as cluster:
        return ClosedLoop(profile, cluster, plan, policy, out_dir, on_minute=show).run()


def _compare(setup: dict[str, Any], result: Any, minute_s: float, start_delay_s: float) -> dict[str, Any]:
    """The simulation of the same curve, policy and bounds, with the start delay the loop measured,
    beside the loop's minutes."""
    from scalefinder.analysis.simulation.simulator import Bounds, simulate

    model, demand, bounds = setup["model"], setup["offered"], setup["bounds"]
    scale = minute_s / 60.0
    outs = [a.took_s / scale for a in result.actions if a.desired > a.previous and a.took_s is not None]
    measured_delay = sum(outs) / len(outs) if outs else start_delay_s
    prediction = simulate(model, demand, setup["make_policy"](), Bounds(bounds.min_tasks, bounds.max_tasks, measured_delay),
                          setup["start_tasks"])
    predicted = prediction.minutes
    actual = result.minutes
    paired = list(zip(predicted, actual))
    close = sum(1 for p, a in paired if abs(p.tasks - a.tasks) <= TASKS_TOLERANCE)
    judged = [a for a in actual if a.breached is not None]
    actual_breaches = sum(1 for a in judged if a.breached)
    predicted_breaches = sum(1 for p in predicted[:len(actual)] if p.breached)
    share = close / len(paired) if paired else 0.0
    tasks_ok = share >= TASKS_SHARE
    breaches_ok = abs(predicted_breaches - actual_breaches) <= BREACH_TOLERANCE_MINUTES
    return {
        "version": 1,
        "profile": setup["profile"],
        "run_dir": setup["run_dir"],
        "demand": {"name": demand.name, "minutes": demand.minutes, "description": demand.description,
                   "peak_rps": round(setup["peak_rps"], 3)},
        "policy": {"kind": setup["policy_kind"], "metric": model.metric, "target": setup["target"],
                   **setup["make_policy"]().describe()},
        "clock": {"minute_s": minute_s, "start_delay_s": start_delay_s,
                  "measured_start_delay_s": round(measured_delay, 1), "scale_outs_measured": len(outs)},
        "bounds": {"min_tasks": bounds.min_tasks, "max_tasks": bounds.max_tasks, "start_tasks": setup["start_tasks"]},
        "status": result.status,
        "comparison": {
            "minutes": len(paired),
            "tasks_within_1": close, "tasks_within_1_share": round(share, 3),
            "tasks_threshold": f">= {TASKS_SHARE:.0%} of minutes within +-{TASKS_TOLERANCE} task",
            "breach_minutes_predicted": predicted_breaches, "breach_minutes_actual": actual_breaches,
            "breach_minutes_unjudged": len(actual) - len(judged),
            "breach_threshold": f"within +-{BREACH_TOLERANCE_MINUTES} minutes",
            "task_hours_predicted": round(sum(p.tasks for p in predicted[:len(actual)]) / 60, 3),
            "task_hours_actual": round(sum(a.tasks for a in actual) / 60, 3),
            "verdict": "agrees" if tasks_ok and breaches_ok else "disagrees",
        },
        "predicted": [m.to_dict() for m in predicted],
        "actual": [m.to_dict() for m in actual],
        "actions": [{"minute": a.minute, "previous": a.previous, "desired": a.desired,
                     "took_s": None if a.took_s is None else round(a.took_s, 2), "error": a.error}
                    for a in result.actions],
    }


def _print_summary(validation: dict[str, Any]) -> None:
    c = validation["comparison"]
    clock = validation["clock"]
    click.echo(f"Tasks: the prediction is within {TASKS_TOLERANCE} task of the loop in {c['tasks_within_1']} of "
               f"{c['minutes']} minutes ({c['tasks_within_1_share']:.0%}; needs {TASKS_SHARE:.0%})")
    click.echo(f"Breach minutes: predicted {c['breach_minutes_predicted']}, measured {c['breach_minutes_actual']} "
               f"(needs within {BREACH_TOLERANCE_MINUTES})"
               + (f"; {c['breach_minutes_unjudged']} minutes had no requests to judge" if c["breach_minutes_unjudged"]
                  else ""))
    click.echo(f"Task-hours (simulated): predicted {c['task_hours_predicted']:.2f}, loop {c['task_hours_actual']:.2f}; "
               f"start delay measured {clock['measured_start_delay_s']:g} s over {clock['scale_outs_measured']} "
               "scale-outs")
    click.echo(f"Verdict: the simulation {c['verdict']} with the closed loop")
