"""The ``report``, ``gate`` and ``runs`` commands: thin click wrappers over this package."""

from __future__ import annotations

from pathlib import Path

import click

from scalefinder.core.errors import InputError, ScalefinderError
from scalefinder.core.rundir import utc_now

from scalefinder.analysis.reporting.analyzed import load_baseline, open_analyzed_run
from scalefinder.analysis.reporting.gate import (
    FAIL,
    PASS,
    GateCriteria,
    GateResult,
    criteria_from_flags,
    criteria_from_profile,
    evaluate_gate,
    merge_criteria,
)
from scalefinder.analysis.reporting.html import render_report
from scalefinder.analysis.reporting.index import discover_runs, listing_lines, write_index
from scalefinder.analysis.reporting.junit import error_junit, gate_junit, write_junit
from scalefinder.analysis.reporting.summary import append_step_summary, md, write_summaries

REPORT_HTML = "report.html"
JUNIT_XML = "junit.xml"


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
def report_command(run_dir: Path) -> None:
    """Write RUN_DIR/report.html, summary.md and summary.json (analyzing the run first if needed)."""
    analyzed = open_analyzed_run(run_dir)
    report_path = analyzed.run.path / REPORT_HTML
    temporary = report_path.with_name(report_path.name + ".tmp")
    temporary.write_text(render_report(analyzed.run, analyzed.findings, analyzed.figures), encoding="utf-8")
    temporary.replace(report_path)
    md_path, json_path = write_summaries(analyzed.run.path, analyzed.figures, analyzed.findings)
    click.echo(analyzed.figures.headline or f"Verdict: {analyzed.figures.verdict}")
    click.echo(f"Report:  {report_path}")
    click.echo(f"Summary: {md_path}, {json_path}")


@click.command("gate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="A findings.json or run directory to compare with.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="JUnit XML to write [RUN_DIR/junit.xml].")
@click.option("--slo-rate-rps", type=float, help="Rate (req/s) at which the SLO must have been met.")
@click.option("--capacity-tolerance-pct", type=float, help="Allowed drop of capacity per task vs the baseline [10].")
@click.option("--target-tolerance-pct", type=float, help="Allowed move of the recommended target vs the baseline [15].")
@click.option("--metric-unchanged/--allow-metric-change", default=None,
              help="Whether the recommended metric must match the baseline's [must].")
@click.pass_context
def gate_command(ctx: click.Context, run_dir: Path, baseline: Path | None, junit_path: Path | None,
                 slo_rate_rps: float | None, capacity_tolerance_pct: float | None,
                 target_tolerance_pct: float | None, metric_unchanged: bool | None) -> None:
    """Check RUN_DIR against performance criteria from the profile's [gate] table or the flags.

    Exit 0 when every criterion passes, 1 when one fails, 2 for a usage or input error, 3 when
    the run directory is partial or the environment failed.
    """
    junit_path = junit_path or run_dir / JUNIT_XML
    # JUnit's schema wants a timestamp without a zone; this one is UTC.
    timestamp = utc_now().strftime("%Y-%m-%dT%H:%M:%S")
    try:
        flags = criteria_from_flags(slo_rate_rps=slo_rate_rps, capacity_tolerance_pct=capacity_tolerance_pct,
                                    target_tolerance_pct=target_tolerance_pct, metric_unchanged=metric_unchanged)
        result = _judge(run_dir, baseline, flags)
    except ScalefinderError as exc:
        _write_error_junit(junit_path, run_dir.name, str(exc), timestamp)
        raise
    write_junit(junit_path, gate_junit(result, timestamp))
    for line in gate_lines(result):
        click.echo(line)
    click.echo(f"JUnit:   {junit_path}")
    append_step_summary(gate_markdown(result))
    ctx.exit(0 if result.passed else 1)


def _judge(run_dir: Path, baseline_path: Path | None, flags: GateCriteria) -> GateResult:
    if baseline_path is None and (flags.capacity_tolerance_pct is not None or flags.target_tolerance_pct is not None):
        raise InputError("--capacity-tolerance-pct and --target-tolerance-pct need --baseline")
    current = open_analyzed_run(run_dir, require_complete=True)
    criteria = merge_criteria(criteria_from_profile(current.run.manifest), flags)
    baseline = load_baseline(baseline_path) if baseline_path is not None else None
    return evaluate_gate(current.findings, current.figures, criteria, baseline)


def _write_error_junit(path: Path, run_id: str, message: str, timestamp: str) -> None:
    # Only where a directory already exists: a mistyped RUN_DIR must not be created by the gate.
    if path.parent.is_dir():
        write_junit(path, error_junit(run_id, message, timestamp))


def gate_lines(result: GateResult) -> list[str]:
    lines = [f"{r.outcome.upper():7} {r.name}: {r.message}" for r in result.results]
    judged = [r for r in result.results if r.outcome in (PASS, FAIL)]
    if result.passed:
        lines.append(f"Gate passed: {len(judged)} criteria met.")
    else:
        lines.append(f"Gate failed: {len(result.failures)} of {len(judged)} criteria not met.")
    return lines


def gate_markdown(result: GateResult) -> str:
    rows = "\n".join(f"| {r.outcome} | `{r.name}` | {md(r.message)} |" for r in result.results)
    verdict = "passed" if result.passed else "failed"
    return f"### scalefinder gate {verdict}\n\n| | criterion | detail |\n|---|---|---|\n{rows}\n"


@click.command("runs")
@click.argument("reports_dir", required=False, default="reports", type=click.Path(path_type=Path))
def runs_command(reports_dir: Path) -> None:
    """List the runs under REPORTS_DIR [reports] and write REPORTS_DIR/index.html."""
    entries = discover_runs(reports_dir)
    for line in listing_lines(entries):
        click.echo(line)
    click.echo(f"Index:   {write_index(reports_dir, entries)}")
