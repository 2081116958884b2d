"""Time to answer: how long `scalefinder demo` and each archetype's run take, and what adaptive holds buy.

Three parts, each optional:

- the demo: `scalefinder demo` timed end to end (run, analyze, report);
- archetype runs: the wall time of `scalefinder run` for each archetype, read from the accuracy
  benchmark's JSON-lines file (no second run);
- adaptive versus fixed: one profile run twice, as committed (steps end early once steady, the
  knee is refined by bisection) and with fixed holds (every step held `hold_s`, no refinement),
  then analyzed; prints both capacities, whether they agree within ±10%, and the time ratio.

Usage:

    python -m benchmarks.time_to_answer [--skip-demo] [--accuracy docs/benchmarks/accuracy.jsonl]
                                        [--compare cpu] [--out docs/benchmarks/time_to_answer.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.experiments import (REPO, load_average, machine, read_profile, run_and_analyze, utc_now,
                                    write_profile)

AGREEMENT = 0.10


def time_demo(work: Path) -> dict[str, Any]:
    run_dir = work / "demo"
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "scalefinder.cli", "demo", "--out", str(run_dir), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    wall_s = time.perf_counter() - started
    findings_path = run_dir / "findings.json"
    findings = json.loads(findings_path.read_text()) if findings_path.is_file() else {}
    record = {"wall_s": round(wall_s, 1), "exit_code": done.returncode, "headline": findings.get("headline"),
              "capacity_per_task_rps": (findings.get("capacity") or {}).get("per_task_rps"),
              "steps": len(findings.get("steps") or []), "load_average_before": load_before,
              "load_average_after": load_average()}
    print(f"demo: {wall_s:.0f} s end to end (exit {done.returncode}, load {load_before}): {record['headline']}",
          flush=True)
    return record


def archetype_times(accuracy: Path) -> list[dict[str, Any]]:
    if not accuracy.is_file():
        print(f"no {accuracy}: run benchmarks.accuracy first for the archetype times")
        return []
    records = [json.loads(line) for line in accuracy.read_text().splitlines() if line.strip()]
    runs = [record for record in records if record.get("kind") == "accuracy_run"]
    rows = [{"archetype": run["archetype"], "setting": run["setting"], "repeat": run["repeat"],
             "run_wall_s": run["run_wall_s"], "analyze_wall_s": run["analyze_wall_s"],
             "finished_utc": run["finished_utc"], "load_average_before": run["load_average_before"]}
            for run in runs]
    print(f"{'archetype run':<18} {'run s':>6} {'analyze s':>9} {'load':>5}")
    for row in rows:
        label = f"{row['archetype']}/s{row['setting']}/r{row['repeat']}"
        print(f"{label:<18} {row['run_wall_s']:>6.0f} {row['analyze_wall_s'] or 0:>9.1f} "
              f"{row['load_average_before'].split()[0]:>5}")
    return rows


def fixed_hold_profile(data: dict[str, Any]) -> dict[str, Any]:
    """The same experiment with every step held in full and no bisection of the knee."""
    fixed = json.loads(json.dumps(data))
    ramp = fixed["ramp"]
    ramp["min_hold_s"] = ramp["hold_s"]
    ramp["refine"] = False
    fixed["name"] = f"{data.get('name', 'profile')}-fixed"
    return fixed


def compare_holds(name: str, work: Path) -> dict[str, Any]:
    data = read_profile(name)
    result: dict[str, Any] = {"profile": name}
    for mode, profile in (("adaptive", data), ("fixed", fixed_hold_profile(data))):
        path = write_profile(profile, work / f"{name}-{mode}.toml")
        load_before = load_average()
        outcome = run_and_analyze(path, work / f"{name}-{mode}")
        findings = outcome.findings() or {}
        steps = findings.get("steps") or []
        result[mode] = {"run_wall_s": round(outcome.run_wall_s, 1), "run_exit_code": outcome.run_exit_code,
                        "error": outcome.error_line,
                        "capacity_per_task_rps": (findings.get("capacity") or {}).get("per_task_rps"),
                        "metric": (findings.get("recommendation") or {}).get("metric"),
                        "verdict": findings.get("verdict"), "steps": len(steps),
                        "held_s": round(sum(s["end_unix_s"] - s["start_unix_s"] for s in steps), 1),
                        "truth_per_task_rps": ((outcome.manifest().get("target") or {}).get("ground_truth") or {})
                        .get("capacity_rps_per_task"),
                        "load_average_before": load_before}
        row = result[mode]
        print(f"{name} {mode:<8}: {row['run_wall_s']:>5.0f} s, {row['steps']} steps held {row['held_s']:.0f} s, "
              f"capacity {row['capacity_per_task_rps']} req/s per task (truth {row['truth_per_task_rps']}), "
              f"{row['metric'] or row['verdict']} (load {load_before})", flush=True)
    adaptive, fixed = result["adaptive"]["capacity_per_task_rps"], result["fixed"]["capacity_per_task_rps"]
    if adaptive and fixed:
        result["capacity_ratio"] = round(adaptive / fixed, 3)
        result["agree_within_10pct"] = abs(adaptive / fixed - 1) <= AGREEMENT
        result["time_ratio"] = round(result["adaptive"]["run_wall_s"] / result["fixed"]["run_wall_s"], 3)
        print(f"{name}: adaptive capacity / fixed = {result['capacity_ratio']:.2f} "
              f"({'within' if result['agree_within_10pct'] else 'NOT within'} ±10%) "
              f"in {result['time_ratio'] * 100:.0f}% of the time")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--accuracy", type=Path, default=REPO / "docs" / "benchmarks" / "accuracy.jsonl")
    parser.add_argument("--compare", default="cpu", help="profiles to run adaptive and fixed (comma separated; "
                                                          "empty: skip)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "time_to_answer.json")
    parser.add_argument("--keep-runs", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="scalefinder-time-"))
    result: dict[str, Any] = {"kind": "time_to_answer", "started_utc": utc_now(), "machine": machine(),
                              "load_average_start": load_average()}
    try:
        if not args.skip_demo:
            result["demo"] = time_demo(work)
        result["archetype_runs"] = archetype_times(args.accuracy)
        result["adaptive_vs_fixed"] = [compare_holds(name.strip(), work)
                                       for name in args.compare.split(",") if name.strip()]
    finally:
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    result["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    failed = [c for c in result["adaptive_vs_fixed"] if not c.get("agree_within_10pct")]
    demo_failed = result.get("demo", {}).get("exit_code", 0) != 0
    return 1 if failed or demo_failed else 0


if __name__ == "__main__":
    sys.exit(main())
