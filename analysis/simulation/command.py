"""``scalefinder simulate RUN_DIR``: the recommended policy against a demand curve, minute by minute."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scalefinder.analysis.simulation import demand as demands
from scalefinder.analysis.simulation.model import ServiceModel, load_model
from scalefinder.analysis.simulation.compare import policy_for
from scalefinder.analysis.simulation.simulator import (Bounds, default_bounds, parse_sweep, settled_tasks, simulate,
                                                       sweep)
from scalefinder.core.errors import InputError

POLICIES = ("target-tracking", "step")


def resolve_demand(spec: str, model: ServiceModel, base_rps: float | None, bounds: Bounds) -> demands.Demand:
    """A built-in curve's base is by default the rate at which the fewest tasks sit at the target."""
    if spec in demands.BUILT_IN:
        base = base_rps if base_rps is not None else bounds.min_tasks * model.target_rate_per_task_rps
        return demands.built_in(spec, base)
    if base_rps is not None:
        raise InputError("--base-rps scales a built-in curve; a CSV gives its own requests")
    return demands.load_csv(spec)


@click.command("simulate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--demand", "demand_spec", default="spike", show_default=True,
              help=f"A built-in curve ({', '.join(demands.BUILT_IN)}) or a CSV of requests per minute "
                   "(docs/simulate.md).")
@click.option("--base-rps", type=float, default=None,
              help="Base rate of a built-in curve (default: the rate at which --min-tasks tasks sit at the target).")
@click.option("--policy", "policy_kind", type=click.Choice(POLICIES), default="target-tracking", show_default=True)
@click.option("--target", type=float, default=None, help="Target in the metric's unit (default: the analyzer's).")
@click.option("--sweep", "sweep_spec", default=None, metavar="LOW:HIGH:STEP",
              help="Simulate every target in the range, e.g. 50:85:5.")
@click.option("--start-delay-s", type=float, default=None,
              help="Seconds before a new task serves (default: the run's measured scale-up).")
@click.option("--min-tasks", type=int, default=None,
              help="Default: the run's initial tasks, and at least one per Availability Zone.")
@click.option("--max-tasks", type=int, default=None, help="Default: ten times --min-tasks.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def simulate_command(run_dir: Path, demand_spec: str, base_rps: float | None, policy_kind: str, target: float | None,
                     sweep_spec: str | None, start_delay_s: float | None, min_tasks: int | None,
                     max_tasks: int | None, as_json: bool) -> None:
    """Simulate RUN_DIR's recommended policy against a demand curve: tasks, metric, p95 and SLO
    breaches minute by minute, with minutes in breach and task-hours."""
    if target is not None and sweep_spec is not None:
        raise InputError("--target and --sweep exclude each other")
    if target is not None and not target > 0:
        raise InputError(f"--target must be above 0, got {target:g}")
    model = load_model(run_dir)
    bounds = default_bounds(model, min_tasks, max_tasks, start_delay_s)
    demand = resolve_demand(demand_spec, model, base_rps, bounds)
    policy = policy_for(model, policy_kind, target)
    result = simulate(model, demand, policy, bounds,
                      settled_tasks(model, demand, bounds, model.target if target is None else target))
    swept = (sweep(model, demand, parse_sweep(sweep_spec), bounds,
                   lambda value: policy_for(model, policy_kind, value)) if sweep_spec else None)
    if as_json:
        out = {"model": model.describe(), "demand": {"name": demand.name, "minutes": demand.minutes,
                                                     "description": demand.description},
               "policy": result.policy, "bounds": vars(bounds), "summary": result.summary(),
               "trajectory": [m.to_dict() for m in result.minutes]}
        if swept:
            out.update(swept)
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"Service: {model.metric_label} ({model.metric}); capacity {model.capacity_per_task_rps:g} req/s per "
               f"task; SLO p{model.slo_percentile:g} <= {model.slo_latency_ms:g} ms")
    click.echo(f"Demand: {demand.name}, {demand.description}")
    click.echo(f"Policy: {_policy_line(result.policy)}")
    click.echo(f"Tasks: {bounds.min_tasks}-{bounds.max_tasks}; a new task serves after {bounds.start_delay_s:g} s "
               f"({'--start-delay-s' if start_delay_s is not None else model.start_delay_source})")
    if swept is None:
        click.echo(f"{'minute':>6} {'demand':>9} {'tasks':>5} {'serving':>7} {'metric':>8} {'p95 ms':>8}  SLO")
        for m in result.minutes:
            click.echo(f"{m.minute:>6} {m.demand_rps:>9.2f} {m.tasks:>5} {m.serving:>7} {m.metric:>8.1f} "
                       f"{m.p95_ms:>8.0f}  {'BREACH' if m.breached else 'ok'}")
    summary = result.summary()
    first = summary["first_breach_minute"]
    over = summary["overprovisioning"]
    first_text = f" (first at minute {first})" if first is not None else ""
    ideal = summary["ideal_task_hours"]
    over_text = f" ({over * 100:+.0f}% against the ideal {ideal:.2f})" if over is not None else ""
    click.echo(f"Summary: {summary['breach_minutes']} of {summary['minutes']} minutes in breach{first_text}; "
               f"{summary['task_hours']:.2f} task-hours{over_text}; peak {summary['peak_tasks']} tasks")
    if swept:
        click.echo(f"{'target':>8} {'breach min':>10} {'task-hours':>10}")
        for row in swept["sweep"]:
            click.echo(f"{row['target']:>8g} {row['breach_minutes']:>10} {row['task_hours']:>10.2f}")
        best = swept["best"]
        if best is None:
            click.echo(f"No target keeps breaches within the error budget ({swept['allowed_breach_minutes']} minutes): "
                       "more tasks at the start (--min-tasks) or a faster start would be needed.")
        else:
            click.echo(f"Best: target {best['target']:g} ({best['breach_minutes']} breach minutes, within "
                       f"{swept['allowed_breach_minutes']}; {best['task_hours']:.2f} task-hours); the analyzer's "
                       f"target is {model.target:g}")


def _policy_line(described: dict) -> str:
    return (f"{described['policy']}: out when {described['scale_out']}, in when {described['scale_in']}; cooldowns "
            f"{described['scale_out_cooldown_s']:g} s out, {described['scale_in_cooldown_s']:g} s in")
