"""Analyse run directories and write each one's findings (or its error) as a JSON line.

For checking that a change of the analysis leaves its answers alone: run it over the same run
directories with the code before and after (e.g. a ``git worktree`` of the older commit with its
own virtual environment), then compare the two files byte for byte. Usage:

    find RUNS_ROOT -name manifest.json -printf '%h\\n' | sort | python benchmarks/findings_dump.py OUT.jsonl

Nothing is written into the run directories.
"""

from __future__ import annotations

import json
import logging
import sys

from scalefinder.analysis.analyzer import analyze_run, options_from_manifest
from scalefinder.core.rundir import RunDirectory


def dump(path: str) -> dict:
    try:
        run = RunDirectory.open(path)
        return json.loads(json.dumps(analyze_run(run, options_from_manifest(run.manifest)), default=str))
    except Exception as exc:  # a damaged directory's error is part of what must not change
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    logging.disable(logging.CRITICAL)
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        for line in sys.stdin:
            if line.strip():
                out.write(json.dumps({"path": line.strip(), "findings": dump(line.strip())}, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
