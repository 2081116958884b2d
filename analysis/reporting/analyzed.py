"""Opening a run directory together with its findings, analyzing it first when needed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from scalefinder.core.errors import InputError
from scalefinder.core.rundir import RunDirectory

from scalefinder.analysis.findings import load_findings
from scalefinder.analysis.reporting.figures import RunFigures, extract_figures

logger = logging.getLogger(__name__)

FINDINGS = "findings.json"


@dataclass(frozen=True)
class AnalyzedRun:
    run: RunDirectory
    findings: Mapping[str, Any]
    figures: RunFigures


def open_analyzed_run(path: str | Path, *, require_complete: bool = False) -> AnalyzedRun:
    """The run at ``path`` with its findings; a run without ``findings.json`` is analyzed now.

    With ``require_complete`` a partial run raises ``PartialRunError`` before anything is read.
    """
    run = RunDirectory.open(path)
    if require_complete:
        run.require_complete()
    if (run.path / FINDINGS).is_file():
        findings = read_findings(run.path / FINDINGS)
    else:
        findings = analyze_now(run)
    return AnalyzedRun(run=run, findings=findings, figures=extract_figures(findings, run.manifest))


def read_findings(path: Path) -> Mapping[str, Any]:
    return load_findings(path)


def analyze_now(run: RunDirectory) -> Mapping[str, Any]:
    # Imported here: the analyzer pulls in statsmodels, which listing runs does not need.
    from scalefinder.analysis.command import analyze

    logger.info("%s has no %s yet; analyzing it first", run.path, FINDINGS)
    return analyze(run.path)


def load_baseline(path: str | Path) -> RunFigures:
    """The key figures of a baseline given as a findings file or a run directory."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"baseline {path} does not exist (give a findings.json or a run directory)")
    if path.is_dir():
        return open_analyzed_run(path).figures
    return extract_figures(read_findings(path))
