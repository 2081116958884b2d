"""The closed-loop validations of a run directory: ``validation-<curve>.json``.

``scalefinder validate`` (above both halves) writes one per demand curve next to the run it
validates: the simulator's prediction and the loop's measured minutes, with their comparison.
The report reads them back from here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PREFIX = "validation-"


def validation_path(run_dir: str | Path, curve: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", curve).strip("-") or "curve"
    return Path(run_dir) / f"{PREFIX}{slug}.json"


def load_validations(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every readable validation, by curve name, and a line for each file that could not be read."""
    found, problems = [], []
    for path in sorted(Path(run_dir).glob(f"{PREFIX}*.json")):
        try:
            validation = json.loads(path.read_text(encoding="utf-8"))
            validation["comparison"]["verdict"], validation["predicted"], validation["actual"]  # noqa: B018
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path.name} could not be read ({type(exc).__name__})")
            continue
        found.append(validation)
    return found, problems
