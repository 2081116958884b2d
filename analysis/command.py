"""``scalefinder analyze RUN_DIR``: write findings.json and print the headline; ``scalefinder policy
RUN_DIR``: print one rendering of the recommended policy."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scalefinder.analysis.analyzer import analyze_run, options_from_manifest
from scalefinder.analysis.findings import write_findings
from scalefinder.core.models import HEADROOM_RANGE, AnalysisOptions
from scalefinder.core.rundir import RunDirectory



def analyze(run_path: str | Path, *, headroom: float | None = None, peak_rps: float | None = None,
            availability_zones: int | None = None) -> dict:
    """Analyse a run directory, write its findings.json and return the findings."""
    run = RunDirectory.open(run_path)
    options = options_from_manifest(run.manifest, headroom=headroom, peak_rps=peak_rps,
                                    availability_zones=availability_zones)
    findings = analyze_run(run, options)
    write_findings(run.path, findings)
    return findings


DEFAULTS = AnalysisOptions()  # the help shows the model's defaults, never a copy of them


@click.command("analyze")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--headroom", type=float, default=None,
              help=f"Share of capacity to run at, {HEADROOM_RANGE[0]:g}-{HEADROOM_RANGE[1]:g} "
                   f"(default: the profile's, else {DEFAULTS.headroom:g}).")
@click.option("--peak-rps", type=float, default=None, help="Peak demand to size the service for (req/s).")
@click.option("--azs", "availability_zones", type=int, default=None,
              help=f"Availability zones the service runs in (default: the profile's, else "
                   f"{DEFAULTS.availability_zones}).")
def analyze_command(run_dir: Path, headroom: float | None, peak_rps: float | None,
                    availability_zones: int | None) -> None:
    """Analyze RUN_DIR and write RUN_DIR/findings.json."""
    findings = analyze(run_dir, headroom=headroom, peak_rps=peak_rps, availability_zones=availability_zones)
    click.echo(findings["headline"])
    tasks = (findings.get("capacity") or {}).get("tasks_for_peak")
    if tasks:
        click.echo(f"Tasks for a peak of {tasks['peak_rps']:g} req/s: {tasks['tasks']} ({tasks['formula']}).")
    for reason in findings["inconclusive"]["reasons"]:
        click.echo(f"  reason: {reason}")
    for step in findings["inconclusive"]["next_steps"]:
        click.echo(f"  next: {step}")
    click.echo(f"Findings written to {Path(run_dir) / 'findings.json'}")


# -- scalefinder policy ---------------------------------------------------------------------------
# --format -> (the renderings' kind, the key of one rendering); the AWS formats take --kind
POLICY_FORMATS = {
    "aas-json": "api_request",
    "aws-cli": "aws_cli",
    "cloudformation": "cloudformation",
    "terraform": "terraform",
    "hpa": "hpa",
    "keda": "keda",
    "prometheus-adapter": "prometheus_adapter",
}
KUBERNETES_FORMATS = ("hpa", "keda", "prometheus-adapter")
POLICY_KINDS = {"target-tracking": "target_tracking", "step": "step_scaling"}


def policy_text(run_path: str | Path, output_format: str, kind: str = "target-tracking") -> str:
    """One rendering of the recommended policy of an analyzed run, rendered again from the
    findings' metric, target and steps with the names the run's manifest holds (so findings
    written before a rendering existed still give it)."""
    from scalefinder.analysis import deployment, policy
    from scalefinder.analysis.findings import load_findings
    from scalefinder.core.errors import InputError

    run = RunDirectory.open(run_path)
    findings = load_findings(run.path)
    recommendation = findings.get("recommendation")
    if not recommendation:
        reasons = "; ".join(findings.get("inconclusive", {}).get("reasons") or []) or findings.get("headline", "")
        raise InputError(f"{run.path} has no recommended policy (verdict {findings.get('verdict')}): {reasons}")
    metric, target = recommendation["metric"], float(recommendation["target"])
    facts = deployment.from_manifest(run.manifest)
    renderings = policy.render_all(metric, target, recommendation["step_scaling"],
                                   policy.aws_metric(metric, facts), facts)
    key = POLICY_FORMATS[output_format]
    if output_format in KUBERNETES_FORMATS:
        text = renderings["kubernetes"][key]
        if text is None:
            raise InputError(f"the {metric} policy needs no {output_format} rule: the {output_format} rendering "
                             "serves per-pod metrics that Kubernetes does not measure itself")
        return text
    chosen = renderings[POLICY_KINDS[kind]]
    if key == "api_request" and kind == "step":
        return json.dumps({"PutScalingPolicy": [chosen["api_request"], chosen["scale_in_api_request"]],
                           "PutMetricAlarm": chosen["alarms"]}, indent=2) + "\n"
    value = chosen[key]
    return value if isinstance(value, str) and value.endswith("\n") else (
        value + "\n" if isinstance(value, str) else json.dumps(value, indent=2) + "\n")


@click.command("policy")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "output_format", type=click.Choice(list(POLICY_FORMATS)), default="aas-json",
              show_default=True, help="Which rendering to print.")
@click.option("--kind", type=click.Choice(list(POLICY_KINDS)), default="target-tracking", show_default=True,
              help="Target tracking or step scaling, for the AWS formats.")
def policy_command(run_dir: Path, output_format: str, kind: str) -> None:
    """Print the recommended policy of an analyzed RUN_DIR in one format.

    The names the run knows (ECS cluster and service, SQS queue, Kubernetes namespace and
    workload from the profile's [kubernetes] table) are filled in; the rest stay placeholders in
    capitals. Kubernetes formats: an autoscaling/v2 HorizontalPodAutoscaler (hpa), a KEDA
    ScaledObject (keda), and the prometheus-adapter rule a per-pod metric needs.
    """
    click.echo(policy_text(run_dir, output_format, kind), nl=False)
