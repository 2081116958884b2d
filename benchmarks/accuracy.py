"""Accuracy on every archetype of the embedded cluster: is the answer right, and the same each time?

For each archetype, parameter setting and repetition it runs `scalefinder run` and `scalefinder
analyze` on a variant of `profiles/<archetype>.toml`, and checks the findings against the ground
truth the cluster wrote into the manifest:

- metric: the recommended metric is the archetype's expected one (`requests_per_task` is also
  right for `workers`); for `shared` the verdict must be `no_task_level_metric`;
- capacity: within ±15% of the ground truth (per task; for `shared`, of the service);
- target: between 60% and 80% of the saturation level the analysis measured;
- stable: every repetition of a setting recommends the same metric.

Each run's result is appended to a JSON-lines file as soon as it is known. Usage:

    python -m benchmarks.accuracy [--archetypes cpu,memory] [--settings 1,2] [--repeats 3]
                                  [--out docs/benchmarks/accuracy.jsonl] [--keep-runs DIR]

Exit code 0 when every run passed, 1 on any miss.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.experiments import (REPO, append_jsonl, load_average, machine, read_profile, run_and_analyze,
                                    scalefinder_command, utc_now, write_profile)
from scalefinder.loadgen.cluster import archetypes

ARCHETYPES = ("cpu", "memory", "retaining", "workers", "waiting", "jvm", "queue", "shared", "prefork")

# Setting 1 is the example profile as committed; setting 2 moves the limiting parameter so the
# capacity changes, which a tool that had learnt one answer by heart would miss.
SECOND_SETTING: dict[str, dict[str, Any]] = {
    "cpu": {"cpu_ms": 15},
    "memory": {"mib_per_request": 24},
    "retaining": {"cpu_ms": 15, "retained_kib_per_request": 16},
    "workers": {"workers": 3},
    "waiting": {"pool_size": 4, "latency_ms": 250},
    "jvm": {"cpu_ms": 15},
    "queue": {"jobs_at_once": 3, "job_ms": 200},
    "shared": {"downstream_capacity": 3},
    "prefork": {"mib_per_request": 24},
}

# Other right answers besides the archetype's expected metric (method.md §7).
ALSO_RIGHT: dict[str, set[str]] = {"workers": {"requests_per_task"}}

CAPACITY_TOLERANCE = 0.15
TARGET_SHARE_RANGE = (0.60, 0.80)


@dataclass(frozen=True)
class Case:
    archetype: str
    setting: int
    repeat: int

    @property
    def label(self) -> str:
        return f"{self.archetype}/s{self.setting}/r{self.repeat}"


def setting_profile(archetype: str, setting: int) -> dict[str, Any]:
    """The committed profile, or its second setting with the ramp scaled to the new capacity."""
    data = read_profile(archetype)
    if setting == 1:
        return data
    variant = copy.deepcopy(data)
    target = variant["target"]
    old_params = dict(target.get("params", {}))
    new_params = {**old_params, **SECOND_SETTING[archetype]}
    target["params"] = new_params
    ratio = _capacity(archetype, new_params, target) / _capacity(archetype, old_params, target)
    ramp = variant["ramp"]
    for key in ("start_rps", "step_rps", "max_rps"):
        if key in ramp:
            ramp[key] = round(ramp[key] * ratio, 2)
    variant["name"] = f"{data.get('name', archetype)}-s{setting}"
    changed = ", ".join(f"{key} = {value}" for key, value in SECOND_SETTING[archetype].items())
    variant["description"] = f"{data.get('description', archetype)} (benchmark setting {setting}: {changed})"
    return variant


def _capacity(archetype: str, params: dict[str, Any], target: dict[str, Any]) -> float:
    sizing = archetypes.Sizing(target.get("cpu_units", 256), target.get("memory_mib", 256), 2)
    return archetypes.ground_truth(archetype, params, sizing)["capacity_rps_per_task"]


def current_truth(archetype: str, recorded: dict[str, Any]) -> dict[str, Any]:
    """The ground truth as the archetype states it now, for the parameters and sizing a run recorded.

    The same as the recorded truth unless a formula was corrected since the run; then an old run
    is judged against the corrected formula, and the recorded figure is kept beside it.
    """
    try:
        sizing = archetypes.Sizing(recorded["cpu_units"], recorded["memory_mib"], recorded["tasks"],
                                   recorded["idle_mib"])
        truth = archetypes.ground_truth(archetype, recorded["params"], sizing)
    except (KeyError, TypeError):
        return recorded  # too little recorded to recompute: judge against what was written
    if truth["capacity_rps_per_task"] != recorded.get("capacity_rps_per_task"):
        truth["recorded_capacity_rps_per_task"] = recorded.get("capacity_rps_per_task")
    return truth


def judge(archetype: str, manifest: dict[str, Any], findings: dict[str, Any] | None) -> dict[str, Any]:
    """The four checks of one run, each with what was expected and what came out."""
    truth = current_truth(archetype, (manifest.get("target") or {}).get("ground_truth") or {})
    if findings is None:
        return {"metric_ok": False, "capacity_ok": False, "target_ok": False, "truth": truth,
                "verdict": None, "metric": None, "capacity_rps": None, "expected_capacity_rps": None,
                "target": None, "saturation_value": None, "saturation_source": None, "target_share": None,
                "headline": None}
    recommendation = findings.get("recommendation") or {}
    capacity = findings.get("capacity") or {}
    shared = truth.get("expected_verdict") == "no_task_level_metric"
    if shared:
        metric_ok = findings["verdict"] == "no_task_level_metric"
        measured = capacity.get("service_rps")
        expected = truth.get("capacity_rps_service") or _service_capacity(truth)
    else:
        right = {truth.get("expected_metric")} | ALSO_RIGHT.get(archetype, set())
        metric_ok = findings["verdict"] == "recommended" and recommendation.get("metric") in right
        measured = capacity.get("per_task_rps")
        expected = truth.get("capacity_rps_per_task")
    capacity_ok = bool(measured and expected) and abs(measured / expected - 1) <= CAPACITY_TOLERANCE
    target = recommendation.get("target")
    saturation, saturation_source = saturation_level(findings)
    share = target / saturation if target is not None and saturation else None
    low, high = TARGET_SHARE_RANGE
    target_ok = True if shared else share is not None and low <= share <= high
    return {"metric_ok": metric_ok, "capacity_ok": capacity_ok, "target_ok": target_ok,
            "verdict": findings["verdict"], "metric": recommendation.get("metric"),
            "capacity_rps": measured, "expected_capacity_rps": expected,
            "target": target, "saturation_value": saturation, "saturation_source": saturation_source,
            "target_share": share,
            "pattern": (findings.get("pattern") or {}).get("name"), "headline": findings.get("headline"),
            "truth": {key: truth.get(key) for key in ("bottleneck", "expected_metric", "capacity_rps_per_task",
                                                       "capacity_rps_service", "params", "idle_mib",
                                                       "capacity_formula", "recorded_capacity_rps_per_task")}}


def _service_capacity(truth: dict[str, Any]) -> float | None:
    per_task, tasks = truth.get("capacity_rps_per_task"), truth.get("tasks")
    return per_task * tasks if per_task and tasks else None


def saturation_level(findings: dict[str, Any]) -> tuple[float | None, str | None]:
    """The recommended metric's level at saturation, as the analysis measured it.

    A metric with a plateau or a crash limit (CPU, memory) has ``saturation_value``. A metric
    that keeps growing past the knee (requests queue up inside the task, so concurrency and
    backlog have no plateau) has none; its level at saturation is then its fitted line at the
    measured capacity, the rate where the SLO broke.
    """
    recommendation = findings.get("recommendation") or {}
    if recommendation.get("saturation_value"):
        return recommendation["saturation_value"], "saturation_value"
    metric = next((m for m in findings.get("metrics") or [] if m.get("name") == recommendation.get("metric")), {})
    fit = metric.get("fit") or {}
    capacity = (findings.get("capacity") or {}).get("per_task_rps")
    if capacity and fit.get("slope_per_task_rps") is not None and fit.get("baseline") is not None:
        return fit["baseline"] + fit["slope_per_task_rps"] * capacity, "fitted line at capacity"
    if recommendation.get("value_at_capacity"):
        return recommendation["value_at_capacity"], "value_at_capacity"
    return None, None


def run_case(case: Case, work: Path) -> dict[str, Any]:
    run_dir = work / case.label.replace("/", "-")
    profile = write_profile(setting_profile(case.archetype, case.setting), run_dir.with_suffix(".toml"))
    load_before = load_average()
    outcome = run_and_analyze(profile, run_dir)
    result = judge(case.archetype, outcome.manifest(), outcome.findings())
    phases = outcome.manifest().get("phases") or []
    return {"archetype": case.archetype, "setting": case.setting, "repeat": case.repeat,
            "finished_utc": utc_now(), "load_average_before": load_before, "load_average_after": load_average(),
            "run_exit_code": outcome.run_exit_code, "analyze_exit_code": outcome.analyze_exit_code,
            "error": outcome.error_line, "run_wall_s": round(outcome.run_wall_s, 1),
            "analyze_wall_s": outcome.analyze_wall_s and round(outcome.analyze_wall_s, 1),
            "status": outcome.manifest().get("status"), "phases": [phase.get("name") for phase in phases],
            "params": (outcome.manifest().get("target") or {}).get("params"),
            "run_dir": str(run_dir), **result}


def plan_settings(names: list[str], settings: list[int]) -> int:
    """Check that every setting's profile is valid, and show its ground truth and longest duration."""
    failures = 0
    with tempfile.TemporaryDirectory(prefix="scalefinder-accuracy-plan-") as folder:
        for name in names:
            for setting in settings:
                data = setting_profile(name, setting)
                path = write_profile(data, Path(folder) / f"{name}-s{setting}.toml")
                code, _, error = scalefinder_command(["plan", str(path)], timeout_s=60)
                truth = _capacity(name, data["target"].get("params", {}), data["target"])
                print(f"{name}/s{setting}: params {data['target'].get('params')}, truth {truth:g} req/s per task, "
                      f"ramp {data['ramp']['start_rps']:g}..{data['ramp']['max_rps']:g} req/s: "
                      f"{'plan ok' if code == 0 else 'plan FAILED: ' + str(error)}")
                failures += code != 0
    return 1 if failures else 0


def table_from(path: Path, markdown: bool = False) -> int:
    """The table and verdict of a JSON-lines file written earlier, judged again where the run is kept."""
    if not path.is_file():
        raise SystemExit(f"no file {path}")
    records = []
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("kind") != "accuracy_run":
            continue
        run_dir = Path(record["run_dir"])
        if (run_dir / "manifest.json").is_file():
            findings = run_dir / "findings.json"
            record.update(judge(record["archetype"], json.loads((run_dir / "manifest.json").read_text()),
                                json.loads(findings.read_text()) if findings.is_file() else None))
        records.append(record)
    if not records:
        print(f"no accuracy runs in {path}")
        return 1
    (print_markdown if markdown else print_table)(records)
    stable = stability(records)
    return 0 if all(passed(r, stable[(r["archetype"], r["setting"])]) for r in records) else 1


def stability(records: list[dict[str, Any]]) -> dict[tuple[str, int], bool]:
    """Per (archetype, setting): did every repetition give the same verdict and metric?"""
    answers: dict[tuple[str, int], set] = {}
    for record in records:
        answers.setdefault((record["archetype"], record["setting"]), set()).add((record["verdict"], record["metric"]))
    return {key: len(values) == 1 for key, values in answers.items()}


def passed(record: dict[str, Any], stable: bool) -> bool:
    return record["metric_ok"] and record["capacity_ok"] and record["target_ok"] and stable


def print_table(records: list[dict[str, Any]]) -> None:
    stable = stability(records)
    print(f"{'run':<16} {'answer':<24} {'capacity':>9} {'truth':>7} {'err':>6} {'target':>7} "
          f"{'/sat':>5} {'stable':>6} {'run s':>6} {'load':>5}  result")
    for record in _in_table_order(records):
        key = (record["archetype"], record["setting"])
        answer = record["metric"] or record["verdict"] or "(no findings)"
        capacity, truth = record["capacity_rps"], record["expected_capacity_rps"]
        error = _signed_percent((capacity / truth - 1) * 100, minus="-") if capacity and truth else "-"
        share = f"{record['target_share'] * 100:.0f}%" if record["target_share"] is not None else "-"
        target = f"{record['target']:.1f}" if record["target"] is not None else "-"
        misses = _misses(record, stable)
        label = f"{record['archetype']}/s{record['setting']}/r{record['repeat']}"
        print(f"{label:<16} {answer:<24} {_number(capacity):>9} {_number(truth):>7} {error:>6} {target:>7} "
              f"{share:>5} {'yes' if stable[key] else 'NO':>6} {record['run_wall_s']:>6.0f} "
              f"{record['load_average_before'].split()[0]:>5}  {'ok' if not misses else 'MISS ' + ','.join(misses)}")


def print_markdown(records: list[dict[str, Any]]) -> None:
    """The same table in Markdown, for the benchmark results page."""
    stable = stability(records)
    print("| run | answer | capacity per task (truth) | error | target | target / saturation | run s | load | result |")
    print("|---|---|---|---|---|---|---|---|---|")
    for record in _in_table_order(records):
        capacity, truth = record["capacity_rps"], record["expected_capacity_rps"]
        error = _signed_percent((capacity / truth - 1) * 100) if capacity and truth else "–"
        share = f"{record['target_share'] * 100:.0f}%" if record["target_share"] is not None else "–"
        target = f"{record['target']:.1f}" if record["target"] is not None else "–"
        misses = _misses(record, stable)
        answer = f"`{record['metric'] or record['verdict'] or 'no findings'}`"
        print(f"| `{record['archetype']}` s{record['setting']} #{record['repeat']} | {answer} | "
              f"{_number(capacity)} ({_number(truth)}) | {error} | {target} | {share} | "
              f"{record['run_wall_s']:.0f} | {record['load_average_before'].split()[0]} | "
              f"{'ok' if not misses else '**miss** (' + ', '.join(misses) + ')'} |")


def _in_table_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {name: index for index, name in enumerate(ARCHETYPES)}
    return sorted(records, key=lambda r: (order.get(r["archetype"], 99), r["setting"], r["repeat"]))


def _misses(record: dict[str, Any], stable: dict[tuple[str, int], bool]) -> list[str]:
    checks = (("metric", record["metric_ok"]), ("capacity", record["capacity_ok"]), ("target", record["target_ok"]),
              ("stable", stable[(record["archetype"], record["setting"])]))
    return [name for name, ok in checks if not ok]


def _signed_percent(value: float, minus: str = "−") -> str:
    return "0%" if round(value) == 0 else f"{value:+.0f}%".replace("-", minus)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archetypes", default=",".join(ARCHETYPES))
    parser.add_argument("--settings", default="1,2", help="1 (the committed profile), 2 (other parameters)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "accuracy.jsonl",
                        help="JSON-lines file the results are appended to")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--table-from", type=Path, default=None,
                        help="print the table of an earlier JSON-lines file instead of running; runs whose "
                             "directories were kept are judged again from their files")
    parser.add_argument("--markdown", action="store_true", help="with --table-from: print the table as Markdown")
    parser.add_argument("--plan-only", action="store_true",
                        help="write each setting's profile and check it with `scalefinder plan`; send no load")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.archetypes.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ARCHETYPES))
    settings = [int(value) for value in args.settings.split(",")]
    if unknown or not set(settings) <= {1, 2} or args.repeats < 1:
        parser.error(f"archetypes are {', '.join(ARCHETYPES)}; settings 1 and/or 2; repeats at least 1")
    if args.plan_only:
        return plan_settings(names, settings)
    if args.table_from is not None:
        return table_from(args.table_from, markdown=args.markdown)
    # Repetition-major order: every archetype and setting once before any second repetition, so
    # a matrix cut short still covers them all, and a slow patch of the host is spread across
    # archetypes instead of falling on all repetitions of one.
    cases = [Case(name, setting, repeat) for repeat in range(1, args.repeats + 1) for name in names
             for setting in settings]
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="scalefinder-accuracy-"))
    append_jsonl(args.out, {"kind": "benchmark_start", "started_utc": utc_now(), "machine": machine(),
                            "load_average": load_average(), "cases": [case.label for case in cases]})
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    try:
        for number, case in enumerate(cases, 1):
            print(f"[{number}/{len(cases)}] {case.label} (load {load_average()}) ...", flush=True)
            record = run_case(case, work)
            append_jsonl(args.out, {"kind": "accuracy_run", **record})
            records.append(record)
            if args.keep_runs is None:
                shutil.rmtree(work / case.label.replace("/", "-"), ignore_errors=True)
    finally:
        elapsed = time.perf_counter() - started
        if records:
            print_table(records)
        print(f"{len(records)} of {len(cases)} runs in {elapsed / 60:.1f} min (load average now {load_average()})")
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    stable = stability(records)
    misses = [record for record in records if not passed(record, stable[(record["archetype"], record["setting"])])]
    return 1 if misses or len(records) < len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
