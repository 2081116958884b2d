"""findings.json: writing it, and reading it back for ``report``, ``gate`` and ``runs``.

The format is documented in ``docs/findings.md``. Readers refuse a newer schema version with a
clear message, like the run directory does, and check that the keys every consumer relies on
are there, so a damaged file is one error line rather than a KeyError deep in a renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scalefinder.core.errors import RunDirectoryError
from scalefinder.core.models import Findings
from scalefinder.core.rundir import read_json, write_json_atomic

FINDINGS = "findings.json"


def findings_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/findings.json``."""
    path = Path(path)
    return path / FINDINGS if path.is_dir() else path


def write_findings(run_path: str | Path, findings: dict[str, Any]) -> Path:
    """Write ``findings`` into the run directory atomically; return the file's path."""
    check(findings, source="findings")
    target = Path(run_path) / FINDINGS
    write_json_atomic(target, findings)
    return target


def load_findings(path: str | Path) -> dict[str, Any]:
    """Read findings.json from a file or a run directory, refusing newer versions."""
    target = findings_path(path)
    if not target.is_file():
        hint = " (run `scalefinder analyze` on the run directory first)" if target.name == FINDINGS else ""
        raise RunDirectoryError(f"{target} does not exist{hint}")
    data = read_json(target, "findings")
    check(data, source=str(target))
    return data


def check(data: Any, *, source: str) -> None:
    """The checks every reader relies on, those of the findings model."""
    Findings.check(data, source=source)


def read_findings_model(path: str | Path) -> Findings:
    """findings.json from a file or a run directory as the typed model."""
    return Findings.from_dict(load_findings(path), source=str(findings_path(path)))
