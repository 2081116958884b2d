"""Accuracy through the ECS path: the emulated ECS service, measured by CloudWatch a minute at a time.

For each archetype and each reading of Container Insights' service datapoint (``per_task``: one
datapoint per task a minute; ``total``: one service total a minute) it starts the ECS emulator
(``scalefinder.loadgen.emulator``), runs `scalefinder run` on an ECS profile made from
`profiles/<archetype>.toml` (the ECS controller scales the emulated service, the CloudWatch source
reads its metrics), analyzes it, and checks:

- **metric**: the recommendation equals the one the same run gives when analyzed with the local
  source's one-second samples the emulator published from (the local path), and is right for the
  archetype (``benchmarks.accuracy.judge``);
- **capacity**: per task within ±10% of the archetype's ground truth;
- **target**: within 5 points of the local path's target for the same run;
- **time**: the run's wall time beside what `scalefinder plan` predicted (expected, at most).

The ramp is the ECS design of profiles/ecs-emulated.toml: geometric (×1.35) from a quarter of the two
tasks' capacity, bisection to 10%, holds of 6 minutes after a minute of warm-up ending on minute
boundaries, no repeat to confirm a breach, 4 replay steps.
(The start rate comes from the ground truth, as a team's would from an estimate; the answer does
not: the SLO breach finds the capacity.)
Every duration is in CloudWatch minutes, so ``--minute-s 2`` runs the same experiment thirty times
faster (a check of the benchmark itself; the published figures are at 60 s). Usage:

    python -m benchmarks.ecs_accuracy [--archetypes cpu,memory,workers,queue] [--modes per_task,total]
                                      [--minute-s 60] [--out docs/benchmarks/ecs-accuracy.jsonl]

Each case is appended to the JSON-lines file as soon as it is known. Exit code 0 when every case
passed, 1 on any miss.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.accuracy import _capacity, judge
from benchmarks.experiments import (REPO, append_jsonl, load_average, machine, read_profile, run_and_analyze,
                                    scalefinder_command, utc_now, write_profile)
from scalefinder.core.rundir import METRIC_COLUMNS, write_json_atomic

ARCHETYPES = ("cpu", "memory", "workers", "queue")
MODES = ("per_task", "total")
CAPACITY_TOLERANCE = 0.10
TARGET_POINTS = 5.0
TASKS = 2


def compressed(profile: dict[str, Any], url: str, minute_s: int) -> dict[str, Any]:
    """A profile designed for 60 s CloudWatch minutes, aimed at ``url``, with every duration that
    follows the minute scaled to ``minute_s`` (holds, warm-up, settle, polling; not the SLO)."""
    data = copy.deepcopy(profile)
    scale = minute_s / 60.0
    data["target"]["url"] = url
    ramp = data["ramp"]
    for key in ("hold_s", "min_hold_s", "warmup_s"):
        ramp[key] = ramp[key] * scale
    ramp["max_duration_s"] = max(ramp["max_duration_s"] * scale, 600)
    # the emulated tasks start after half a minute, so the scaling waits follow the minute too
    ramp["scale_timeout_s"] = max(ramp.get("scale_timeout_s", 300) * scale, 30)
    ecs = data["capacity"]["ecs"]
    ecs["poll_s"] = min(ecs.get("poll_s", 15.0), 15 * scale)
    cloudwatch = data["sources"]["cloudwatch"]
    cloudwatch["period_s"] = minute_s
    cloudwatch["settle_s"] = cloudwatch.get("settle_s", 180) * scale
    if minute_s != 60:
        cloudwatch["minute_s"] = minute_s
    return data


def ecs_profile(archetype: str, url: str, minute_s: int) -> dict[str, Any]:
    """profiles/ecs-emulated.toml's design for the archetype of `profiles/<archetype>.toml`: its
    workload, SLO and analysis, rates from a quarter of the two tasks' capacity, durations in minutes."""
    local = read_profile(archetype)
    target = local["target"]
    capacity = _capacity(archetype, dict(target.get("params", {})), target) * TASKS
    profile = read_profile("ecs-emulated")
    profile["name"] = f"ecs-{archetype}"
    profile["description"] = f"The '{archetype}' archetype as an emulated ECS service (CloudWatch minute {minute_s} s)"
    for table in ("workload", "slo", "analysis"):
        profile[table] = local[table]
    # the archetype's own abort settings carry over (memory turns the error rule off)
    profile["ramp"].update({key: value for key, value in local["ramp"].items() if key.startswith("abort")})
    profile["ramp"].update(start_rps=round(capacity / 4, 1), max_rps=round(capacity * 2.6, 1))
    if archetype == "queue":
        profile["sources"]["cloudwatch"]["queue_name"] = "jobs"
    return compressed(profile, url, minute_s)


def cluster_spec(archetype: str):
    from scalefinder.loadgen.cluster import ClusterSpec

    target = read_profile(archetype)["target"]
    return ClusterSpec(archetype=archetype, command=None, params=dict(target.get("params", {})), tasks=TASKS,
                       cpu_units=target.get("cpu_units", 256), memory_mib=target.get("memory_mib", 256),
                       balancer=target.get("balancer", "least_outstanding"))


def predicted_wall_time(profile_path: Path) -> dict[str, float]:
    from scalefinder.loadgen.plan import plan_profile, wall_time
    from scalefinder.loadgen.profile import load_profile

    profile = load_profile(profile_path)
    predicted = wall_time(profile, plan_profile(profile))
    return {"expected_s": round(predicted.expected_s, 1), "at_most_s": round(predicted.worst_s, 1)}


def local_copy(run_dir: Path, samples: list[dict[str, Any]], destination: Path) -> Path:
    """The same run with the local source's one-second samples in place of CloudWatch's minutes."""
    shutil.copytree(run_dir, destination)
    (destination / "findings.json").unlink(missing_ok=True)
    pd.DataFrame(samples, columns=METRIC_COLUMNS).to_csv(destination / "metrics.csv", index=False)
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["sources"] = {"local": {"kind": "local", "interval_s": 1.0}}
    write_json_atomic(destination / "manifest.json", manifest)
    return destination


def run_case(archetype: str, mode: str, minute_s: int, work: Path) -> dict[str, Any]:
    from scalefinder.loadgen.emulator import EcsEmulator

    label = f"{archetype}-{mode}"
    run_dir = work / label
    load_before = load_average()
    with EcsEmulator(cluster_spec(archetype), mode=mode, minute_s=minute_s, keep_samples=True) as emulator:
        profile_path = write_profile(ecs_profile(archetype, emulator.url, minute_s), work / f"{label}.toml")
        predicted = predicted_wall_time(profile_path)
        if not emulator.wait_for_data(4 * minute_s + 30):
            raise SystemExit(f"{label}: the emulator published no metrics ({emulator.errors})")
        outcome = run_and_analyze(profile_path, run_dir, timeout_s=predicted["at_most_s"] * 1.5 + 600,
                                  env=emulator.environment())
        samples = list(emulator.samples or [])
        emulator_errors = list(emulator.errors)
        truth = emulator.ground_truth()
    # A URL target has no ground truth in its manifest; the emulator's cluster knows it.
    manifest, findings = outcome.manifest(), outcome.findings()
    if manifest:
        manifest = {**manifest, "target": {**(manifest.get("target") or {}), "ground_truth": truth}}
    result = judge(archetype, manifest, findings)
    local_findings = None
    if manifest:
        local_dir = local_copy(run_dir, samples, work / f"{label}-local")
        code, _, _ = scalefinder_command(["analyze", str(local_dir)], 600)
        if code == 0:
            local_findings = json.loads((local_dir / "findings.json").read_text())
    local = judge(archetype, manifest, local_findings)
    cloudwatch = ((manifest or {}).get("sources") or {}).get("cloudwatch") or {}
    same_metric = result["metric"] is not None and result["metric"] == local["metric"]
    target_points = (abs(result["target"] - local["target"])
                     if result["target"] is not None and local["target"] is not None else None)
    capacity_ratio = (result["capacity_rps"] / result["expected_capacity_rps"]
                      if result["capacity_rps"] and result["expected_capacity_rps"] else None)
    return {
        "archetype": archetype, "mode": mode, "minute_s": minute_s, "finished_utc": utc_now(),
        "load_average_before": load_before, "load_average_after": load_average(),
        "run_exit_code": outcome.run_exit_code, "analyze_exit_code": outcome.analyze_exit_code,
        "error": outcome.error_line, "status": manifest.get("status") if manifest else None,
        "run_wall_s": round(outcome.run_wall_s, 1), "predicted_expected_s": predicted["expected_s"],
        "predicted_at_most_s": predicted["at_most_s"],
        "service_datapoint": cloudwatch.get("service_datapoint"),
        "metric": result["metric"], "local_metric": local["metric"], "metric_right": result["metric_ok"],
        "same_metric": same_metric, "capacity_rps": result["capacity_rps"],
        "expected_capacity_rps": result["expected_capacity_rps"], "capacity_ratio": capacity_ratio,
        "capacity_ok": capacity_ratio is not None and abs(capacity_ratio - 1) <= CAPACITY_TOLERANCE,
        "target": result["target"], "local_target": local["target"], "target_points": target_points,
        "target_ok": target_points is not None and target_points <= TARGET_POINTS,
        "headline": result["headline"], "emulator_errors": emulator_errors, "run_dir": str(run_dir),
    }


def passed(record: dict[str, Any]) -> bool:
    return bool(record["metric_right"] and record["same_metric"] and record["capacity_ok"] and record["target_ok"])


def print_table(records: list[dict[str, Any]]) -> None:
    header = (f"{'archetype':<9} {'mode':<8} {'metric (local path)':<44} {'cap/truth':>9} {'target Δ':>8} "
              f"{'wall':>7} {'plan':>7} {'worst':>7}  ok")
    print(header)
    print("-" * len(header))
    for r in records:
        metric = f"{r['metric']} ({r['local_metric']})"
        ratio = f"{r['capacity_ratio']:.2f}" if r["capacity_ratio"] is not None else "-"
        points = f"{r['target_points']:.1f}" if r["target_points"] is not None else "-"
        print(f"{r['archetype']:<9} {r['mode']:<8} {metric:<44} {ratio:>9} {points:>8} "
              f"{r['run_wall_s'] / 60:>6.1f}m {r['predicted_expected_s'] / 60:>6.1f}m "
              f"{r['predicted_at_most_s'] / 60:>6.1f}m  {'yes' if passed(r) else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archetypes", default=",".join(ARCHETYPES))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--minute-s", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "ecs-accuracy.jsonl")
    parser.add_argument("--keep-runs", type=Path, default=None, help="Keep the run directories here.")
    args = parser.parse_args(argv)
    archetypes = [name for name in args.archetypes.split(",") if name]
    modes = [name for name in args.modes.split(",") if name]
    unknown = sorted(set(archetypes) - set(ARCHETYPES)) + sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    print(f"machine: {machine()}; load average {load_average()}", flush=True)
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="sf-ecs-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    records = []
    try:
        for archetype in archetypes:
            for mode in modes:
                record = run_case(archetype, mode, args.minute_s, work)
                append_jsonl(args.out, record)
                records.append(record)
                print(f"{archetype}/{mode}: {record['headline']} ({record['run_wall_s'] / 60:.1f} min, "
                      f"{'passed' if passed(record) else 'MISSED'})", flush=True)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(records)
    return 0 if all(passed(r) for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
