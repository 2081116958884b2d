"""How long `scalefinder simulate` takes on an analyzed run, end to end in a fresh process.

Times the command line (interpreter start and imports included, as a user waits for it) for
every built-in curve with both policies, and a 12-target sweep of each curve, and prints a table
with the summary each gave. Usage:

    python benchmarks/simulate_speed.py RUN_DIR       # e.g. the directory `scalefinder demo` wrote
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CURVES = ("step", "spike", "ramp", "daily")
CASES = [(curve, policy, None) for curve in CURVES for policy in ("target-tracking", "step")] + \
        [(curve, "target-tracking", "40:95:5") for curve in CURVES]


def time_case(run: Path, curve: str, policy: str, sweep: str | None) -> tuple[float, dict]:
    command = [sys.executable, "-m", "scalefinder.cli", "simulate", str(run), "--demand", curve, "--policy", policy,
               "--json"] + (["--sweep", sweep] if sweep else [])
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    print(f"{'curve':<6} {'policy':<16} {'sweep':<8} {'seconds':>7} {'minutes':>7} {'breach':>6} {'task-h':>7}  best")
    for curve, policy, sweep in CASES:
        seconds, out = time_case(args.run_dir, curve, policy, sweep)
        summary = out["summary"]
        best = out.get("best")
        best_text = "" if not sweep else (f"target {best['target']:g}" if best else "none within the budget")
        print(f"{curve:<6} {policy:<16} {sweep or '':<8} {seconds:>7.2f} {summary['minutes']:>7} "
              f"{summary['breach_minutes']:>6} {summary['task_hours']:>7.2f}  {best_text}", flush=True)


if __name__ == "__main__":
    main()
