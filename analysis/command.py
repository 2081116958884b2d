"""``scalefinder analyze RUN_DIR``: write findings.json and print the headline."""

from __future__ import annotations

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
