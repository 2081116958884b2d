"""Fixtures shared across test files.

The demo (``scalefinder demo``: run, analyze, report of ``profiles/demo.toml``) is the longest
thing the suite does, so it runs once per session and several files check what it produced: the
run directory (test_run_command.py), the analysis of a real CPU-bound run (test_analysis_real.py)
and the command's own output (test_demo.py).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoRun:
    path: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run([sys.executable, "-m", "scalefinder.cli", "demo", "--out", str(out), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return DemoRun(out, done.returncode, done.stdout, done.stderr)
