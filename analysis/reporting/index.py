"""The runs under a reports folder: a listing with each run's key figures, and ``index.html``
with the runs in a table and capacity per task over time, so a team sees the trend across CI
runs. Nothing is analyzed here; a run without findings is listed as not analyzed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from scalefinder import __version__
from scalefinder.core.errors import InputError, ScalefinderError
from scalefinder.core.rundir import MANIFEST, RunDirectory

from scalefinder.analysis.reporting import charts
from scalefinder.analysis.reporting.analyzed import FINDINGS, read_findings
from scalefinder.analysis.reporting.figures import RunFigures, extract_figures, format_interval, format_number, with_unit
from scalefinder.analysis.reporting.html import format_date, page_assets, render_page
from scalefinder.analysis.reporting.summary import VERDICT_WORDS

INDEX_HTML = "index.html"
TREND_CHART_ID = "chart-trend"
MAX_DEPTH = 3  # reports/<run>, reports/<group>/<run>, reports/<group>/<branch>/<run>


@dataclass(frozen=True)
class RunEntry:
    path: Path
    figures: RunFigures | None  # None when the run has no readable findings
    run_id: str
    profile_name: str
    status: str
    started_utc: str
    note: str  # why figures are missing, or the gate's outcome
    has_report: bool


def discover_runs(reports_dir: str | Path) -> list[RunEntry]:
    """Every run directory under ``reports_dir``, newest first. An unreadable run is listed
    with the reason instead of stopping the listing."""
    root = Path(reports_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory (expected a folder of run directories)")
    entries = [_entry(path) for path in _run_paths(root)]
    return sorted(entries, key=lambda e: (e.started_utc, e.run_id), reverse=True)


def _run_paths(root: Path) -> list[Path]:
    found, frontier = [], [root]
    for _ in range(MAX_DEPTH):
        children = [c for parent in frontier for c in sorted(parent.iterdir()) if c.is_dir()]
        found += [c for c in children if (c / MANIFEST).is_file()]
        frontier = [c for c in children if not (c / MANIFEST).is_file()]
    return found


def _entry(path: Path) -> RunEntry:
    try:
        run = RunDirectory.open(path)
    except ScalefinderError as exc:
        return RunEntry(path, None, path.name, "", "unreadable", "", str(exc), False)
    manifest = run.manifest
    figures, note = None, ""
    if (path / FINDINGS).is_file():
        try:
            figures = extract_figures(read_findings(path / FINDINGS), manifest)
        except ScalefinderError as exc:
            note = f"findings unreadable: {exc}"
    else:
        note = "not analyzed"
    return RunEntry(
        path=path,
        figures=figures,
        run_id=manifest.run_id or path.name,
        profile_name=str(manifest.profile_name or ""),
        status=run.status,
        started_utc=str(manifest.started_utc or ""),
        note=note or gate_outcome(path),
        has_report=(path / "report.html").is_file(),
    )


def gate_outcome(run_path: Path) -> str:
    """The gate's last word on the run (passed, failed, error) from its junit.xml, if any."""
    junit = run_path / "junit.xml"
    if not junit.is_file():
        return ""
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return "gate result unreadable"
    if int(root.get("errors", "0")):
        return "gate error"
    return "gate failed" if int(root.get("failures", "0")) else "gate passed"


def listing_lines(entries: list[RunEntry]) -> list[str]:
    """Plain-text rows for the terminal."""
    header = ("date", "profile", "status", "verdict", "metric", "target", "capacity/task", "note")
    rows = [header] + [_cells(e) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _cells(entry: RunEntry) -> tuple[str, ...]:
    figures = entry.figures
    return (
        format_date(entry.started_utc) or "—",
        entry.profile_name or "—",
        entry.status,
        VERDICT_WORDS.get(figures.verdict, figures.verdict) if figures else "—",
        (figures.metric or "—") if figures else "—",
        with_unit(figures.target, figures.unit) if figures and figures.target is not None else "—",
        f"{format_number(figures.per_task_rps)} req/s" if figures and figures.per_task_rps is not None else "—",
        entry.note,
    )


@dataclass(frozen=True)
class IndexRow:
    """One run in the index's table, as text."""

    when: str
    run_id: str
    report_link: str | None  # relative and URL-quoted; None when the run has no report
    profile_name: str
    status: str
    verdict: str
    verdict_word: str
    metric: str
    target: str
    capacity: str
    capacity_interval: str
    note: str


def render_index(reports_dir: Path, entries: list[RunEntry]) -> str:
    trend = [
        {"profile": e.profile_name, "started_utc": _plotly_time(e.started_utc), "run_id": e.run_id,
         "per_task_rps": e.figures.per_task_rps,
         "low": e.figures.per_task_rps_interval[0] if e.figures.per_task_rps_interval else None,
         "high": e.figures.per_task_rps_interval[1] if e.figures.per_task_rps_interval else None}
        for e in entries if e.figures and e.figures.per_task_rps is not None and e.started_utc
    ]
    chart_specs = []
    if trend:
        chart_specs.append({"id": TREND_CHART_ID, "figure": charts.trend_figure(trend).to_plotly_json()})
    return render_page(
        "index.html.j2",
        title=f"scalefinder runs · {reports_dir.resolve().name}",
        folder_name=reports_dir.resolve().name,
        trend_chart=TREND_CHART_ID if trend else None,
        rows=[_row(reports_dir, entry) for entry in entries],
        version=__version__,
        # plotly's library only when there is a chart to draw: an empty index stays small
        **page_assets(chart_specs, with_plotly=bool(chart_specs)),
    )


def _plotly_time(iso: str) -> str:
    """plotly's date axis does not read UTC offsets, so times go in as naive UTC."""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _row(reports_dir: Path, entry: RunEntry) -> IndexRow:
    figures = entry.figures
    link = quote((entry.path.relative_to(reports_dir) / "report.html").as_posix()) if entry.has_report else None
    verdict = figures.verdict if figures else ""
    capacity, interval = "—", ""
    if figures and figures.per_task_rps is not None:
        capacity = f"{format_number(figures.per_task_rps)} req/s"
        if figures.per_task_rps_interval:
            interval = format_interval(figures.per_task_rps_interval)
    return IndexRow(
        when=format_date(entry.started_utc),
        run_id=entry.run_id,
        report_link=link,
        profile_name=entry.profile_name,
        status=entry.status,
        verdict=verdict,
        verdict_word=VERDICT_WORDS.get(verdict, verdict),
        metric=figures.metric if figures and figures.metric else "—",
        target=with_unit(figures.target, figures.unit) if figures and figures.target is not None else "—",
        capacity=capacity,
        capacity_interval=interval,
        note=entry.note,
    )


def write_index(reports_dir: Path, entries: list[RunEntry]) -> Path:
    path = reports_dir / INDEX_HTML
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(render_index(reports_dir, entries), encoding="utf-8")
    temporary.replace(path)
    return path
